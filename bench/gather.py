"""Gather benchmark: images per second downloaded and verified, Kodiak against fastai, with
fastai at its defaults and at Kodiak's concurrency, and the CPU each side spends an image.

A loopback server farm (16 addresses, 127.0.0.1-16, as search results span many hosts), in
a process of its own, serves the bear photos with 100 ms of injected latency per request.
Kodiak runs its real search job (SSRF-checked downloads spooled under the size cap, sniffing,
decode with the bomb check, EXIF, re-encode, hashes, near-duplicate grouping, SQLite rows
with provenance); the baseline runs fastai's `download_images` then `verify_images`, as the
book does, once at its defaults (n_workers=8) and once with as many workers as Kodiak has
concurrent downloads. Every side runs in a fresh process, RUNS times with the order rotated,
on the same URLs; results are medians with their spread (lowest, highest). CPU counts the
side's own process and its children (fastai's verify_images forks), never the server farm.
Kodiak's peak RSS is measured at N and 2.5 N images, to show memory flat in the number of
images, and a profile splits Kodiak's CPU an image into its parts.

Usage: .venv/bin/python bench/gather.py [--images 400] [--runs 3] [--against DIR]
(--against: a checkout of an earlier commit, e.g. `git archive REV | tar -x -C DIR`; its job
runs interleaved with this one's and both land under "before_after").
Writes bench/results/gather.json. Data: $KODIAK_DATA_DIR (default ../shared/data).
"""

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import DATA, REPO, RESULTS, bear_photos, describe, machine_info

from tests.gather.loopback import serving

HOSTS = 16
LATENCY = 0.1
CONCURRENCY = 32  # Kodiak's default download_concurrency (app/config.py)
FASTAI_DEFAULT_WORKERS = 8  # fastai.vision.utils.download_images(n_workers=8)
DECODE, FILING, WRITES = "decode", "filing", "writes"  # the profiled parts of a Kodiak job


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


def cpu_seconds() -> float:
    """CPU of this process and its reaped children, user and system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class PartClock:
    """CPU seconds spent inside chosen functions, whatever thread runs them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, name: str, part: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.thread_time() - started

        setattr(owner, name, timed)


