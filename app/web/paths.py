"""Where the templates and static files live (beside the package, or in the working dir)."""

from pathlib import Path


def _find(name: str) -> Path:
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / name).is_dir():
            return base / name
    raise RuntimeError(f"cannot find the {name}/ folder")


TEMPLATES_DIR = _find("templates")
STATIC_DIR = _find("static")
