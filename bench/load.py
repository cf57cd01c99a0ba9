"""Load benchmark: 50 clients for 60 s mixing the work people do at once, on real processes.

Each setup starts Kodiak as a person would (`kodiak run` on the embedded defaults: SQLite,
the filesystem broker, local storage; then PostgreSQL + Redis with separate `kodiak web` and
`kodiak worker` processes), trains and deploys a small bear model through the API, and then
runs CLIENTS concurrent clients for SECONDS. Each client loops over a weighted mix:
predictions on the deployment (45%), image listing (20%), relabels (20%), single-photo
uploads (15%, many of them duplicates, as real re-uploads are). Prediction rate limits are
turned off: this measures the server, not the limiter.

Figures per setup: requests, answers by status, zero 5xx expected, zero "database is
locked" anywhere, p50/p99 latency per operation, and the peak RSS of each process (web,
workers) read from /proc while the load runs.

Usage: python bench/load.py [--clients 50] [--seconds 60] [--setups sqlite,postgres]
Writes bench/results/load.json. Data: $KODIAK_DATA_DIR (default ../shared/data).
"""

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from common import REPO, RESULTS, bear_labels, bear_photos

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.integration.conftest import base_env, free_port, wait_healthy

WEIGHTS = {"predict": 45, "list": 20, "relabel": 20, "upload": 15}
ERRORS: list[str] = []  # the text of every 5xx and client-side transport error
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def processes(commands: list[list[str]], env: dict, home: Path):
    procs = []
    try:
        for i, command in enumerate(commands):
            log = open(home / f"proc-{i}.log", "wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "app.cli", *command], env=env,
                                          cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def tree(pid: int) -> list[int]:
    """A process and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    text = " ".join(part.decode(errors="replace") for part in cmd if part)
    for name in ("train", "gather"):
        if f"--queues {name}" in text or f"--queues={name}" in text:
            return f"worker-{name}"
    if " web" in text or text.endswith(" run"):
        return "web"
    return "other"


class Sampler(threading.Thread):
    """Peak RSS per process role, sampled every 0.25 s."""

    def __init__(self, roots: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            for root in self.roots:
                for pid in tree(root):
                    name = role(pid)
                    if name in ("other", "gone"):
                        continue
                    self.peaks[name] = max(self.peaks.get(name, 0.0), rss_mb(pid))


def prepare(url: str) -> dict:
    """Sign in, upload 20 photos per bear label, train (head only), deploy publicly."""
    with httpx.Client(base_url=url, timeout=300) as http:
        login = http.post("/api/v1/session",
                          json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        key = http.post("/api/v1/api-keys", headers={"X-CSRF-Token": login.json()["csrf_token"]})
        http.cookies.clear()
        auth = {"Authorization": f"Bearer {key.json()['key']}"}
        labels = bear_labels()
        pid = http.post("/api/v1/projects", json={"name": "Load", "labels": labels},
                        headers=auth).json()["id"]
        for label in labels:
            files = [("files", (p.name, p.read_bytes(), "image/jpeg"))
                     for p in bear_photos(label)[:20]]
            answer = http.post(f"/api/v1/projects/{pid}/images", data={"label": label},
                               files=files, headers=auth)
            answer.raise_for_status()
        job = http.post(f"/api/v1/projects/{pid}/trainings", json={}, headers=auth).json()
        while job["status"] in ("queued", "running"):
            time.sleep(1)
            job = http.get(f"/api/v1/jobs/{job['id']}", headers=auth).json()
        if job["status"] != "succeeded":
            raise SystemExit(f"training failed: {job}")
        slug = f"load-{secrets.token_hex(3)}"
        http.post(f"/api/v1/models/{job['result']['model_id']}/deployments",
                  json={"slug": slug, "public": True}, headers=auth).raise_for_status()
        images = http.get(f"/api/v1/projects/{pid}/images?limit=500", headers=auth).json()
        return {"auth": auth, "project": pid, "slug": slug, "labels": labels,
                "image_ids": [image["id"] for image in images["images"]]}


async def client_loop(http: httpx.AsyncClient, ctx: dict, deadline: float, photos: list,
                      records: list, rng: random.Random) -> None:
    ops, weights = zip(*WEIGHTS.items(), strict=True)
    pid, auth = ctx["project"], ctx["auth"]
    while time.monotonic() < deadline:
        op = rng.choices(ops, weights)[0]
        started = time.perf_counter()
        try:
            if op == "predict":
                name, data = rng.choice(photos)
                answer = await http.post(f"/api/v1/predict/{ctx['slug']}",
                                         files={"file": (name, data, "image/jpeg")})
            elif op == "list":
                answer = await http.get(f"/api/v1/projects/{pid}/images",
                                        params={"limit": 50, "offset": rng.randrange(0, 40)},
                                        headers=auth)
            elif op == "relabel":
                answer = await http.patch(f"/api/v1/images/{rng.choice(ctx['image_ids'])}",
                                          json={"label": rng.choice(ctx["labels"])},
                                          headers=auth)
            else:
                name, data = rng.choice(photos)
                answer = await http.post(f"/api/v1/projects/{pid}/images",
                                         data={"label": rng.choice(ctx["labels"])},
                                         files=[("files", (name, data, "image/jpeg"))],
                                         headers=auth)
            status, body = answer.status_code, answer.text
        except httpx.HTTPError as exc:  # a transport error on the client side: kept with its text
            status, body = 0, f"{type(exc).__name__}: {exc}"
        records.append((op, status, time.perf_counter() - started,
                        "database is locked" in body))
        if status == 0 or status >= 500:
            ERRORS.append(f"{op} {status}: {body[:200]}")


async def load(url: str, ctx: dict, *, clients: int, seconds: float) -> list:
    photos = [(p.name, p.read_bytes()) for p in bear_photos()[::4]]
    records: list = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client_loop(http, ctx, deadline, photos, records,
                                           random.Random(i)) for i in range(clients)))
    return records


def summarise(records: list, seconds: float) -> dict:
    summary = {"requests": len(records), "throughput_rps": round(len(records) / seconds, 1),
               "server_errors": sum(1 for _, s, _, _ in records if s >= 500 or s == 0),
               "database_locked": sum(1 for *_, locked in records if locked),
               "statuses": {}, "operations": {}}
    summary["errors"] = ERRORS[:20]
    ERRORS.clear()
    for _, status, _, _ in records:
        summary["statuses"][str(status)] = summary["statuses"].get(str(status), 0) + 1
    for op in WEIGHTS:
        times = np.array([t for o, _, t, _ in records if o == op]) * 1000
        if len(times):
            summary["operations"][op] = {
                "count": int(len(times)), "p50_ms": round(float(np.percentile(times, 50)), 1),
                "p99_ms": round(float(np.percentile(times, 99)), 1)}
    return summary


def run_setup(name: str, *, clients: int, seconds: float) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"kodiak-load-{name}-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra: dict[str, str] = {}
    database = None
    if name == "postgres":
        import psycopg
        import redis

        database = f"kodiak_load_{secrets.token_hex(3)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        redis.Redis.from_url("redis://127.0.0.1:6379/9").flushdb()
        extra = {"DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
                 "BROKER_URL": "redis://127.0.0.1:6379/9"}
    env = base_env(home, port, KODIAK_PREDICT_RATE_PER_S_KEY="0",
                   KODIAK_PREDICT_RATE_PER_S_IP="0", **extra)
    if name == "sqlite":
        commands = [["run"]]
    else:
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=REPO,
                       check=True, capture_output=True)
        commands = [["web"], ["worker", "--queues", "train"], ["worker", "--queues", "gather"]]
    try:
        with processes(commands, env, home) as procs:
            wait_healthy(url, procs[0], home / "proc-0.log", timeout=180)  # run or web
            ctx = prepare(url)
            sampler = Sampler([proc.pid for proc in procs])
            sampler.start()
            records = asyncio.run(load(url, ctx, clients=clients, seconds=seconds))
            sampler.done.set()
            sampler.join()
        result = summarise(records, seconds)
        result["peak_rss_mb"] = {role: round(mb) for role, mb in sorted(sampler.peaks.items())}
        logs = "".join(p.read_text(errors="replace") for p in home.glob("proc-*.log"))
        result["database_locked_in_logs"] = logs.count("database is locked")
        return result
    finally:
        if database:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--setups", default="sqlite,postgres")
    args = parser.parse_args()
    results = {
        "what": f"{args.clients} concurrent clients for {args.seconds:.0f} s, mix {WEIGHTS}, "
                "against real Kodiak processes on loopback; load generator on the same machine",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "clients": args.clients, "seconds": args.seconds, "setups": {},
    }
    for name in args.setups.split(","):
        print(f"-- {name}", flush=True)
        results["setups"][name] = run_setup(name, clients=args.clients, seconds=args.seconds)
        print(json.dumps(results["setups"][name], indent=2), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