def run_kodiak(urls: list[str]) -> dict:
    """Kodiak's search job in this process on SQLite: images per second, CPU, peak RSS."""
    from app.cli import migrate
    from app.config import Settings
    from app.db import make_engine, make_session_factory, session_scope
    from app.models import Job
    from app.services import auth, gather_pipeline, gathering, projects, search
    from app.storage import LocalStorage, open_storage

    class ListProvider:
        name = "bench"

        def search(self, query, *, max_results, wait, licence=None):
            return [search.Hit(image_url=u, page_url=u, title="bench") for u in urls]

    clock = PartClock()
    clock.wrap(gather_pipeline, "_prepared", DECODE)
    clock.wrap(gather_pipeline, "_file_batch", FILING)
    clock.wrap(LocalStorage, "put", WRITES)
    search.PROVIDERS["bench"] = lambda settings: ListProvider()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), admin_password="bench-password",
                            broker_url="memory://", allow_loopback_downloads=True,
                            search_provider="bench", download_concurrency=CONCURRENCY)
        migrate(settings)
        factory = make_session_factory(make_engine(settings.resolved_database_url()))
        storage = open_storage(settings.resolved_storage_url(), settings)
        with session_scope(factory) as session:
            user = auth.create_user(session=session, email="b@example.com", password="pw-12345")
            project = projects.create_project(session=session, owner=user, name="bench")
            job = gathering.start_search(session=session, settings=settings, project=project,
                                         label="bears", max_images=len(urls))
        started, cpu_started = time.perf_counter(), cpu_seconds()
        loop_started = time.thread_time()
        gather_pipeline.run_gathering(factory=factory, storage=storage, settings=settings,
                                      job_id=job.id)
        loop = time.thread_time() - loop_started
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        with factory() as session:
            job = session.get(Job, job.id)
            assert job.status == "succeeded", (job.status, job.error)
            result = job.result
    verified = result["added"] + result["duplicates"]
    measured = clock.seconds
    decode = measured.get(DECODE, 0.0)
    filing = measured.get(FILING, 0.0)
    writes = measured.get(WRITES, 0.0)
    parts = {
        "event loop: HTTP, SSRF guard, spooling, scheduling (main thread)": loop,
        "decode, bomb check, EXIF, re-encode, hashes (threads)": decode,
        "filing: SQL rows, near-duplicate groups, progress (thread)": filing - writes,
        "storage writes (filing thread)": writes,
        "the rest: thread hand-offs, sweeps, start and finish": cpu - loop - decode - filing,
    }
    return {"side": "kodiak", "images": len(urls), "verified": verified, "seconds": seconds,
            "images_per_s": verified / seconds, "cpu_seconds": cpu, "result": result,
            "cpu_ms_by_part": {k: v / verified * 1000 for k, v in parts.items()},
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not carry over an exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_fastai(urls: list[str], workers: int) -> dict:
    """fastai's download_images (`workers` threads, 4 s timeout) then verify_images."""
    from fastai.vision.utils import download_images, get_image_files, verify_images

    with tempfile.TemporaryDirectory() as dest:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        download_images(dest, urls=urls, n_workers=workers, timeout=4)
        files = get_image_files(dest)
        failed = verify_images(files)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        verified = len(files) - len(failed)
    return {"side": f"fastai-{workers}", "images": len(urls), "verified": verified,
            "seconds": seconds, "images_per_s": verified / seconds, "cpu_seconds": cpu,
            "peak_rss_mb": peak_rss_mb()}


def profile_kodiak(urls: list[str]) -> dict:
    """Kodiak's job with cProfile on its event loop's thread, timed by that thread's CPU clock
    (GIL waits do not count): the functions holding the most CPU there, cumulative and own
    (the profiler slows it all, so read the shares, not the milliseconds)."""
    import cProfile
    import pstats

    from app.services import gather_pipeline

    profiler = cProfile.Profile(time.thread_time)
    run = gather_pipeline.run_gathering

    def profiled(**kwargs):
        profiler.enable()
        try:
            return run(**kwargs)
        finally:
            profiler.disable()

    gather_pipeline.run_gathering = profiled
    figures = run_kodiak(urls)
    stats = pstats.Stats(profiler).stats
    top = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)
    wanted = ("httpx", "httpcore", "h11", "anyio", "downloader.py", "gather_pipeline.py",
              "selectors.py", "base_events.py")
    shown = [(f"{Path(file).parent.name}/{Path(file).name}:{name}", cumulative)
             for (file, _, name), (_, _, _, cumulative, _) in top
             if any(part in file for part in wanted)][:16]
    own = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:16]
    per_image = 1000 / figures["verified"]
    return {"seconds_profiled": figures["seconds"], "images": figures["verified"],
            "clock": "the event loop thread's CPU time (time.thread_time)",
            "loop_thread_cpu_ms_per_image": round(sum(v[2] for v in stats.values())
                                                  * per_image, 2),
            "top_cumulative_ms_per_image": {
                name: round(cumulative * per_image, 2) for name, cumulative in shown},
            "top_own_ms_per_image": {
                f"{Path(file).parent.name}/{Path(file).name}:{name}": round(t * per_image, 3)
                for (file, _, name), (_, _, t, _, _) in own}}


def child(side: str, count: int, bases: list[str]) -> None:
    urls = urls_for(bases, count)
    if side == "kodiak-profile":
        return print(json.dumps(profile_kodiak(urls)))
    figures = (run_kodiak(urls) if side == "kodiak"
               else run_fastai(urls, int(side.removeprefix("fastai-"))))
    print(json.dumps(figures))


def in_fresh_process(side: str, count: int, bases: list[str], *, repo: Path = REPO) -> dict:
    """One side's figures from a fresh process; `repo`: another checkout of Kodiak (its own
    bench/gather.py runs its own code, against the same farm and photos)."""
    out = subprocess.run([sys.executable, str(repo / "bench" / "gather.py"), "--child", side,
                          "--images", str(count), "--bases", json.dumps(bases)], cwd=repo,
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "KODIAK_DATA_DIR": str(DATA)})
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["cpu_ms_per_image"] = figures["cpu_seconds"] / figures["verified"] * 1000
    return figures


def profiled_in_fresh_process(count: int, bases: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", "kodiak-profile", "--images",
                          str(count), "--bases", json.dumps(bases)], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


SIDES = ("kodiak", f"fastai-{FASTAI_DEFAULT_WORKERS}", f"fastai-{CONCURRENCY}")


