"""The web process serves with ONNX Runtime and never imports torch (memory budget)."""

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
import sys, tempfile, pathlib
from app.config import Settings
from app.web.main import create_app
from fastapi.testclient import TestClient
home = pathlib.Path(tempfile.mkdtemp())
app = create_app(Settings(home=home, broker_url="memory://"))
with TestClient(app) as client:
    client.get("/login")
print("torch" in sys.modules)
"""


def test_web_app_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
