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
from typing import Any, Literal

import pandas as pd

from deepspeech_core.config import PipelineConfig
from deepspeech_core.export import store
from deepspeech_core.manifests import FeatureCacheManifest
from deepspeech_core.workdir.atomic_files import text_sha256

log = logging.getLogger(__name__)

TRAINING_SPLITS = ("train", "train_augmented", "dev")


class NoTrainedModelError(ValueError):
    """No trained model where one was asked for; the message lists what is there."""


def has_trained_model(checkpoint_dir: Path) -> bool:
    """True when `checkpoint_dir` holds a model description and at least one checkpoint,
    or is a DeepSpeech 0.9.x checkpoint directory (evaluated as it is)."""
    from deepspeech_core.model.deepspeech_checkpoint import is_deepspeech_checkpoint

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


# --- which training a run uses: decisions the train-cv flow only applies ----------------

RetrainFrom = Literal["current", "scratch"]


def with_training(config: PipelineConfig, **fields: Any) -> PipelineConfig:
    """A copy of `config` with these training settings changed."""
    training = config.training.model_copy(update=fields)
    return config.model_copy(update={"training": training})


def given_trainings_root(config: PipelineConfig) -> Path | None:
    """The --checkpoint_dir when it names a directory of trainings rather than a training."""
    given = config.training.checkpoint_dir
    if given is not None and (given == config.workdir / "checkpoints" or is_trainings_root(given)):
        return given
    return None


def resolve_trainings_roots(config: PipelineConfig, reuse_trained_model: bool) -> PipelineConfig:
    """A parent `checkpoints/` directory given where a training is meant: its newest training.

    For --load_checkpoint_dir always; for --checkpoint_dir when an existing model is
    evaluated or exported (training into a parent trains into its subdirectory for the
    data, see `run_checkpoint_dir`). Done before validation, which takes the alphabet
    from the training. Raises NoTrainedModelError, before any work, when a model is to
    be reused and there is none.
    """
    load = config.training.load_checkpoint_dir
    if load is not None and is_trainings_root(load):
        config = with_training(
            config, load_checkpoint_dir=resolve_trained(load, "--load_checkpoint_dir")
        )
    if not reuse_trained_model:
        return config
    root = given_trainings_root(config)
    if root is not None and is_trainings_root(root):
        return with_training(config, checkpoint_dir=resolve_trained(root))
    where = config.training.checkpoint_dir or config.workdir / "checkpoints"
    if not (has_trained_model(where) or trainings(where)):
        raise NoTrainedModelError(no_trained_model_message(where))
    return config


def run_checkpoint_dir(
    config: PipelineConfig, features: FeatureCacheManifest, reuse_trained_model: bool
) -> Path:
    """The training's directory: the user's --checkpoint_dir, else one per training data.

    A --checkpoint_dir that holds trainings (WORKDIR/checkpoints) is their root, as the
    default is. A root that is itself a training is a work directory from before
    per-data trainings: it is used as it is. Evaluating or exporting without training
    data (e.g. only --test_files) uses the newest training under the root.
    """
    given = config.training.checkpoint_dir
    if given is not None and given_trainings_root(config) is None:
        return given
    root = given or config.workdir / "checkpoints"
    if has_trained_model(root):  # the older layout: one training directly in checkpoints/
        return root
    own = checkpoint_dir_for(root, features)
    if reuse_trained_model and not has_trained_model(own):
        return latest_trained(root) or own
    return own


def warm_start_source(config: PipelineConfig, retrain_from: RetrainFrom) -> Path | None:
    """The exported model a new training starts from, or None (scratch, transfer, resume).

    A new training (its checkpoint directory has no model yet) starts from the exported
    model in use unless told to start from scratch or given --load_checkpoint_dir.
    """
    current = store.current(config.export_dir)
    if (
        retrain_from == "scratch"
        or current is None
        or config.training.load_checkpoint_dir is not None
        or has_trained_model(config.checkpoint_dir)
    ):
        return None
    return current / "checkpoint"


def alphabet_for(config: PipelineConfig, from_current_export: bool = True) -> Path | None:
    """The alphabet to validate against: the configured one, else an existing model's.

    A model fixes the characters it can write, so continuing it (a checkpoint directory
    given by the user, or the exported model a retraining warm-starts from) must not
    derive a different alphabet from new data; a training from scratch derives its own.
    Fine-tuning (--load_checkpoint_dir without --drop_source_layers, e.g. DeepSpeech's
    release checkpoint) keeps the source model's alphabet.
    """
    if config.corpus.alphabet_config_path is not None:
        return config.corpus.alphabet_config_path
    candidates = [config.checkpoint_dir / "alphabet.txt"]
    source = config.training.load_checkpoint_dir
    if source is not None and config.training.drop_source_layers == 0:
        candidates.append(source / "alphabet.txt")
    current = store.current(config.export_dir)
    if from_current_export and current is not None:
        candidates.append(current / "alphabet.txt")
    return next((p for p in candidates if p.is_file()), None)