def one_run(index: int, count: int, bases: list[str]) -> dict:
    """Each side once, in an order rotated by `index`; the figures of one run."""
    load = os.getloadavg()[0]
    order = SIDES[index % 3:] + SIDES[:index % 3]
    got = {side: in_fresh_process(side, count, bases) for side in order}
    for side in order:
        f = got[side]
        print(f"  {side}: {f['verified']} of {f['images']} in {f['seconds']:.2f} s = "
              f"{f['images_per_s']:.1f} images/s, {f['cpu_ms_per_image']:.2f} ms CPU an image, "
              f"peak RSS {f['peak_rss_mb']:.0f} MB", flush=True)
    kodiak, default, equal = (got[s] for s in SIDES)
    run = {
        "order": list(order),
        "kodiak_images_per_s": kodiak["images_per_s"],
        "baseline_images_per_s": default["images_per_s"],
        "baseline_equal_concurrency_images_per_s": equal["images_per_s"],
        "ratio": kodiak["images_per_s"] / default["images_per_s"],
        "ratio_equal_concurrency": kodiak["images_per_s"] / equal["images_per_s"],
        "kodiak_seconds": kodiak["seconds"],
        "baseline_seconds": default["seconds"],
        "baseline_equal_concurrency_seconds": equal["seconds"],
        "cpu_ms_per_image": kodiak["cpu_ms_per_image"],
        "baseline_cpu_ms_per_image": default["cpu_ms_per_image"],
        "baseline_equal_concurrency_cpu_ms_per_image": equal["cpu_ms_per_image"],
        "kodiak_cpu_ms_by_part": kodiak["cpu_ms_by_part"],
        "kodiak_verified": kodiak["verified"], "baseline_verified": default["verified"],
        "baseline_equal_concurrency_verified": equal["verified"],
        "kodiak_peak_rss_mb": kodiak["peak_rss_mb"],
        "load_average_1min": load,
    }
    print(f"run {index + 1}: {run['ratio']:.2f}x fastai's defaults, "
          f"{run['ratio_equal_concurrency']:.2f}x at equal concurrency "
          f"(1-minute load average {load:.1f} at the start)", flush=True)
    return run


def before_after(other: Path, count: int, runs: int, bases: list[str]) -> dict:
    """This checkout's search job and another's (an earlier commit), alternately in fresh
    processes under the same load: the change's effect on a machine too noisy to compare
    figures taken at different times."""
    pairs = []
    for i in range(runs):
        sides = [("after", REPO), ("before", other)][::1 if i % 2 else -1]
        got = {name: in_fresh_process("kodiak", count, bases, repo=repo) for name, repo in sides}
        pairs.append(got)
        print(f"  before/after {i + 1}: " + ", ".join(
            f"{name} {got[name]['images_per_s']:.1f} images/s, "
            f"{got[name]['cpu_ms_per_image']:.2f} ms CPU" for name in ("before", "after")),
            flush=True)
    result = {"other_checkout": str(other), "runs": runs}
    for name in ("before", "after"):
        result[name] = {
            "images_per_s": round(statistics.median(p[name]["images_per_s"] for p in pairs), 1),
            "cpu_ms_per_image": round(statistics.median(p[name]["cpu_ms_per_image"]
                                                        for p in pairs), 2),
            "cpu_ms_by_part": rounded({part: statistics.median(
                p[name]["cpu_ms_by_part"][part] for p in pairs)
                for part in pairs[0][name]["cpu_ms_by_part"]}),
        }
    return result


def rounded(value, digits: int = 2):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return value


