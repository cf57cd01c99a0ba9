"""The preprocessing that travels with the weights, shared by training evaluation and ONNX."""

from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image

RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    input_size: int = 224
    resize: int = 256
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"

    def __post_init__(self):
        if self.interpolation not in RESAMPLING:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if not 0 < self.input_size <= self.resize:
            raise ValueError("need 0 < input_size <= resize")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std positive")

    def to_dict(self) -> dict:
        """JSON-ready form for model.json."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        """Inverse of to_dict; ignores nothing, rejects unknown keys."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def preprocess(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Resize the short side to pre.resize, centre-crop pre.input_size, normalise: float32 CHW."""
    return to_chw(center_crop(image, pre), pre)


def center_crop(image: Image.Image, pre: Preprocessing) -> Image.Image:
    """The RGB pixels preprocess() normalises: short side to pre.resize, centre input_size crop.

    Only the cropped region is resampled (PIL's resize box), with the same filter taps as a
    full resize followed by a crop, so a 1x60000 strip costs no more than a square photo.
    """
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    new_w, new_h = _short_side_size(width, height, pre.resize)
    size = pre.input_size
    left, top = (new_w - size) // 2, (new_h - size) // 2
    sx, sy = new_w / width, new_h / height
    box = (left / sx, top / sy, (left + size) / sx, (top + size) / sy)
    return image.resize((size, size), RESAMPLING[pre.interpolation], box=box)


def preprocess_batch(images: list[Image.Image], pre: Preprocessing) -> np.ndarray:
    """preprocess() for several images: float32 NCHW."""
    return np.stack([preprocess(image, pre) for image in images])


def to_chw(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Scale an RGB image to [0, 1] and normalise with pre.mean/std: float32 CHW, no resize."""
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def resize_short_side(image: Image.Image, pre: Preprocessing) -> Image.Image:
    """Full-image resize of the short side to pre.resize, rounded exactly as preprocess()."""
    size = _short_side_size(image.width, image.height, pre.resize)
    return image.resize(size, RESAMPLING[pre.interpolation])


def probe_input(pre: Preprocessing) -> np.ndarray:
    """A deterministic 1x3xHxW float32 pattern in [-1, 1] to check exported models agree."""
    size = pre.input_size
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    channels = [np.sin(2 * np.pi * ((c + 1) * 3 * x + (c + 2) * 2 * y) + c) for c in range(3)]
    return np.stack(channels)[None].astype(np.float32)


def _short_side_size(width: int, height: int, short: int) -> tuple[int, int]:
    if width <= height:
        return short, max(1, round(height * short / width))
    return max(1, round(width * short / height)), short
