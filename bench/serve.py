"""Serving benchmark: Kodiak's web process against fair eager PyTorch and fastai, over HTTP,
with ONNX Runtime's own batched throughput (no HTTP) as the ceiling, all in the same run.

One run trains a small bear model (head only), then, RUNS times with the order rotated,
starts each server afresh on loopback and measures it: Kodiak (`kodiak web`: ONNX Runtime,
micro-batching), eager PyTorch made fair (torch threads set to the cores, one inference
thread behind an async endpoint, Kodiak's own decoding and preprocessing) and fastai's
`load_learner` + `learn.predict` treated the same way. Each gets single-client latency
(sequential requests) and throughput with CLIENTS concurrent clients; each run also measures
the ceiling: ONNX Runtime running prepared batches of the same photos in a process of its own.
Results are medians over the runs, with their spread (lowest, highest). Then a profile of
Kodiak's single-request path says where its time goes.

The client is a lean HTTP/1.1 keep-alive client on asyncio (one prepared multipart request
per photo), so that the load generator, which shares the cores with the servers, takes as
little of them as it can; it is the same client for every server.

Usage: python bench/serve.py [--runs 3] [--seconds 15] [--single 200]
Writes bench/results/serve.json. Data: $KODIAK_DATA_DIR (default ../shared/data).
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import REPO, RESULTS, bear_labels, bear_photos, describe, machine_info

CLIENTS = 16
FASTAI_SINGLE = 40  # learn.predict takes 0.1-1 s a photo here: fewer sequential requests
SLUG = "bears"
BOUNDARY = "kodiak-bench-boundary"
GOALS = {"single_client_p50_ms": 10.0, "fair_eager_ratio": 3.0, "ceiling_share": 0.6,
         "peak_rss_mb": 400.0}


def cores() -> int:
    return len(os.sched_getaffinity(0))


# --- the baselines' servers (each in its own process: `serve.py --serve KIND`) --------------


def baseline_app(kind: str, model_dir: Path):
    """Eager PyTorch or fastai, made fair: torch threads set to the cores, one inference
    thread behind an async endpoint (requests queue for it, nothing oversubscribes)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from fastapi import FastAPI, UploadFile

    torch.set_num_threads(cores())
    infer = eager_infer(model_dir) if kind == "eager" else fastai_infer(model_dir)
    inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    app = FastAPI()

    @app.post("/predict")
    async def predict(file: UploadFile):
        data = await file.read()
        label, confidence = await asyncio.get_running_loop().run_in_executor(
            inference, infer, data)
        return {"label": label, "confidence": confidence}

    return app


def eager_infer(model_dir: Path):
    """Eager PyTorch with Kodiak's decoding and preprocessing (the same numpy input)."""
    import torch

    from app.ml.export import load_torch_model
    from app.ml.images import decode_rgb
    from app.ml.predict import prepare_batch
    from app.ml.preprocess import Preprocessing

    meta = json.loads((model_dir / "model.json").read_text())
    pre = Preprocessing.from_dict(meta["preprocessing"])
    model = load_torch_model(model_dir)

    def infer(data: bytes) -> tuple[str, float]:
        batch = prepare_batch([decode_rgb(data, draft_size=pre.resize)], pre)
        with torch.inference_mode():
            probs = torch.softmax(model(torch.from_numpy(batch)), 1)[0]
        best = int(probs.argmax())
        return meta["labels"][best], float(probs[best])

    return infer


def fastai_infer(model_dir: Path):
    """fastai's book deployment: load_learner(export.pkl) + learn.predict."""
    import io

    from fastai.vision.all import PILImage, load_learner

    learn = load_learner(model_dir / "export.pkl")

    def infer(data: bytes) -> tuple[str, float]:
        label, index, probs = learn.predict(PILImage.create(io.BytesIO(data)))
        return str(label), float(probs[index])

    return infer


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


# --- the ceiling: ONNX Runtime alone, prepared batches, no HTTP -------------------------------


