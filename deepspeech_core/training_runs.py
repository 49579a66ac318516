"""Where a training lives: one checkpoint directory per training data set.

    WORKDIR/checkpoints/<training data fingerprint>/   model.json, train/, best/, ...

The fingerprint covers the train and dev clips (content hashes and transcripts), not
the test files, so: running again on the same data resumes the same training (crash
recovery, more epochs); a corpus that grew (a scheduled retraining) starts a new one,
warm-started from the exported model in use or from scratch, and the previous one stays
untouched. A --checkpoint_dir given by the user is used as it is (DeepSpeech's meaning),
unless it is such a parent directory of trainings (WORKDIR/checkpoints, as the README's
examples give it): `train` then trains into its subdirectory for the data, and
`evaluate`, `export` and --load_checkpoint_dir use its newest training.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from deepspeech_core.io_utils import text_sha256
from deepspeech_core.manifests import FeatureCacheManifest

log = logging.getLogger(__name__)

TRAINING_SPLITS = ("train", "train_augmented", "dev")


class NoTrainedModelError(ValueError):
    """No trained model where one was asked for; the message lists what is there."""


def has_trained_model(checkpoint_dir: Path) -> bool:
    """True when `checkpoint_dir` holds a model description and at least one checkpoint,
    or is a DeepSpeech 0.9.x checkpoint directory (evaluated as it is)."""
    from deepspeech_core.deepspeech_checkpoint import is_deepspeech_checkpoint

    d = Path(checkpoint_dir)
    ours = (d / "model.json").is_file() and any(
        (d / sub / "checkpoint").is_file() for sub in ("best", "train")
    )
    return ours or is_deepspeech_checkpoint(d)


def training_data_fingerprint(features: FeatureCacheManifest) -> str:
    """Content of the clips a model trains and selects on (order-independent)."""
    parts = []
    for split in TRAINING_SPLITS:
        if split in features.indexes:
            df = pd.read_csv(features.indexes[split], dtype=str, keep_default_na=False)
            rows = sorted(zip(df.content_hash, df.transcript, strict=True))
            parts.append(split + ":" + "|".join(f"{h}:{t}" for h, t in rows))
    return text_sha256(features.namespace, *parts)


def checkpoint_dir_for(root: Path, features: FeatureCacheManifest) -> Path:
    return Path(root) / training_data_fingerprint(features)[:12]


def _last_saved(training: Path) -> float:
    """When the training last saved a checkpoint (its model description, if none)."""
    states = [training / sub / "checkpoint" for sub in ("best", "train")]
    return max(p.stat().st_mtime for p in [training / "model.json", *states] if p.is_file())


def trainings(root: Path) -> list[Path]:
    """The trainings directly under `root` that hold a model, least recently saved first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if d.is_dir() and has_trained_model(d)]
    return sorted(found, key=_last_saved)


def latest_trained(root: Path) -> Path | None:
    """The training under `root` that saved a checkpoint last."""
    found = trainings(root)
    return found[-1] if found else None


def is_trainings_root(path: Path) -> bool:
    """Is `path` a directory of trainings (WORKDIR/checkpoints) rather than a training?"""
    path = Path(path)
    if not path.is_dir() or (path / "model.json").is_file():
        return False
    return any(d.is_dir() and (d / "model.json").is_file() for d in path.iterdir())


def _describe(training: Path) -> str:
    if not has_trained_model(training):
        return f"{training.name} (no checkpoint yet)"
    saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(_last_saved(training)))
    return f"{training.name} (saved {saved})"


def resolve_trained(path: Path, flag: str = "--checkpoint_dir") -> Path:
    """The trained model a user means by `path`: the training itself, or the newest under it.

    Raises NoTrainedModelError listing the trainings `path` holds (if any) otherwise.
    """
    path = Path(path)
    if has_trained_model(path):
        return path
    found = trainings(path)
    if found:
        if len(found) > 1:
            others = ", ".join(_describe(d) for d in found[:-1])
            log.info(
                "%s holds %d trainings; using the newest, %s (the others: %s; %s PATH/NAME "
                "chooses one)",
                *(path, len(found), found[-1].name, others, flag),
            )
        return found[-1]
    raise NoTrainedModelError(no_trained_model_message(path, flag))


def no_trained_model_message(path: Path, flag: str = "--checkpoint_dir") -> str:
    """Why `path` has no trained model, the trainings it (or its parent) holds, what to do."""
    path = Path(path)
    if (path / "model.json").is_file():
        what = "its training has not saved a checkpoint yet"
    elif not path.is_dir():
        what = "it does not exist" if not path.exists() else "it is not a directory"
    elif started := [d for d in sorted(path.iterdir()) if (d / "model.json").is_file()]:
        what = "none of its trainings has a checkpoint yet: " + ", ".join(map(_describe, started))
    else:
        what = "it is neither a training (model.json and checkpoints) nor a directory of them"
    beside = [d for d in trainings(path.parent) if d != path]
    listed = ", ".join(map(_describe, beside))
    listed = f" Trainings in {path.parent}: {listed}." if listed else ""
    return (
        f"no trained model in {path}: {what}.{listed} Train one first (deepspeech-flow train "
        f"...), or give {flag} a training directory (WORKDIR/checkpoints/<name>) or the "
        "directory holding them (WORKDIR/checkpoints: its newest training is used)."
    )
