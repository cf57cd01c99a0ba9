"""`kodiak worker` with the loopback provider registered: the real worker, its edge swapped.

The provider returns the case URLs on the server named by GATHER_TEST_SERVER (test-only
environment, read here, never by the app).
"""

import os
import sys

from app.cli import main
from app.services import search
from tests.gather.cases import hits


class LoopbackProvider:
    name = "loopback"

    def search(self, query, *, max_results, wait):
        return hits(os.environ["GATHER_TEST_SERVER"])[:max_results]


search.PROVIDERS["loopback"] = lambda settings: LoopbackProvider()

if __name__ == "__main__":
    main(["worker", *sys.argv[1:]])
