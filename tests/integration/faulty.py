"""`kodiak` with its edges swapped for the fault tests: the real web or worker, but a loopback
search provider whose query names the photos it finds, and a store that can run out of space.

Test-only environment, read here, never by the app:
- GATHER_TEST_SERVER: the loopback photo server (tests/gather/loopback.py);
  GATHER_TEST_DATA: the photo folder it serves.
- FAULT_WRITES_FILE: a file holding how many more writes the store takes; each write counts
  one down, and at 0 every write fails as a full disk does (ENOSPC). No file, or an empty
  one: writes never fail. The test writes it, so it can fail the store and heal it while the
  processes run.

Usage: python -m tests.integration.faulty web | worker --queues gather | ...
"""

import errno
import json
import os
import sys
import threading
from pathlib import Path

from app import storage as storage_module
from app.cli import main
from app.services import search


def bear_paths(data: Path, spec: dict) -> list[str]:
    """Photo server paths of a search `spec`: {"labels": [...], "start": i, "stop": j} picks
    the sorted photos [i:j] of each label; {"slow": s, "fast": k} delays every answer after
    the first k by s seconds."""
    paths = []
    for label in spec.get("labels", ["black"]):
        names = sorted(p.name for p in (data / "bears" / label).glob("*.jpg"))
        paths += [f"/photo/bears/{label}/{name}"
                  for name in names[spec.get("start", 0):spec.get("stop", 10)]]
    fast = spec.get("fast", len(paths))
    return [path if i < fast else f"/slow/{spec['slow']}{path}" for i, path in enumerate(paths)]


class SpecProvider:
    """A search provider whose query is a JSON spec of the photos it finds (bear_paths)."""

    name = "loopback"

    def search(self, query, *, max_results, wait):
        base, data = os.environ["GATHER_TEST_SERVER"], Path(os.environ["GATHER_TEST_DATA"])
        return [search.Hit(image_url=base + path, page_url=f"https://pages.example/{i}",
                           title=f"bear {i}")
                for i, path in enumerate(bear_paths(data, json.loads(query)))][:max_results]


class FailingStorage:
    """A store that takes the writes `budget` allows, then fails each further one with ENOSPC
    (before writing anything, as a full disk fails a new file)."""

    def __init__(self, inner, budget) -> None:
        self.inner = inner
        self.budget = budget  # () -> bool: True while a write may go through

    def _write(self) -> None:
        if not self.budget():
            raise OSError(errno.ENOSPC, "No space left on device")

    def put(self, key, data) -> None:
        self._write()
        self.inner.put(key, data)

    def put_stream(self, key, stream) -> None:
        self._write()
        self.inner.put_stream(key, stream)

    def put_file(self, key, source) -> None:
        self._write()
        self.inner.put_file(key, source)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def countdown(path: Path):
    """A budget read from a file of writes left (see the module's docstring)."""
    lock = threading.Lock()

    def take() -> bool:
        with lock:
            try:
                left = path.read_text().strip()
            except FileNotFoundError:
                return True
            if not left:
                return True
            if int(left) <= 0:
                return False
            path.write_text(str(int(left) - 1))
            return True

    return take


def _install() -> None:
    search.PROVIDERS["loopback"] = lambda settings: SpecProvider()
    writes_file = os.environ.get("FAULT_WRITES_FILE")
    if not writes_file:
        return
    open_storage = storage_module.open_storage

    def failing(url, settings=None):
        return FailingStorage(open_storage(url, settings), countdown(Path(writes_file)))

    storage_module.open_storage = failing
    import app.web.main
    import workers.tasks

    app.web.main.open_storage = failing
    workers.tasks.open_storage = failing


if __name__ == "__main__":
    _install()
    main(sys.argv[1:])
