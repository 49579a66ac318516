"""Exports others can read, exports that don't collide (issue 11, point 7)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deepspeech_core.config import ExportConfig
from deepspeech_core.export import store
from deepspeech_core.workdir.atomic_files import atomic_path, atomic_write_text
from deepspeech_core.workdir.locking import LockedError

REPO = Path(__file__).resolve().parents[1]

# An export as export_model does it, slowed down: holds the lock, stages, waits, commits.
SLOW_EXPORT = """
import sys, time
from pathlib import Path
from deepspeech_core.export import store as export_store
from deepspeech_core.workdir.locking import export_lock
root = Path(sys.argv[1])
with export_lock(root):
    export_store.clean_stale_staging(root)
    staging, name = export_store.new_staging(root)
    (staging / "metadata.json").write_text("{}")
    print(name, flush=True)
    time.sleep(float(sys.argv[2]))
    intact = (staging / "metadata.json").is_file()
    export_store.commit(staging, name)
    print("intact" if intact else "its staging was deleted", flush=True)
"""


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _slow_export(root: Path, seconds: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_EXPORT, str(root), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return proc, proc.stdout.readline().strip()


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomically_written_files_follow_the_umask(tmp_path, mask):
    """Before: 0600 whatever the umask (mkstemp), so others could not read metadata.json."""
    with umask(mask):
        atomic_write_text(tmp_path / "metadata.json", "{}")
        with atomic_path(tmp_path / "train.csv", suffix=".csv") as tmp:
            tmp.write_text("a")
    for name in ("metadata.json", "train.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_every_exported_file_and_directory_follows_the_umask(trained, tmp_path):
    from deepspeech_core.export.export_model import export_model

    cfg = trained[0]
    with umask(0o027):
        manifest = export_model(
            cfg.checkpoint_dir, tmp_path / "export", ExportConfig(export_tflite=False)
        )
    paths = [manifest.export_dir, *manifest.export_dir.rglob("*")]
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in paths}
    assert {m for p, m in modes.items() if Path(tmp_path / p).is_dir()} == {0o750}, modes
    assert {m for p, m in modes.items() if Path(tmp_path / p).is_file()} == {0o640}, modes
    assert "export/v1/metadata.json" in modes
    assert "export/v1/MODEL_CARD.md" in modes


def test_two_exports_into_one_directory_take_turns(trained, tmp_path):
    """Before: the second export deleted the first one's staging as stale and took its version."""
    from deepspeech_core.export.export_model import export_model

    cfg = trained[0]
    root = tmp_path / "export"
    first, name = _slow_export(root, 3.0)
    assert name == "v1"
    second = export_model(cfg.checkpoint_dir, root, ExportConfig(export_tflite=False))
    assert first.communicate(timeout=60)[0].strip() == "intact"
    assert first.returncode == 0
    assert second.version == "v2"
    assert [v.name for v in store.versions(root)] == ["v1", "v2"]
    assert not list(root.glob(".*staging*"))


def test_promote_takes_the_export_lock(tmp_path):
    root = tmp_path / "export"
    (root / "v1").mkdir(parents=True)
    running, name = _slow_export(root, 2.0)
    assert name == "v2"
    try:
        with pytest.raises(LockedError, match="in use by another export"):
            store.promote_version(root, "v1", wait=0)
        started = time.monotonic()
        version, before = store.promote_version(root, "v1")  # waits for the export
        assert time.monotonic() - started > 0.5
        assert (version.name, before) == ("v1", None)
        assert store.current(root) == root / "v1"
    finally:
        running.communicate(timeout=60)
    assert [v.name for v in store.versions(root)] == ["v1", "v2"]
