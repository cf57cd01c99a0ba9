"""Celery settings: the filesystem broker keeps every file it writes under home."""

from pathlib import Path

from app.queue import celery_config
from tests.conftest import make_settings


def test_filesystem_broker_writes_only_under_home(tmp_path):
    config = celery_config(make_settings(tmp_path, broker_url=None))
    assert config["broker_url"] == "filesystem://"
    options = config["broker_transport_options"]
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = Path(options[key])
        assert folder.is_relative_to(tmp_path.resolve()) and folder.is_dir(), key
