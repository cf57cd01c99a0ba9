"""Serving benchmark: Kodiak's web process against eager PyTorch and fastai, over HTTP.

One run trains a small bear model (head only), then serves it three ways on loopback, each
a uvicorn process: Kodiak (`kodiak web`, ONNX Runtime, micro-batching), eager PyTorch with
torchvision preprocessing per request, and fastai's `load_learner` + `learn.predict`.
For each: single-image latency (one client, sequential) and throughput (16 clients).

Usage: python bench/serve.py [--seconds 15] [--single 100]
Writes bench/results/serve.json. Data: $KODIAK_DATA_DIR (default ../shared/data).
"""

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import REPO, RESULTS, bear_labels, bear_photos

CLIENTS = 16


# --- the baselines' servers (run in their own process: `serve.py --serve KIND`) -------------


def eager_app(model_dir: Path):
    """Eager PyTorch, torchvision preprocessing per request (the usual first deployment)."""
    import torch
    from fastapi import FastAPI, UploadFile
    from PIL import Image
    from torchvision import transforms

    from app.ml.export import load_torch_model

    meta = json.loads((model_dir / "model.json").read_text())
    pre = meta["preprocessing"]
    model = load_torch_model(model_dir)
    transform = transforms.Compose([
        transforms.Resize(pre["resize"], interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(pre["input_size"]),
        transforms.ToTensor(),
        transforms.Normalize(pre["mean"], pre["std"]),
    ])
    app = FastAPI()

    @app.post("/predict")
    def predict(file: UploadFile):
        image = Image.open(io.BytesIO(file.file.read())).convert("RGB")
        with torch.inference_mode():
            probs = torch.softmax(model(transform(image)[None]), 1)[0]
        best = int(probs.argmax())
        return {"label": meta["labels"][best], "confidence": float(probs[best])}

    return app


def fastai_app(model_dir: Path):
    """fastai's book deployment: load_learner(export.pkl) + learn.predict per request."""
    from fastai.vision.all import PILImage, load_learner
    from fastapi import FastAPI, UploadFile

    learn = load_learner(model_dir / "export.pkl")
    app = FastAPI()

    @app.post("/predict")
    def predict(file: UploadFile):
        label, index, probs = learn.predict(PILImage.create(io.BytesIO(file.file.read())))
        return {"label": str(label), "confidence": float(probs[index])}

    return app


def export_fastai_learner(model_dir: Path, photos: list[Path], labels: list[str]) -> None:
    """Wrap the same trained network in a fastai Learner and export it (bench only)."""
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        Learner,
        Normalize,
        RandomSplitter,
        Resize,
        ResizeMethod,
        parent_label,
    )

    from app.ml.export import load_torch_model

    meta = json.loads((model_dir / "model.json").read_text())
    pre = meta["preprocessing"]
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=labels)), get_y=parent_label,
        splitter=RandomSplitter(seed=0),
        item_tfms=Resize(pre["input_size"], method=ResizeMethod.Crop),
        batch_tfms=Normalize.from_stats(pre["mean"], pre["std"]),
    )
    dls = block.dataloaders(photos, bs=8, num_workers=0)
    learn = Learner(dls, load_torch_model(model_dir))
    learn.export(model_dir / "export.pkl")


# --- the Kodiak side ---------------------------------------------------------------------


def train_model(out: Path) -> tuple[dict, list[str], list[Path]]:
    """A head-only bear model on 1 in 5 photos, exported as Kodiak's training does."""
    from app.ml.export import export_model
    from app.ml.train import Recipe, Sample, train_classifier

    labels = bear_labels()
    photos = [p for label in labels for p in bear_photos(label)[::5]]
    samples = [Sample(key=str(p), label=labels.index(p.parent.name)) for p in photos]
    result = train_classifier(samples=samples, labels=labels,
                              read_bytes=lambda key: Path(key).read_bytes(),
                              recipe=Recipe(epochs=0, augment_views=1))
    meta = export_model(result=result, out_dir=out, backbone="efficientnet_lite0",
                        recipe={"epochs": 0}, dataset={"images": len(samples)})
    return meta, labels, photos


def prepare_kodiak(home: Path, model_dir: Path, meta: dict) -> None:
    """A Kodiak home with the model recorded and deployed publicly as `bears`."""
    from app.cli import migrate
    from app.config import Settings
    from app.db import make_engine, make_session_factory, session_scope
    from app.models import Deployment, ModelVersion, Project, User

    settings = Settings(home=home, admin_password="bench-password-1")
    migrate(settings)
    engine = make_engine(settings.resolved_database_url())
    storage_root = home / "storage"
    with session_scope(make_session_factory(engine)) as session:
        owner = session.query(User).first()
        project = Project(name="bears", owner_id=owner.id)
        session.add(project)
        session.flush()
        model = ModelVersion(project_id=project.id, backbone="efficientnet_lite0",
                             labels=meta["labels"], metrics=meta["metrics"], recipe={},
                             storage_prefix=f"models/{project.id}/1")
        session.add(model)
        session.flush()
        model.storage_prefix = f"models/{project.id}/{model.id}"
        shutil.copytree(model_dir, storage_root / model.storage_prefix)
        session.add(Deployment(slug="bears", project_id=project.id, model_id=model.id,
                               public=True))
    engine.dispose()


