"""Where a training lives: one checkpoint directory per training data set.

    WORKDIR/checkpoints/<training data fingerprint>/   model.json, train/, best/, ...

The fingerprint covers the train and dev clips (content hashes and transcripts), not
the test files, so: running again on the same data resumes the same training (crash
recovery, more epochs); a corpus that grew (a scheduled retraining) starts a new one,
warm-started from the exported model in use or from scratch, and the previous one stays
untouched. A --checkpoint_dir given by the user is used as it is (DeepSpeech's meaning).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deepspeech_core.io_utils import text_sha256
from deepspeech_core.manifests import FeatureCacheManifest

TRAINING_SPLITS = ("train", "train_augmented", "dev")


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


def latest_trained(root: Path) -> Path | None:
    """The most recently written training under `root` that has a model."""
    root = Path(root)
    if not root.is_dir():
        return None
    trained = [d for d in root.iterdir() if d.is_dir() and has_trained_model(d)]
    return max(trained, key=lambda d: (d / "model.json").stat().st_mtime, default=None)
