import pytest
import torch

from app.ml.backbones import BACKBONES, create_model, imagenet_model, map_state_dict
from app.ml.images import decode_rgb
from app.ml.preprocess import preprocess

IMAGENET_CATS = range(281, 286)


def test_pretrained_lite0_sees_a_cat(data_dir):
    spec = BACKBONES["efficientnet_lite0"]
    model = imagenet_model("efficientnet_lite0")
    image = decode_rgb((data_dir / "ood" / "cat.jpg").read_bytes())
    batch = torch.from_numpy(preprocess(image, spec.preprocessing))[None]
    with torch.inference_mode():
        top = int(model(batch).argmax())
    assert top in IMAGENET_CATS


def test_create_model_has_a_fresh_head():
    model = create_model("efficientnet_lite0", num_classes=3, pretrained=False)
    assert model.get_classifier().out_features == 3
    assert model.num_features == BACKBONES["efficientnet_lite0"].feature_dim


def test_shape_mismatch_is_named():
    source = {"a.weight": torch.zeros(3, 4)}
    with pytest.raises(ValueError, match=r"a.weight \(3, 4\) -> b.weight \(4, 4\)"):
        map_state_dict(source, {"b.weight": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="tensors"):
        map_state_dict(source, {})


def test_unknown_backbone():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        create_model("resnet9000", num_classes=2)