def start(args: list[str], env: dict, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the load --------------------------------------------------------------------------------


async def measure(url: str, photos: list[bytes], *, single: int, seconds: float) -> dict:
    """Sequential latency (p50/p95), then throughput with CLIENTS concurrent clients."""
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one(i: int) -> float:
            started = time.perf_counter()
            response = await client.post(url, files={"file": ("p.jpg", photos[i % len(photos)],
                                                              "image/jpeg")})
            response.raise_for_status()
            return (time.perf_counter() - started) * 1000

        for i in range(10):
            await one(i)
        latencies = [await one(i) for i in range(single)]
        done = 0
        loaded: list[float] = []
        deadline = time.perf_counter() + seconds

        async def client_loop(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < deadline:
                loaded.append(await one(i))
                done += 1
                i += CLIENTS

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(k) for k in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "throughput_rps": round(done / elapsed, 1),
        "loaded_p50_ms": round(float(np.percentile(loaded, 50)), 1),
        "loaded_p95_ms": round(float(np.percentile(loaded, 95)), 1),
    }


def peak_rss_mb(pid: int) -> tuple[float, bool]:
    """VmHWM of a process, and whether it has libtorch mapped."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    torch_mapped = "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    return round(int(hwm.split()[1]) / 1024, 1), torch_mapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--serve", choices=["eager", "fastai"])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        import uvicorn

        app = (eager_app if args.serve == "eager" else fastai_app)(args.model)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
        return

    work = Path(tempfile.mkdtemp(prefix="kodiak-bench-serve-"))
    try:
        print("training and exporting a small bear model ...", flush=True)
        model_dir = work / "model"
        meta, labels, train_photos = train_model(model_dir)
        export_fastai_learner(model_dir, train_photos, labels)
        prepare_kodiak(work / "home", model_dir, meta)
        photos = [p.read_bytes() for label in labels
                  for p in bear_photos(label)[2::5][:40]]
        results = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("KODIAK_")}
        servers = {
            "kodiak": ([sys.executable, "-m", "app.cli", "web"], "/api/v1/predict/bears",
                       {"KODIAK_HOME": str(work / "home"), "KODIAK_PREDICT_RATE_PER_S_IP": "0",
                        "KODIAK_PREDICTION_LOG_FLUSH_S": "1"}),
            "eager": ([sys.executable, __file__, "--serve", "eager", "--model", str(model_dir)],
                      "/predict", {}),
            "fastai": ([sys.executable, __file__, "--serve", "fastai", "--model",
                        str(model_dir)], "/predict", {}),
        }
        for name, (command, path, extra) in servers.items():
            port = free_port()
            command = command + (["--port", str(port)] if name != "kodiak" else [])
            proc_env = {**env, **extra, "KODIAK_PORT": str(port)}
            proc = start(command, proc_env, port, work / f"{name}.log")
            try:
                print(f"measuring {name} ...", flush=True)
                results[name] = asyncio.run(measure(f"http://127.0.0.1:{port}{path}", photos,
                                                    single=args.single, seconds=args.seconds))
                if name == "kodiak":
                    rss, torch_mapped = peak_rss_mb(proc.pid)
                    results[name].update(peak_rss_mb=rss, torch_loaded=torch_mapped)
            finally:
                stop(proc)
            print(f"  {name}: {results[name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    kodiak, eager, fastai = results["kodiak"], results["eager"], results["fastai"]
    report = {
        "p50_ms": kodiak["p50_ms"],
        "p95_ms": kodiak["p95_ms"],
        "throughput_rps": kodiak["throughput_rps"],
        "baseline_throughput_rps": eager["throughput_rps"],
        "ratio": round(kodiak["throughput_rps"] / eager["throughput_rps"], 2),
        "baseline_p50_ms": eager["p50_ms"],
        "baseline_p95_ms": eager["p95_ms"],
        "latency_ratio": round(eager["p50_ms"] / kodiak["p50_ms"], 2),
        "fastai_p50_ms": fastai["p50_ms"],
        "fastai_p95_ms": fastai["p95_ms"],
        "fastai_throughput_rps": fastai["throughput_rps"],
        "fastai_ratio": round(kodiak["throughput_rps"] / fastai["throughput_rps"], 2),
        "peak_rss_mb": kodiak["peak_rss_mb"],
        "torch_loaded_in_web_process": kodiak["torch_loaded"],
        "clients": CLIENTS,
        "seconds_per_load": args.seconds,
        "single_requests": args.single,
        "image": "bear photos, JPEG q90, longer side 320 px",
        "details": results,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the cores
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"{platform.system()} {platform.release()}, Python "
                   f"{platform.python_version()}; client and servers share the cores",
    }
    print(json.dumps(report, indent=2))
    print(f"Kodiak vs eager PyTorch: {report['ratio']}x throughput, "
          f"{report['latency_ratio']}x lower p50; vs fastai: {report['fastai_ratio']}x "
          f"throughput")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