def ceiling(model_dir: Path, seconds: float) -> dict:
    """ONNX Runtime's own throughput on prepared batches of the photos, intra-op threads =
    the cores, full graph optimisation: with its default options (threads spin while they
    wait) and with spinning off (as Kodiak runs it), at 1, 2, 4 and 8 rows a call; the best
    of them counts, and the lowest CPU time per image beside it."""
    import onnxruntime as ort

    from app.ml.images import decode_rgb
    from app.ml.predict import prepare_batch
    from app.ml.preprocess import Preprocessing

    meta = json.loads((model_dir / "model.json").read_text())
    pre = Preprocessing.from_dict(meta["preprocessing"])
    images = [decode_rgb(data, draft_size=pre.resize) for data in load_photos()]
    inputs = prepare_batch(images, pre)
    outputs = meta["onnx"]["outputs"]
    per_setting, cpu_ms = {}, {}
    for spinning in ("1", "0"):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = cores()
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        session = ort.InferenceSession(str(model_dir / "model.onnx"), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        for size in (1, 2, 4, 8):
            name = f"{'spin' if spinning == '1' else 'nospin'}-{size}"
            batches = [inputs[i:i + size] for i in range(0, len(inputs) - size + 1, size)]
            session.run(outputs, {"input": batches[0]})
            done, started, cpu_started = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - started < seconds / 8:
                session.run(outputs, {"input": batches[done % len(batches)]})
                done += 1
            per_setting[name] = round(done * size / (time.perf_counter() - started), 1)
            cpu_ms[name] = round((time.process_time() - cpu_started) * 1000 / (done * size), 2)
    best = max(per_setting, key=per_setting.get)
    return {"throughput_ips": per_setting[best], "best": best, "per_setting_ips": per_setting,
            "cpu_ms_per_image": min(cpu_ms.values()), "per_setting_cpu_ms": cpu_ms}


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
    """A Kodiak home with the model recorded and deployed publicly as SLUG."""
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
        session.add(Deployment(slug=SLUG, project_id=project.id, model_id=model.id,
                               public=True))
    engine.dispose()


def load_photos() -> list[bytes]:
    """The photos every server gets: 40 of each bear class not used for training (the bears
    are JPEG q90, longer side 320 px)."""
    return [p.read_bytes() for label in bear_labels() for p in bear_photos(label)[2::5][:40]]


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


# --- the client ------------------------------------------------------------------------------


def multipart_request(port: int, path: str, photo: bytes) -> bytes:
    """One complete HTTP/1.1 request posting `photo` as multipart field `file`."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + photo + \
        f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class Connection:
    """A keep-alive connection that posts prepared requests and times the answers; it opens
    again when the server has closed it (uvicorn closes connections idle for 5 s)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> float:
        """Milliseconds from sending the request to the answer's last byte (a 200 with a
        label, or an error)."""
        if self.reader is None or self.reader.at_eof():
            self.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        started = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await self.reader.readexactly(length)
        elapsed = (time.perf_counter() - started) * 1000
        if head[9:12] != b"200" or b'"label"' not in body:
            raise RuntimeError(f"bad answer: {head[:12]!r} {body[:300]!r}")
        return elapsed

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(port: int, path: str, photos: list[bytes], *, pid: int, single: int,
                  seconds: float) -> dict:
    """Sequential latency (p50/p95), then throughput with CLIENTS concurrent clients (after
    a short warm-up at the same load); the server's CPU time per request in each, which
    other work on the machine disturbs less than the clock."""
    requests = [multipart_request(port, path, photo) for photo in photos]
    lone = Connection(port)
    for i in range(20):
        await lone.post(requests[i % len(requests)])
    cpu_before = cpu_seconds(pid)
    latencies = [await lone.post(requests[i % len(requests)]) for i in range(single)]
    single_cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / single
    lone.close()

    async def load(duration: float) -> tuple[int, list[float], float]:
        connections = [Connection(port) for _ in range(CLIENTS)]
        loaded: list[float] = []
        deadline = time.perf_counter() + duration

        async def client(k: int, connection: Connection) -> None:
            i = k
            while time.perf_counter() < deadline:
                loaded.append(await connection.post(requests[i % len(requests)]))
                i += CLIENTS

        started = time.perf_counter()
        await asyncio.gather(*(client(k, c) for k, c in enumerate(connections)))
        elapsed = time.perf_counter() - started
        for connection in connections:
            connection.close()
        return len(loaded), loaded, elapsed

    await load(min(3.0, seconds / 5))  # warm-up: batch shapes, allocations
    cpu_before = cpu_seconds(pid)
    done, loaded, elapsed = await load(seconds)
    loaded_cpu_s = cpu_seconds(pid) - cpu_before
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "throughput_rps": round(done / elapsed, 1),
        "loaded_p50_ms": round(float(np.percentile(loaded, 50)), 1),
        "loaded_p95_ms": round(float(np.percentile(loaded, 95)), 1),
        "server_cpu_ms_per_request": round(single_cpu_ms, 2),
        "loaded_server_cpu_ms_per_request": round(loaded_cpu_s * 1000 / done, 2),
        "loaded_server_cores_used": round(loaded_cpu_s / elapsed, 2),
    }


