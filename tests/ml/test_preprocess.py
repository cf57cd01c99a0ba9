import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from app.ml.images import decode_rgb
from app.ml.preprocess import (
    Preprocessing,
    preprocess,
    preprocess_batch,
    probe_input,
    resize_short_side,
    to_chw,
)


def test_preprocess_shape_range_and_crop(data_dir):
    pre = Preprocessing()
    image = decode_rgb((data_dir / "bears" / "grizzly" / "0001.jpg").read_bytes())
    array = preprocess(image, pre)
    assert array.shape == (3, 224, 224) and array.dtype == np.float32
    assert -1.0 <= array.min() and array.max() <= 1.0
    full = resize_short_side(image, pre)
    left, top = (full.width - 224) // 2, (full.height - 224) // 2
    reference = to_chw(full.crop((left, top, left + 224, top + 224)), pre)
    assert np.abs(array - reference).max() <= 2.01 / 255  # at most one 8-bit level
    assert np.array_equal(preprocess(full, pre), reference)


def test_batch_and_odd_shapes():
    pre = Preprocessing()
    images = [Image.new("RGB", (2000, 12), "red"), Image.new("L", (40, 900), 128)]
    batch = preprocess_batch(images, pre)
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32


def test_preprocessing_round_trips_and_validates():
    pre = Preprocessing(input_size=240, resize=274)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="unknown"):
        Preprocessing.from_dict({"size": 3})
    with pytest.raises(ValueError):
        Preprocessing(interpolation="cubic-ish")


def test_probe_is_deterministic_and_bounded():
    probe = probe_input(Preprocessing())
    assert probe.shape == (1, 3, 224, 224) and probe.dtype == np.float32
    assert np.array_equal(probe, probe_input(Preprocessing()))
    assert probe.min() >= -1 and probe.max() <= 1 and probe.std() > 0.5


def test_serving_modules_never_import_torch():
    code = (
        "import sys, app.ml, app.ml.images, app.ml.preprocess, app.ml.predict; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
