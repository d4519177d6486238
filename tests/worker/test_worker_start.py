"""A production worker never runs without its model."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from tests.processes import start_worker


def test_worker_with_unloadable_model_exits_with_a_message(settings: Settings, tmp_path: Path) -> None:
    # Given a model directory that is not a model
    (tmp_path / "config.json").write_text("{not json")
    broken = Settings(**dict(settings.__dict__, model=str(tmp_path)))
    # When a worker starts on it
    proc = start_worker(broken, name="broken-model")
    try:
        code = proc.popen.wait(120)
    finally:
        proc.stop()
    # Then it exits with status 1 and says why, instead of serving random weights
    assert code == 1
    log = proc.log()
    assert "cannot load model" in log and str(tmp_path) in log
    assert "random" not in log.lower().replace("random:", "")