def run_client(port: int, path: str, photos: list[bytes], **kwargs) -> dict:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(measure(port, path, photos, **kwargs))


def peak_rss_mb(pid: int) -> tuple[float, bool]:
    """VmHWM of a process, and whether it has libtorch mapped."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    torch_mapped = "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    return round(int(hwm.split()[1]) / 1024, 1), torch_mapped


# --- the runs ----------------------------------------------------------------------------------


def servers(work: Path, model_dir: Path) -> dict:
    me = [sys.executable, __file__, "--model", str(model_dir)]
    return {
        "kodiak": ([sys.executable, "-m", "app.cli", "web"], f"/api/v1/predict/{SLUG}",
                   {"KODIAK_HOME": str(work / "home"), "KODIAK_PREDICT_RATE_PER_S_IP": "0",
                    "KODIAK_PREDICTION_LOG_FLUSH_S": "1"}),
        "eager": ([*me, "--serve", "eager"], "/predict", {}),
        "fastai": ([*me, "--serve", "fastai"], "/predict", {}),
    }


def one_run(run: int, work: Path, model_dir: Path, photos: list[bytes], args) -> dict:
    """Every server once (in an order rotated by run), then the ceiling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KODIAK_")}
    table = servers(work, model_dir)
    names = list(table)
    names = names[run % len(names):] + names[:run % len(names)]
    results = {}
    for name in names:
        command, path, extra = table[name]
        port = free_port()
        if name != "kodiak":
            command = [*command, "--port", str(port)]
        proc = start(command, {**env, **extra, "KODIAK_PORT": str(port)}, port,
                     work / f"{name}-{run}.log")
        try:
            single = args.single if name != "fastai" else min(args.single, FASTAI_SINGLE)
            results[name] = run_client(port, path, photos, pid=proc.pid, single=single,
                                       seconds=args.seconds)
            if name == "kodiak":
                rss, torch_mapped = peak_rss_mb(proc.pid)
                results[name].update(peak_rss_mb=rss, torch_loaded=torch_mapped)
        finally:
            stop(proc)
        print(f"  run {run + 1} {name}: {results[name]}", flush=True)
    out = subprocess.run([sys.executable, __file__, "--ceiling", "--model", str(model_dir),
                          "--seconds", str(args.seconds)], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True)
    results["ceiling"] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  run {run + 1} ceiling: {results['ceiling']}", flush=True)
    return results


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2),
            "spread": [round(min(values), 2), round(max(values), 2)]}


