"""Gather benchmark: images per second downloaded and verified, Kodiak against fastai.

A loopback server farm (16 addresses, 127.0.0.1-16, as search results span many hosts)
serves the bear photos with 100 ms of injected latency per request. Kodiak runs its real
search job (SSRF-checked downloads, sniffing, decode with the bomb check, EXIF, re-encode,
hashes, near-duplicate grouping, SQLite rows with provenance); the baseline runs fastai's
`download_images` (its defaults: 8 workers, 4 s timeout) then `verify_images`, as the book
does. Both get the same URLs in the same run. Kodiak's peak RSS is measured in a fresh
process for two sizes, to show memory flat in the number of images.

Usage: .venv/bin/python bench/gather.py [--images 400] [--runs 3]
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import DATA, REPO, RESULTS, bear_photos

from tests.gather.loopback import serving

HOSTS = 16
LATENCY = 0.1


def photo_paths() -> list[str]:
    return [str(p.relative_to(DATA)) for p in bear_photos()]


def urls_for(bases: list[str], count: int) -> list[str]:
    photos = photo_paths()
    return [f"{bases[i % len(bases)]}/photo/{photos[i % len(photos)]}?n={i}"
            for i in range(count)]


def farm(stack: ExitStack) -> list[str]:
    return [stack.enter_context(serving(DATA, host=f"127.0.0.{i + 1}", latency=LATENCY))
            for i in range(HOSTS)]


def serve_forever() -> None:
    """The server farm in its own process (so it does not share a GIL with either side)."""
    with ExitStack() as stack:
        print(json.dumps(farm(stack)), flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def farm_process(stack: ExitStack) -> list[str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    stack.callback(proc.wait, 30)
    stack.callback(proc.stdin.close)
    return json.loads(proc.stdout.readline())


def run_kodiak(urls: list[str]) -> dict:
    """Kodiak's search job in this process on SQLite; images per second and peak RSS."""
    from app.cli import migrate
    from app.config import Settings
    from app.db import make_engine, make_session_factory, session_scope
    from app.models import Job
    from app.services import auth, gather_pipeline, gathering, projects, search

    class ListProvider:
        name = "bench"

        def search(self, query, *, max_results, wait):
            return [search.Hit(image_url=u, page_url=u, title="bench") for u in urls]

    search.PROVIDERS["bench"] = lambda settings: ListProvider()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), admin_password="bench-password",
                            broker_url="memory://", allow_loopback_downloads=True,
                            search_provider="bench")
        migrate(settings)
        factory = make_session_factory(make_engine(settings.resolved_database_url()))
        from app.storage import open_storage

        storage = open_storage(settings.resolved_storage_url(), settings)
        with session_scope(factory) as session:
            user = auth.create_user(session=session, email="b@example.com", password="pw-12345")
            project = projects.create_project(session=session, owner=user, name="bench")
            job = gathering.start_search(session=session, settings=settings, project=project,
                                         label="bears", max_images=len(urls))
        started, cpu_started = time.perf_counter(), time.process_time()
        gather_pipeline.run_gathering(factory=factory, storage=storage, settings=settings,
                                      job_id=job.id)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        with factory() as session:
            job = session.get(Job, job.id)
            assert job.status == "succeeded", (job.status, job.error)
            result = job.result
    verified = result["added"] + result["duplicates"]
    return {"images": len(urls), "verified": verified, "seconds": seconds,
            "images_per_s": verified / seconds, "cpu_seconds": cpu, "result": result,
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not carry over an exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_fastai(urls: list[str]) -> dict:
    """fastai's download_images (8 workers, 4 s timeout) then verify_images."""
    from fastai.vision.utils import download_images, get_image_files, verify_images

    with tempfile.TemporaryDirectory() as dest:
        started = time.perf_counter()
        download_images(dest, urls=urls, n_workers=8, timeout=4)
        files = get_image_files(dest)
        failed = verify_images(files)
        seconds = time.perf_counter() - started
        verified = len(files) - len(failed)
    return {"images": len(urls), "verified": verified, "seconds": seconds,
            "images_per_s": verified / seconds}


def child(count: int, bases: list[str]) -> None:
    print(json.dumps(run_kodiak(urls_for(bases, count))))


def kodiak_in_fresh_process(count: int, bases: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(count), "--bases",
                          json.dumps(bases)], cwd=REPO, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_run(count: int, bases: list[str]) -> dict:
    """fastai then Kodiak on the same URLs; the figures of one run."""
    load = os.getloadavg()[0]
    baseline = run_fastai(urls_for(bases, count))
    kodiak = kodiak_in_fresh_process(count, bases)
    print(f"fastai download_images+verify_images: {baseline['verified']} of "
          f"{baseline['images']} in {baseline['seconds']:.1f} s = "
          f"{baseline['images_per_s']:.1f} images/s")
    print(f"kodiak search job: {kodiak['verified']} of {kodiak['images']} in "
          f"{kodiak['seconds']:.1f} s = {kodiak['images_per_s']:.1f} images/s "
          f"({kodiak['cpu_seconds']:.1f} s CPU), peak RSS {kodiak['peak_rss_mb']:.0f} MB")
    ratio = kodiak["images_per_s"] / baseline["images_per_s"]
    print(f"ratio: {ratio:.2f}x (1-minute load average {load:.1f} at the start)")
    return {"kodiak_images_per_s": round(kodiak["images_per_s"], 1),
            "baseline_images_per_s": round(baseline["images_per_s"], 1),
            "ratio": round(ratio, 2),
            "kodiak_seconds": round(kodiak["seconds"], 2),
            "kodiak_cpu_seconds": round(kodiak["cpu_seconds"], 2),
            "baseline_seconds": round(baseline["seconds"], 2),
            "kodiak_verified": kodiak["verified"], "baseline_verified": baseline["verified"],
            "kodiak_peak_rss_mb": round(kodiak["peak_rss_mb"], 1),
            "load_average_1min": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--child", type=int, default=0)
    parser.add_argument("--bases", default="[]")
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    if args.serve:
        return serve_forever()
    if args.child:
        return child(args.child, json.loads(args.bases))
    with ExitStack() as stack:
        bases = farm_process(stack)
        runs = [one_run(args.images, bases) for _ in range(args.runs)]
        larger = kodiak_in_fresh_process(min(args.images * 3, 1000), bases)
    print(f"kodiak search job, {larger['images']} images: {larger['images_per_s']:.1f} "
          f"images/s, peak RSS {larger['peak_rss_mb']:.0f} MB")
    ratios = sorted(run["ratio"] for run in runs)
    median = statistics.median(ratios)
    print(f"median ratio over {len(runs)} runs: {median:.2f}x "
          f"(from {ratios[0]:.2f} to {ratios[-1]:.2f})")
    figures = {
        "kodiak_images_per_s": round(statistics.median(r["kodiak_images_per_s"] for r in runs), 1),
        "baseline_images_per_s": round(
            statistics.median(r["baseline_images_per_s"] for r in runs), 1),
        "ratio": round(median, 2),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
        "images": args.images,
        "latency_ms_per_request": LATENCY * 1000,
        "hosts": HOSTS,
        "kodiak_seconds": round(statistics.median(r["kodiak_seconds"] for r in runs), 2),
        "baseline_seconds": round(statistics.median(r["baseline_seconds"] for r in runs), 2),
        "kodiak_verified": min(r["kodiak_verified"] for r in runs),
        "baseline_verified": min(r["baseline_verified"] for r in runs),
        "baseline": "fastai.vision.utils.download_images(n_workers=8, timeout=4) + "
                    "verify_images",
        "kodiak_does": "SSRF check per connection, size cap, magic-byte sniffing, bomb check, "
                       "EXIF transpose, RGB, re-encode, content hash and dhash, near-duplicate "
                       "group, provenance rows in SQLite",
        "rss_mb": {str(args.images): max(r["kodiak_peak_rss_mb"] for r in runs),
                   str(larger["images"]): round(larger["peak_rss_mb"], 1)},
        "kodiak_images_per_s_larger": round(larger["images_per_s"], 1),
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
                   f"{platform.release()}, Python {platform.python_version()}; loopback; "
                   "shared with other jobs (see each run's load average)",
    }
    out = RESULTS / "gather.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
