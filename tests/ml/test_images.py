import csv
import io
import random
import time

import numpy as np
import pytest
from PIL import Image

from app.ml.images import ImageRejected, decode_rgb, dhash_distance, normalise_image

REJECTED = {"truncated.jpg", "empty.jpg", "not_an_image.jpg", "html_error_page.jpg",
            "one_pixel.jpg", "one_pixel.png", "extreme_aspect_2000x12.jpg",
            "huge_dims_100000x100000.png", "huge_dims_65000x65000.jpg",
            "huge_dims_10000x10000.png"}


def odd_files(data_dir):
    with open(data_dir / "odd" / "manifest.csv", newline="") as f:
        return [row["file"] for row in csv.DictReader(f)]


def test_every_odd_file_is_handled_per_manifest(data_dir):
    names = odd_files(data_dir)
    assert len(names) >= 25
    for name in names:
        data = (data_dir / "odd" / name).read_bytes()
        if name in REJECTED:
            with pytest.raises(ImageRejected) as info:
                normalise_image(data)
            assert str(info.value), name
            continue
        result = normalise_image(data)
        with Image.open(io.BytesIO(result.data)) as out:
            assert (out.format, out.mode) == ("JPEG", "RGB"), name
            assert out.size == (result.width, result.height)
        assert max(result.width, result.height) <= 1024
        assert len(result.phash) == 16 and len(result.content_hash) == 64


def test_reasons_are_readable(data_dir):
    odd = data_dir / "odd"
    cases = {
        "empty.jpg": "empty file",
        "not_an_image.jpg": "not an image",
        "truncated.jpg": "truncated or corrupt",
        "one_pixel.png": "image too small: 1x1",
        "huge_dims_10000x10000.png": "image too large",
        "huge_dims_100000x100000.png": "image too large",
    }
    for name, reason in cases.items():
        with pytest.raises(ImageRejected, match=reason):
            normalise_image((odd / name).read_bytes())


def test_huge_dimensions_are_rejected_before_decoding(data_dir):
    for name in ("huge_dims_100000x100000.png", "huge_dims_65000x65000.jpg",
                 "huge_dims_10000x10000.png"):
        data = (data_dir / "odd" / name).read_bytes()
        tick = time.perf_counter()
        with pytest.raises(ImageRejected, match="too large"):
            decode_rgb(data)
        assert time.perf_counter() - tick < 0.5


def test_exif_rotation_comes_out_upright(data_dir):
    result = normalise_image((data_dir / "odd" / "exif_rotate6.jpg").read_bytes())
    assert (result.width, result.height) == (320, 214)
    plain = normalise_image((data_dir / "odd" / "progressive.jpg").read_bytes())
    assert dhash_distance(result.phash, plain.phash) <= 6


def test_gray16_is_scaled_not_clipped_to_white(data_dir):
    image = decode_rgb((data_dir / "odd" / "gray16.png").read_bytes())
    pixels = np.asarray(image)
    assert image.mode == "RGB" and 60 < pixels.mean() < 200 and pixels.std() > 20


def test_transparency_is_flattened_onto_white(data_dir):
    image = decode_rgb((data_dir / "odd" / "alpha_rgba.png").read_bytes())
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_large_camera_jpeg_is_accepted_and_fast(data_dir):
    data = (data_dir / "odd" / "large_7487x4991.jpg").read_bytes()
    tick = time.perf_counter()
    result = normalise_image(data)
    assert time.perf_counter() - tick < 2.0
    assert (result.width, result.height) == (1024, 683)
    assert min(decode_rgb(data, draft_size=256).size) >= 256


def test_same_picture_hashes_the_same_and_near_copies_are_close(data_dir):
    odd = data_dir / "odd"
    a = normalise_image((odd / "real.webp").read_bytes())
    b = normalise_image((odd / "webp_named_jpg.jpg").read_bytes())
    assert a.content_hash == b.content_hash and a.format == "WEBP"
    jpeg = normalise_image((odd / "trailing_garbage.jpg").read_bytes())
    assert dhash_distance(a.phash, jpeg.phash) <= 6
    cat = normalise_image((data_dir / "ood" / "cat.jpg").read_bytes())
    assert dhash_distance(a.phash, cat.phash) > 12


def test_random_and_mangled_bytes_only_ever_raise_image_rejected(data_dir):
    rng = random.Random(0)
    seed = (data_dir / "bears" / "grizzly" / "0001.jpg").read_bytes()
    blobs = [rng.randbytes(rng.randint(1, 4000)) for _ in range(50)]
    for _ in range(50):
        mangled = bytearray(seed)
        for _ in range(rng.randint(1, 20)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        blobs.append(bytes(mangled[: rng.randint(10, len(mangled))]))
    for blob in blobs:
        try:
            normalise_image(blob)
            decode_rgb(blob)
        except ImageRejected:
            pass