def report(runs: list[dict], args, info: dict, profile: dict) -> dict:
    def each(side: str, key: str) -> list[float]:
        return [run[side][key] for run in runs]

    ratio = [r["kodiak"]["throughput_rps"] / r["eager"]["throughput_rps"] for r in runs]
    fastai_ratio = [r["kodiak"]["throughput_rps"] / r["fastai"]["throughput_rps"] for r in runs]
    share = [r["kodiak"]["throughput_rps"] / r["ceiling"]["throughput_ips"] for r in runs]
    latency_ratio = [r["eager"]["p50_ms"] / r["kodiak"]["p50_ms"] for r in runs]
    loaded_cpu = "loaded_server_cpu_ms_per_request"
    cpu_ratio = [r["eager"][loaded_cpu] / r["kodiak"][loaded_cpu] for r in runs]
    cpu_share = [r["ceiling"]["cpu_ms_per_image"] / r["kodiak"][loaded_cpu] for r in runs]
    med = {side: {key: summary(each(side, key)) for key in runs[0][side]
                  if isinstance(runs[0][side][key], int | float)
                  and not isinstance(runs[0][side][key], bool)}
           for side in ("kodiak", "eager", "fastai")}
    med["ceiling"] = {key: summary([r["ceiling"][key] for r in runs])
                      for key in ("throughput_ips", "cpu_ms_per_image")}
    kodiak = {key: value["median"] for key, value in med["kodiak"].items()}
    values = {
        "single_client_p50_ms": kodiak["p50_ms"],
        "fair_eager_ratio": round(statistics.median(ratio), 2),
        "ceiling_share": round(statistics.median(share), 2),
        "peak_rss_mb": max(each("kodiak", "peak_rss_mb")),
    }
    goals = {key: {"goal": (f"at most {goal:g}" if key in ("single_client_p50_ms",
                                                           "peak_rss_mb")
                            else f"at least {goal:g}"),
                   "value": values[key],
                   "met": (values[key] <= goal if key in ("single_client_p50_ms",
                                                          "peak_rss_mb")
                           else values[key] >= goal)}
             for key, goal in GOALS.items()}
    for key in ("single_client_p50_ms", "fair_eager_ratio", "ceiling_share"):
        if not goals[key]["met"]:  # the profile of the single-request path says why
            goals[key]["where_time_goes"] = {"wall_ms": profile["wall_ms"],
                                             "cpu_ms": profile["cpu_ms"]}
    return {
        **values,
        "p50_ms": kodiak["p50_ms"],
        "p95_ms": kodiak["p95_ms"],
        "throughput_rps": kodiak["throughput_rps"],
        "baseline_throughput_rps": med["eager"]["throughput_rps"]["median"],
        "ratio": values["fair_eager_ratio"],
        "baseline_p50_ms": med["eager"]["p50_ms"]["median"],
        "baseline_p95_ms": med["eager"]["p95_ms"]["median"],
        "latency_ratio": round(statistics.median(latency_ratio), 2),
        "fastai_p50_ms": med["fastai"]["p50_ms"]["median"],
        "fastai_p95_ms": med["fastai"]["p95_ms"]["median"],
        "fastai_throughput_rps": med["fastai"]["throughput_rps"]["median"],
        "fastai_ratio": round(statistics.median(fastai_ratio), 2),
        "ceiling_throughput_ips": med["ceiling"]["throughput_ips"]["median"],
        # The same comparisons in CPU time per request at 16 clients, which the other work on
        # a shared machine disturbs far less than requests per second: eager's CPU per
        # request over Kodiak's, and ONNX Runtime's own CPU per image over Kodiak's server
        # CPU per request (the share of it that is the forward pass).
        "fair_eager_cpu_ratio": round(statistics.median(cpu_ratio), 2),
        "ceiling_share_cpu": round(statistics.median(cpu_share), 2),
        "server_cpu_ms_per_request": kodiak[loaded_cpu],
        "baseline_server_cpu_ms_per_request": med["eager"][loaded_cpu]["median"],
        "ceiling_cpu_ms_per_image": med["ceiling"]["cpu_ms_per_image"]["median"],
        "torch_loaded_in_web_process": any(r["kodiak"]["torch_loaded"] for r in runs),
        "goals": goals,
        "ratios_per_run": {"fair_eager": [round(x, 2) for x in ratio],
                           "fastai": [round(x, 2) for x in fastai_ratio],
                           "ceiling_share": [round(x, 3) for x in share],
                           "fair_eager_cpu": [round(x, 2) for x in cpu_ratio],
                           "ceiling_share_cpu": [round(x, 3) for x in cpu_share]},
        "medians": med,
        "runs": runs,
        "profile": profile,
        "compares": (
            "Kodiak's `kodiak web` (ONNX Runtime, micro-batched, SQLite, prediction log on) "
            "against eager PyTorch and fastai's learn.predict, each behind FastAPI on uvicorn "
            "with torch threads = cores and one inference thread behind an async endpoint "
            "(eager gets Kodiak's decoding and preprocessing); the ceiling is ONNX Runtime "
            "alone on prepared batches, no HTTP. One client sequential, then "
            f"{CLIENTS} concurrent clients over keep-alive connections."),
        "clients": CLIENTS,
        "runs_per_side": len(runs),
        "seconds_per_load": args.seconds,
        "single_requests": {"kodiak": args.single, "eager": args.single,
                            "fastai": min(args.single, FASTAI_SINGLE)},
        "image": "bear photos, JPEG q90, longer side 320 px (120 of them, round robin)",
        "machine": {**info, "note": f"client and servers share the {info['cores']} cores; "
                    "other work on the machine shows in the load averages"},
        "machine_line": describe(info),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def profile_single(model_dir: Path, photos: list[bytes], runs: list[dict],
                   repeats: int = 200) -> dict:
    """Where a single request's time goes: each step of Kodiak's path run in this process,
    median wall and CPU milliseconds over `repeats` photos (CPU: this whole process, so ONNX
    Runtime's second thread counts). `rest` is the measured end-to-end p50 (and the server's
    CPU per request) minus the steps: HTTP parsing, multipart, the caller and deployment
    lookup, thread hand-offs, JSON, the access and prediction logs (and, for the wall
    clock, the client and the waits for a core)."""
    from app.ml.images import PixelBudget, decode_rgb
    from app.ml.predict import Classifier
    from app.services.deployments import FAMILIARITY
    from app.services.predictions import shape_answer

    classifier = Classifier.load(model_dir, threads=cores())
    pre = classifier.preprocessing
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def timed(name: str, fn, *a):
        started, cpu_started = time.perf_counter(), time.process_time()
        out = fn(*a)
        wall.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        cpu.setdefault(name, []).append((time.process_time() - cpu_started) * 1000)
        return out

    for i in range(repeats):
        data = photos[i % len(photos)]
        image = timed("decode", lambda: decode_rgb(data, max_pixels=60_000_000,
                                                    draft_size=pre.resize,
                                                    budget=PixelBudget(25_000_000)))
        batch = timed("preprocess", classifier.prepare, [image])
        probs, embedding = timed("onnx_run", classifier._run, batch)
        near = timed("novelty", lambda: classifier.bank.familiarity(
            classifier.bank.similarity(embedding)) if classifier.bank else None)
        answer = timed("answer", lambda: shape_answer(
            labels=classifier.labels, row=probs[0], model_id=1, threshold=0.5, top_k=None,
            score=FAMILIARITY, familiarity=None if near is None else float(near[0])))
        timed("json", lambda: json.dumps(answer).encode())

    def medians(values: dict[str, list[float]], total: float) -> dict:
        out = {name: round(statistics.median(ms), 3) for name, ms in values.items()}
        out["rest"] = round(total - sum(out.values()), 3)
        return out

    end_to_end = statistics.median([r["kodiak"]["p50_ms"] for r in runs])
    server_cpu = statistics.median([r["kodiak"]["server_cpu_ms_per_request"] for r in runs])
    return {"end_to_end_p50_ms": end_to_end, "server_cpu_ms_per_request": server_cpu,
            "wall_ms": medians(wall, end_to_end), "cpu_ms": medians(cpu, server_cpu)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--serve", choices=["eager", "fastai"])
    parser.add_argument("--ceiling", action="store_true")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        import uvicorn

        uvicorn.run(baseline_app(args.serve, args.model), host="127.0.0.1", port=args.port,
                    log_level="warning")
        return
    if args.ceiling:
        print(json.dumps(ceiling(args.model, args.seconds)))
        return

    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="kodiak-bench-serve-"))
    try:
        print("training and exporting a small bear model ...", flush=True)
        model_dir = work / "model"
        meta, labels, train_photos = train_model(model_dir)
        export_fastai_learner(model_dir, train_photos, labels)
        prepare_kodiak(work / "home", model_dir, meta)
        photos = load_photos()
        runs = [one_run(run, work, model_dir, photos, args) for run in range(args.runs)]
        profile = profile_single(model_dir, photos, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = report(runs, args, info, profile)
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "medians")},
                     indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