def summary(runs: list[dict], key: str) -> dict:
    values = sorted(run[key] for run in runs)
    return {"median": statistics.median(values), "min": values[0], "max": values[-1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--child", default="")
    parser.add_argument("--bases", default="[]")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--against", default="", help="another Kodiak checkout: its search "
                        "job runs as many times, interleaved with this one's (before/after)")
    args = parser.parse_args()
    if args.serve:
        return serve_forever()
    if args.child:
        return child(args.child, args.images, json.loads(args.bases))
    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    larger_count = args.images * 5 // 2
    with ExitStack() as stack:
        bases = farm_process(stack)
        runs = [one_run(i, args.images, bases) for i in range(args.runs)]
        larger = [in_fresh_process("kodiak", larger_count, bases) for _ in range(2)]
        profile = profiled_in_fresh_process(args.images, bases)
        against = (before_after(Path(args.against).resolve(), args.images, args.runs, bases)
                   if args.against else None)
    stats = {key: summary(runs, key) for key in (
        "kodiak_images_per_s", "baseline_images_per_s", "baseline_equal_concurrency_images_per_s",
        "ratio", "ratio_equal_concurrency", "cpu_ms_per_image", "baseline_cpu_ms_per_image",
        "baseline_equal_concurrency_cpu_ms_per_image", "kodiak_seconds", "baseline_seconds",
        "baseline_equal_concurrency_seconds")}
    parts = {part: statistics.median(run["kodiak_cpu_ms_by_part"][part] for run in runs)
             for part in runs[0]["kodiak_cpu_ms_by_part"]}
    rss_small = max(run["kodiak_peak_rss_mb"] for run in runs)
    rss_large = max(f["peak_rss_mb"] for f in larger)
    figures = {
        **{key: rounded(stat["median"]) for key, stat in stats.items()},
        "spread": {key: rounded({"min": stat["min"], "max": stat["max"]})
                   for key, stat in stats.items()},
        "runs_per_side": len(runs),
        "images": args.images,
        "latency_ms_per_request": LATENCY * 1000,
        "hosts": HOSTS,
        "kodiak_concurrency": CONCURRENCY,
        "kodiak_verified": min(r["kodiak_verified"] for r in runs),
        "baseline_verified": min(r["baseline_verified"] for r in runs),
        "baseline_equal_concurrency_verified": min(
            r["baseline_equal_concurrency_verified"] for r in runs),
        "baseline": f"fastai.vision.utils.download_images(n_workers={FASTAI_DEFAULT_WORKERS}, "
                    "timeout=4) + verify_images (fastai's defaults)",
        "baseline_equal_concurrency": f"the same with n_workers={CONCURRENCY}, Kodiak's "
                                      "concurrent downloads",
        "kodiak_does": "SSRF check per connection, size cap, spooled body, magic-byte sniffing, "
                       "bomb check, EXIF transpose, RGB, re-encode, content hash and dhash, "
                       "near-duplicate group, provenance rows in SQLite",
        "cpu_ms_per_image_note": "CPU (user + system) of the side's process and its children "
                                 "per verified image; the server farm is not counted",
        "kodiak_cpu_ms_by_part": rounded(parts),
        "kodiak_event_loop_profile": profile,
        "rss_mb": {str(args.images): rounded(rss_small, 1),
                   str(larger_count): rounded(rss_large, 1)},
        "rss_growth_mb": rounded(rss_large - rss_small, 1),
        "kodiak_images_per_s_larger": rounded(statistics.median(
            f["images_per_s"] for f in larger), 1),
        "goals": {
            "ratio at fastai's defaults, at least 3": stats["ratio"]["median"] >= 3,
            "ratio at equal concurrency, at least 1.5":
                stats["ratio_equal_concurrency"]["median"] >= 1.5,
            "peak RSS at 2.5 N within 10% of N": rss_large <= rss_small * 1.1,
        },
        **({"before_after": against} if against else {}),
        "runs": [rounded(run) for run in runs],
        "machine": info,
        "machine_line": describe(info) + "; loopback; shared with other jobs (see each run's "
                                         "load average)",
    }
    print(f"medians over {len(runs)} runs: Kodiak {figures['kodiak_images_per_s']} images/s, "
          f"fastai defaults {figures['baseline_images_per_s']}, fastai at {CONCURRENCY} workers "
          f"{figures['baseline_equal_concurrency_images_per_s']}; ratio {figures['ratio']}x "
          f"(from {stats['ratio']['min']:.2f} to {stats['ratio']['max']:.2f}), at equal "
          f"concurrency {figures['ratio_equal_concurrency']}x (from "
          f"{stats['ratio_equal_concurrency']['min']:.2f} to "
          f"{stats['ratio_equal_concurrency']['max']:.2f}); CPU an image: Kodiak "
          f"{figures['cpu_ms_per_image']} ms, fastai {figures['baseline_cpu_ms_per_image']} ms")
    print(f"Kodiak peak RSS: {figures['rss_mb']} MB; CPU ms an image by part: "
          f"{figures['kodiak_cpu_ms_by_part']}")
    out = RESULTS / "gather.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
