"""A/B of one unfrozen optimizer step (batch 32) on this CPU: where its time goes
(augmentation, forward, backward, optimizer) and the candidates alternated in one process.

Usage: python bench/unfrozen_ab.py [--rounds 2] [--images 32]   (prints JSON)
Variants: precision (bf16 autocast / fp32), memory format (channels_last / contiguous),
micro-batch (8 / 16 / 32), threads (all owned cores / 1). Every variant runs once per round,
in turn; medians per variant.
"""

import argparse
import json
import resource
import statistics
import time

import numpy as np
from common import bear_samples, machine_info

VARIANTS = [  # precision, memory format, micro-batch, threads (0: every owned core)
    ("bf16", "cl", 8, 0), ("fp32", "cl", 8, 0), ("fp32", "contig", 8, 0),
    ("bf16", "contig", 8, 0), ("fp32", "cl", 16, 0), ("fp32", "cl", 32, 0),
    ("bf16", "cl", 32, 0), ("fp32", "cl", 8, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--only", default=None, help="comma list of prec-fmt-micro-threads")
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F

    from app.ml.backbones import create_model
    from app.ml.device import owned_cores
    from app.ml.images import decode_rgb
    from app.ml.prepare import augmentation, preprocessing_for
    from app.ml.preprocess import resize_short_side, to_chw
    from app.ml.recipe import Recipe
    from app.ml.unfrozen import discriminative_groups

    torch.set_num_threads(owned_cores())
    torch.manual_seed(0)
    samples, labels = bear_samples()
    chosen = samples[:: max(1, len(samples) // args.images)][: args.images]
    recipe = Recipe()
    pre = preprocessing_for(recipe)
    images = [resize_short_side(decode_rgb(open(s.key, "rb").read(), draft_size=pre.resize), pre)
              for s in chosen]
    targets = torch.tensor([s.label for s in chosen])
    augment = augmentation(pre)
    model = create_model(recipe.backbone, num_classes=len(labels), pretrained=True)
    variants = VARIANTS
    if args.only:
        variants = [(p, f, int(m), int(t))
                    for p, f, m, t in (v.split("-") for v in args.only.split(","))]
    times: dict[str, list[dict]] = {}
    for _round in range(args.rounds + 1):  # round 0 warms every variant up
        for prec, fmt, micro, threads in variants:
            torch.set_num_threads(threads or owned_cores())
            fmt_ = torch.channels_last if fmt == "cl" else torch.contiguous_format
            model = model.to(memory_format=fmt_).train()
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
            opt = torch.optim.AdamW(discriminative_groups(model, 1e-3), weight_decay=0.01)
            split = {"augment": 0.0, "forward": 0.0, "backward": 0.0}
            started = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            for start in range(0, len(chosen), micro):
                t = time.perf_counter()
                part = range(start, min(start + micro, len(chosen)))
                batch = torch.from_numpy(np.stack([to_chw(augment(images[i]), pre)
                                                   for i in part])).to(memory_format=fmt_)
                t2 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    loss = F.cross_entropy(model(batch).float(), targets[list(part)])
                t3 = time.perf_counter()
                (loss * len(part) / len(chosen)).backward()
                t4 = time.perf_counter()
                split["augment"] += t2 - t
                split["forward"] += t3 - t2
                split["backward"] += t4 - t3
            t = time.perf_counter()
            opt.step()
            split["optimizer"] = time.perf_counter() - t
            split["step"] = time.perf_counter() - started
            if _round:
                times.setdefault(f"{prec}-{fmt}-{micro}-{threads}", []).append(split)
            print(f"{prec}-{fmt}-{micro}-{threads}", {k: round(v, 2) for k, v in split.items()},
                  flush=True)
    out = {name: {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}
           for name, rows in times.items()}
    print(json.dumps({"machine": machine_info(), "images": len(chosen), "rounds": args.rounds,
                      "median_s": out,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                           / 1024)}))


if __name__ == "__main__":
    main()
