"""What a work directory holds, read from its files: `deepspeech-flow status`.

Corpus (clips and hours per split, rejections by reason), trainings (data fingerprint,
step and epoch, best dev loss, whether a run holds them), exports (versions, test WER,
which one is current) and the last run (its stages and how long each took). Reads only
small JSON and text files, so it answers at once and never disturbs a running training.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from deepspeech_core.export import store
from deepspeech_core.workdir.atomic_files import atomic_write_json
from deepspeech_core.workdir.locking import TRAIN_LOCK, holder, workdir_holder

LAST_RUN = "last_run.json"  # under WORKDIR/reports


class LockInfo(BaseModel):
    pid: int | None = None
    host: str | None = None
    since: str | None = None


class CorpusStatus(BaseModel):
    clips: dict[str, int]
    hours: dict[str, float]
    rejected: dict[str, dict[str, int]]


class TrainingStatus(BaseModel):
    path: Path
    fingerprint: str
    step: int | None
    epochs: int
    best_dev_loss: float | None
    held_by: LockInfo | None
    modified: str


class ExportStatus(BaseModel):
    version: str
    path: Path
    test_wer: float | None
    test_cer: float | None
    created: str | None
    current: bool


class WorkdirStatus(BaseModel):
    workdir: Path
    exists: bool
    run_lock: LockInfo | None = None
    corpus: CorpusStatus | None = None
    trainings: list[TrainingStatus] = []
    exports: list[ExportStatus] = []
    last_run: dict[str, Any] | None = None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _lock(owner: dict | None) -> LockInfo | None:
    if owner is None:
        return None
    return LockInfo(
        pid=owner.get("pid"), host=owner.get("host"), since=_when(owner.get("started", 0))
    )


def _corpus(workdir: Path) -> CorpusStatus | None:
    report = _json(workdir / "reports" / "validation.json")
    if not isinstance(report, dict) or "splits" not in report:
        return None
    splits = report["splits"]
    return CorpusStatus(
        clips={s: v.get("clips", 0) for s, v in splits.items()},
        hours={s: v.get("hours", 0.0) for s, v in splits.items()},
        rejected={s: dict(v.get("rejected", {})) for s, v in splits.items()},
    )


def _checkpoint_step(directory: Path) -> int | None:
    """The newest checkpoint's step, from TensorFlow's `checkpoint` text file."""
    steps = []
    for sub in ("train", "best"):
        try:
            text = (directory / sub / "checkpoint").read_text()
        except OSError:
            continue
        found = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', text)
        steps += [int(found.group(1))] if found else []
    return max(steps, default=None)


def _training(directory: Path) -> TrainingStatus:
    history = _json(directory / "history.json") or {}
    dev = history.get("dev_loss") or history.get("train_loss") or []
    return TrainingStatus(
        path=directory,
        fingerprint=directory.name,
        step=_checkpoint_step(directory),
        epochs=len(history.get("train_loss") or []),
        best_dev_loss=min(dev) if dev else None,
        held_by=_lock(holder(directory, TRAIN_LOCK)),
        modified=_when((directory / "model.json").stat().st_mtime),
    )


def _trainings(root: Path) -> list[TrainingStatus]:
    """Every training under `root` (and `root` itself for a pre-per-data layout)."""
    if not root.is_dir():
        return []
    candidates = [root, *sorted(d for d in root.iterdir() if d.is_dir())]
    found = [_training(d) for d in candidates if (d / "model.json").is_file()]
    return sorted(found, key=lambda t: t.modified)


def _exports(export_dir: Path) -> list[ExportStatus]:
    current = store.current(export_dir)
    rows = []
    for version in store.versions(export_dir):
        meta = _json(version / "metadata.json") or {}
        rows.append(
            ExportStatus(
                version=version.name,
                path=version,
                test_wer=meta.get("test_wer"),
                test_cer=meta.get("test_cer"),
                created=meta.get("created"),
                current=current is not None and version.resolve() == current,
            )
        )
    return rows


def record_last_run(
    workdir: Path, target: str, started: float, outcome: str, stage_seconds: dict[str, float]
) -> None:
    """Write WORKDIR/reports/last_run.json: what the last run did and how long it took."""
    atomic_write_json(
        Path(workdir) / "reports" / LAST_RUN,
        {
            "target": target,
            "started": _when(started),
            "seconds": round(time.time() - started, 1),
            "outcome": outcome,
            "stage_seconds": stage_seconds,
        },
    )


def workdir_status(
    workdir: Path, checkpoint_dir: Path | None = None, export_dir: Path | None = None
) -> WorkdirStatus:
    """Everything `status` shows about `workdir` (default layout unless dirs are given)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        return WorkdirStatus(workdir=workdir, exists=False)
    return WorkdirStatus(
        workdir=workdir,
        exists=True,
        run_lock=_lock(workdir_holder(workdir)),
        corpus=_corpus(workdir),
        trainings=_trainings(Path(checkpoint_dir or workdir / "checkpoints")),
        exports=_exports(Path(export_dir or workdir / "export")),
        last_run=_json(workdir / "reports" / LAST_RUN),
    )
