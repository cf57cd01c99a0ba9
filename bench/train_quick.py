"""Train on the full bears set and print wall time, error rate and throughput (not a test).

Usage: python bench/train_quick.py [--epochs 0 1] [--fp32] [--augment-views 2] [--threads N]
                                   [--torch-body]
The frozen body runs from its cached ONNX graph (app.ml.body) as in a train worker, unless
--torch-body.
Data: $KODIAK_DATA_DIR (default ../shared/data next to the repo).
"""

import argparse
import json
import resource
import time
from pathlib import Path

from common import bear_samples

import app.ml.device as device_module
from app.ml.body import shared_cache_dir
from app.ml.train import Recipe, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fp32", action="store_true", help="also run without bf16 autocast")
    parser.add_argument("--augment-views", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--torch-body", action="store_true",
                        help="run the frozen body in torch, not from its cached ONNX graph")
    args = parser.parse_args()
    samples, labels = bear_samples()
    rows = []
    modes = ["bf16", "fp32"] if args.fp32 else ["auto"]
    bf16_check = device_module.cpu_has_fast_bf16
    for mode in modes:
        device_module.cpu_has_fast_bf16 = (lambda: False) if mode == "fp32" else bf16_check
        for epochs in args.epochs:
            extra = {} if args.augment_views is None else {"augment_views": args.augment_views}
            recipe = Recipe(epochs=epochs, **extra)
            tick = time.perf_counter()
            result = train_classifier(samples=samples, labels=labels,
                                      read_bytes=lambda key: Path(key).read_bytes(),
                                      recipe=recipe, threads=args.threads,
                                      body_cache=None if args.torch_body else shared_cache_dir())
            wall = time.perf_counter() - tick
            m = result.metrics
            row = {
                "mode": mode,
                "epochs": epochs,
                "augment_views": recipe.augment_views,
                "wall_s": round(wall, 1),
                "error_rate": m["error_rate"],
                "errors": round(m["error_rate"] * m["valid_count"]),
                "valid_count": m["valid_count"],
                "train_count": m["train_count"],
                "images_per_second": m["images_per_second"],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            for h in m["history"][-2:]:
                print("   ", h)


if __name__ == "__main__":
    main()
