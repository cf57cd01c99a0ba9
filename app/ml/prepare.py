"""Everything a training's phases share, prepared once: inputs checked, seeds set, every image
decoded, the split made and the pretrained model built on its device."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from app.ml.backbones import create_model, get_spec
from app.ml.device import owned_cores, pick_device, seed_everything
from app.ml.images import decode_rgb
from app.ml.preprocess import Preprocessing, center_crop, resize_short_side
from app.ml.progress import Reporter
from app.ml.recipe import Recipe
from app.ml.split import Sample, split_samples


@dataclass
class Prepared:
    """The context every phase takes. Positions index the decoded images (`kept`), which map
    back to `samples` through kept[position]."""

    samples: list[Sample]
    labels: list[str]
    recipe: Recipe
    report: Reporter
    device: torch.device
    pre: Preprocessing
    model: nn.Module
    augment: Callable[[Image.Image], Image.Image]
    images: list[Image.Image | None]  # short side pre.resize, for augmentation (else None)
    crops: list[Image.Image]  # the eval crop, exactly what ONNX serving sees
    kept: list[int]
    skipped: list[str]
    train_pos: list[int]
    valid_pos: list[int]
    targets: torch.Tensor  # label index per position
    threads: int = 1  # the cores training may use
    body_onnx: Path | None = None  # the frozen body's cached graph (app.ml.body), if used
    history: list[dict] = field(default_factory=list)  # a row per epoch, for the curves
    speed: dict[str, float] = field(default_factory=dict)  # images per second per phase

    @property
    def n_views(self) -> int:
        """Views of each training image in the frozen phase: its eval crop, then augmentations."""
        return 1 + self.recipe.augment_views

    def keys(self, positions: list[int]) -> list[str]:
        return [self.samples[self.kept[p]].key for p in positions]

    def groups(self, positions: list[int]) -> list[str | None]:
        return [self.samples[self.kept[p]].group for p in positions]


def prepare(*, samples: list[Sample], labels: list[str], read_bytes: Callable[[str], bytes],
            recipe: Recipe, report: Reporter, device: str | None = None,
            threads: int | None = None, body_cache: Path | None = None) -> Prepared:
    """Check inputs, set threads and seeds, decode every image once, split, build the model.
    With body_cache, a CPU training whose body stays frozen extracts its features with the
    backbone's cached ONNX graph (app.ml.body)."""
    if len(labels) < 2:
        raise ValueError("need at least two labels")
    if any(not 0 <= s.label < len(labels) for s in samples):
        raise ValueError("a sample's label is out of range")
    threads = threads or owned_cores()
    torch.set_num_threads(threads)
    seed_everything(recipe.seed)
    target = pick_device(device)
    pre = preprocessing_for(recipe)
    body = None
    if (body_cache is not None and target.type == "cpu" and not recipe.epochs
            and pre == get_spec(recipe.backbone).preprocessing):
        from app.ml.body import body_onnx  # onnx and its exporter: only on this path

        body = body_onnx(recipe.backbone, body_cache)
    keep_images = bool(recipe.epochs or recipe.augment_views)
    images, crops, kept, skipped = _decode_all(samples, read_bytes, pre, report,
                                               threads=threads, keep_images=keep_images)
    train_pos, valid_pos = split_samples([samples[i] for i in kept], valid_pct=recipe.valid_pct,
                                         seed=recipe.seed)
    if not train_pos or not valid_pos:
        raise ValueError("too few images to split into training and validation sets")
    model = create_model(recipe.backbone, num_classes=len(labels), pretrained=True)
    model = model.to(target, memory_format=torch.channels_last).eval()
    return Prepared(samples=samples, labels=list(labels), recipe=recipe, report=report,
                    device=target, pre=pre, model=model, augment=augmentation(pre),
                    images=images, crops=crops, kept=kept, skipped=skipped,
                    train_pos=train_pos, valid_pos=valid_pos,
                    targets=torch.tensor([samples[i].label for i in kept]),
                    threads=threads, body_onnx=body)


def preprocessing_for(recipe: Recipe) -> Preprocessing:
    """The backbone's preprocessing, scaled to recipe.image_size."""
    base = get_spec(recipe.backbone).preprocessing
    if recipe.image_size == base.input_size:
        return base
    resize = round(recipe.image_size * base.resize / base.input_size)
    return replace(base, input_size=recipe.image_size, resize=resize)


def augmentation(pre: Preprocessing) -> Callable[[Image.Image], Image.Image]:
    return v2.Compose([
        v2.RandomResizedCrop(pre.input_size, scale=(0.5, 1.0),
                             interpolation=v2.InterpolationMode.BICUBIC),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    ])


def _decode_all(samples, read_bytes, pre, report, *, threads: int, keep_images: bool):
    """Decode every image once, on `threads` threads (PIL decodes and resizes without the
    GIL): its eval crop and, for augmentation, a short-side pre.resize copy."""

    def decode(sample: Sample) -> tuple[Image.Image, Image.Image | None] | None:
        try:
            image = decode_rgb(read_bytes(sample.key), draft_size=pre.resize)
        except ValueError:
            return None
        return center_crop(image, pre), resize_short_side(image, pre) if keep_images else None

    images, crops, kept, skipped = [], [], [], []
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        for index, decoded in enumerate(pool.map(decode, samples)):
            if decoded is None:
                skipped.append(samples[index].key)
            else:
                crops.append(decoded[0])
                images.append(decoded[1])
                kept.append(index)
            if index % 32 == 31 or index == len(samples) - 1:
                report("decode", (index + 1) / len(samples),
                       f"decoding images {index + 1}/{len(samples)}", epoch=0)
    finally:  # a cancelled training does not wait for the images still queued
        pool.shutdown(wait=True, cancel_futures=True)
    return images, crops, kept, skipped
