"""Image embeddings for label assist: the frozen pretrained backbone's pooled features of each
image's eval crop (the same preprocessing and features as training's frozen phase), under the
same mixed precision as that phase's training views (bf16 where the CPU has it: about 3x fp32)."""

from collections.abc import Callable, Iterable

import numpy as np
import torch

from app.ml.backbones import get_spec, imagenet_model
from app.ml.device import autocast, owned_cores, pick_device, to_device
from app.ml.images import decode_rgb
from app.ml.preprocess import preprocess

EMBED_BATCH = 32


def embed_images(keys: list[str], *, read_bytes: Callable[[str], bytes], backbone: str,
                 on_batch: Callable[[int], None] | None = None, device: str | None = None,
                 threads: int | None = None) -> Iterable[tuple[list[str], np.ndarray]]:
    """(keys, float32 features) a batch at a time; undecodable images are left out."""
    torch.set_num_threads(threads or owned_cores())
    target = pick_device(device)
    pre = get_spec(backbone).preprocessing
    model = imagenet_model(backbone).to(target, memory_format=torch.channels_last).eval()
    for start in range(0, len(keys), EMBED_BATCH):
        done, views = [], []
        for key in keys[start:start + EMBED_BATCH]:
            try:
                image = decode_rgb(read_bytes(key), draft_size=pre.resize)
            except ValueError:
                continue
            done.append(key)
            views.append(preprocess(image, pre))
        if views:
            batch = to_device(torch.from_numpy(np.stack(views)), target)
            with torch.inference_mode(), autocast(target):
                features = model.forward_head(model.forward_features(batch), pre_logits=True)
            yield done, features.float().cpu().numpy()
        if on_batch:
            on_batch(min(start + EMBED_BATCH, len(keys)))
