"""The `kodiak` command: migrate, web, worker, run (web and workers together), storage copy,
check, sweep, backup and restore."""

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from app.config import Settings, get_settings


def alembic_config(database_url: str):
    """Alembic's config for `database_url`, finding migrations/ beside the package or here."""
    from alembic.config import Config

    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (base / "migrations" / "env.py").is_file():
            config = Config()
            config.set_main_option("script_location", str(base / "migrations"))
            config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
            return config
    raise SystemExit("cannot find the migrations/ folder")


def migrate(settings: Settings) -> None:
    """Upgrade the database to the newest schema and make sure an admin exists."""
    from alembic import command

    from app.db import make_engine, make_session_factory, session_scope
    from app.services.auth import ensure_admin

    settings.home.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.resolved_database_url()), "heads")
    engine = make_engine(settings.resolved_database_url())
    with session_scope(make_session_factory(engine)) as session:
        generated = ensure_admin(
            session=session, email=settings.admin_email, password=settings.admin_password
        )
    engine.dispose()
    if generated:
        print(f"Created the first admin: {settings.admin_email} / password: {generated}")
        print("(shown once; set KODIAK_ADMIN_PASSWORD to choose it yourself)")


# On SIGTERM the web finishes its requests for at most this long, then cancels the rest (their
# clients see the connection close; an upload's rows commit whole or not at all) and stops
# cleanly, flushing the prediction log: inside Docker's 10 s before a SIGKILL.
WEB_STOP_GRACE_S = 8


def web(settings: Settings) -> None:
    import uvicorn

    from app.observability import configure_logging

    configure_logging(settings)
    uvicorn.run("app.web.main:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.web_workers, proxy_headers=True,
                forwarded_allow_ips=settings.forwarded_allow_ips, log_config=None,
                log_level=settings.log_level, timeout_graceful_shutdown=WEB_STOP_GRACE_S)


def worker(queues: str, pool: str | None, concurrency: int | None,
           gpu: str | None = None) -> None:
    """A Celery worker; `gpu` pins it to one GPU (CUDA_VISIBLE_DEVICES, set before torch)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from workers.celery_app import app

    argv = ["worker", "--loglevel=INFO", f"--queues={queues}", "--without-gossip",
            "--without-mingle", f"--hostname={queues.replace(',', '-')}@%h"]
    if pool is None:
        pool = "solo" if "train" in queues.split(",") else "threads"
    argv.append(f"--pool={pool}")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)


def storage_copy(settings: Settings, source_url: str, target_url: str) -> None:
    """Copy every key of one store into another (keys already there, same size, are kept)."""
    from app.storage import copy_all, open_storage

    copied, skipped = copy_all(open_storage(source_url, settings),
                               open_storage(target_url, settings))
    print(f"copied {copied} keys from {source_url} to {target_url}; "
          f"{skipped} already there with the same size", flush=True)


def _stop_with_parent() -> None:
    """In a child of `kodiak run`: get SIGTERM when `kodiak run` dies, even by SIGKILL, so
    its workers never outlive it (Linux; elsewhere the finally below is all there is)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run(settings: Settings) -> None:
    """Migrate, start a train worker and a gather worker, then serve the web app."""
    migrate(settings)
    children = [
        subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", queues],
                         preexec_fn=_stop_with_parent)
        for queues in ("train", "gather")
    ]
    print(f"Kodiak is running at http://{settings.host}:{settings.port}/ "
          f"(sign in as {settings.admin_email}); Ctrl-C stops it.", flush=True)
    try:
        web(settings)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


def operate(settings: Settings, args: argparse.Namespace) -> None:
    """The operator's commands over this Kodiak's database and store; JSON on stdout."""
    import json

    from app.db import make_engine, make_session_factory
    from app.services import jobs, maintenance
    from app.storage import open_storage

    storage = open_storage(settings.resolved_storage_url(), settings)
    if args.command == "backup":
        print(json.dumps(maintenance.backup(settings=settings, storage=storage,
                                            target=args.folder)))
        return
    if args.command == "restore":
        result = maintenance.restore(settings=settings, storage=storage, source=args.folder)
        migrate(settings)  # a backup from an older Kodiak is brought up to this schema
        print(json.dumps(result))
        return
    engine = make_engine(settings.resolved_database_url())
    try:
        with make_session_factory(engine)() as session:
            if args.command == "sweep":
                print(json.dumps(jobs.sweep(session=session, settings=settings)))
                return
            report = maintenance.check(session=session, storage=storage, settings=settings,
                                       repair=args.repair, grace_s=args.grace_seconds)
            print(json.dumps(report.as_dict(), indent=2))
            if not report.clean and not args.repair:
                raise SystemExit(1)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kodiak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="upgrade the database and create the first admin")
    sub.add_parser("web", help="serve the web app and API")
    worker_parser = sub.add_parser("worker", help="run a Celery worker")
    worker_parser.add_argument("--queues", default="gather,train")
    worker_parser.add_argument("--pool", default=None)
    worker_parser.add_argument("--concurrency", type=int, default=None)
    worker_parser.add_argument("--gpu", default=None,
                               help="pin this worker to one GPU (index or UUID); default: "
                                    "KODIAK_WORKER_GPU, else every GPU the machine shows")
    sub.add_parser("run", help="migrate, then run the web app with its workers")
    storage_parser = sub.add_parser("storage", help="move stored images and models")
    storage_sub = storage_parser.add_subparsers(dest="storage_command", required=True)
    copy_parser = storage_sub.add_parser(
        "copy", help="copy every key from one STORAGE_URL to another (file://..., s3://...)")
    copy_parser.add_argument("source_url")
    copy_parser.add_argument("target_url")
    check_parser = sub.add_parser(
        "check", help="rows pointing at missing files, files without rows, stuck jobs")
    check_parser.add_argument("--repair", action="store_true",
                              help="delete orphan files, drop rows whose file is gone, sweep jobs")
    check_parser.add_argument("--grace-seconds", type=float, default=3600,
                              help="files younger than this are not orphans yet")
    sub.add_parser("sweep", help="fail silent jobs and resend lost ones (workers do it too)")
    backup_parser = sub.add_parser("backup", help="copy the database and the store into a folder")
    backup_parser.add_argument("folder", type=Path)
    restore_parser = sub.add_parser("restore", help="restore a backup into an empty database "
                                                    "and store")
    restore_parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    settings = get_settings()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "web":
        web(settings)
    elif args.command == "worker":
        worker(args.queues, args.pool, args.concurrency, args.gpu or settings.worker_gpu)
    elif args.command == "storage":
        storage_copy(settings, args.source_url, args.target_url)
    elif args.command in ("check", "sweep", "backup", "restore"):
        operate(settings, args)
    else:
        run(settings)


if __name__ == "__main__":
    main()
