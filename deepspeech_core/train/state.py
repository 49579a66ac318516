"""What a training checkpoint holds besides the weights, and how it is saved and found.

Counters are tf.Variables so that tf.train.Checkpoint saves them with the weights, the
optimizer (its slots and learning rate) and the dropout RNG state, in one atomic save.
Two managers, two meanings: `train/` holds the newest checkpoints (resume), `best/` the
one with the lowest dev loss (evaluate, export).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepspeech_core.config import TrainingConfig
from deepspeech_core.workdir.atomic_files import fsync_dir, fsync_file

log = logging.getLogger(__name__)


class CheckpointStateError(RuntimeError):
    """No usable checkpoint where one was required; says what to do."""


def _step_of(index_file: Path) -> int:
    digits = index_file.name.removeprefix("ckpt-").removesuffix(".index")
    return int(digits) if digits.isdigit() else -1


def check_state_file(directory: Path) -> None:
    """Refuse a directory whose state file is gone or damaged while ckpt-* files remain.

    TensorFlow finds checkpoints only through the `checkpoint` state file; without it a
    training would silently start again at step 0 and overwrite the checkpoints it
    cannot see. The message names the file and the one line that restores it.
    """
    directory = Path(directory)
    found = sorted(directory.glob("ckpt-*.index"), key=_step_of)
    if not found:
        return
    try:
        listed = tf.train.get_checkpoint_state(str(directory))
    except (ValueError, tf.errors.OpError):  # an empty or truncated state file
        listed = None
    # CheckpointManager pairs paths with timestamps: a list without them lists nothing.
    if listed is not None and min(
        len(listed.all_model_checkpoint_paths), len(listed.all_model_checkpoint_timestamps)
    ):
        return
    state = directory / "checkpoint"
    problem = "is missing" if not state.exists() else "is damaged (empty or unreadable)"
    newest = found[-1].name.removesuffix(".index")
    raise CheckpointStateError(
        f"{state} {problem}, but {directory} holds {len(found)} checkpoint(s) up to {newest}: "
        f"training now would restart at step 0 and overwrite them. To continue from "
        f"{newest}, write these three lines into {state}:\n"
        f'model_checkpoint_path: "{newest}"\n'
        f'all_model_checkpoint_paths: "{newest}"\n'
        "all_model_checkpoint_timestamps: 0\n"
        "or, to start afresh, move the ckpt-* files away."
    )


def sync_checkpoint(prefix: str) -> None:
    """fsync a saved checkpoint's files and its directory's state file: durable once counted."""
    directory = Path(prefix).parent
    for path in [*directory.glob(Path(prefix).name + ".*"), directory / "checkpoint"]:
        if path.is_file():
            fsync_file(path)
    fsync_dir(directory)


class TrainState:
    """Training counters saved in every checkpoint."""

    def __init__(self) -> None:
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.epoch_start_step = tf.Variable(0, dtype=tf.int64, name="epoch_start_step")
        self.completed_epochs = tf.Variable(0, dtype=tf.int64, name="completed_epochs")
        self.best_dev_loss = tf.Variable(math.inf, dtype=tf.float64, name="best_dev_loss")
        # Sum of this epoch's batch losses, so a resumed epoch reports its whole mean.
        self.epoch_loss_sum = tf.Variable(0.0, dtype=tf.float64, name="epoch_loss_sum")
        self.epoch_good_steps = tf.Variable(0, dtype=tf.int64, name="epoch_good_steps")
        self.bad_batches = tf.Variable(0, dtype=tf.int64, name="bad_batches")
        self.es_counter = tf.Variable(0, dtype=tf.int64, name="es_counter")
        self.plateau_counter = tf.Variable(0, dtype=tf.int64, name="plateau_counter")
        self.stopped_early = tf.Variable(False, name="stopped_early")

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if isinstance(v, tf.Variable)}

    def int(self, name: str) -> int:
        return int(getattr(self, name).numpy())

    def epoch_mean_loss(self) -> float:
        steps = self.int("epoch_good_steps")
        return float(self.epoch_loss_sum.numpy()) / steps if steps else float("nan")

    def start_epoch(self) -> None:
        self.epoch_start_step.assign(self.step)
        self.epoch_loss_sum.assign(0.0)
        self.epoch_good_steps.assign(0)


class CheckpointSaver:
    """Periodic and best-dev managers, the save-every-N-steps/seconds rule, restore."""

    def __init__(
        self,
        ckpt: tf.train.Checkpoint,
        checkpoint_dir: Path,
        cfg: TrainingConfig,
        weights: list,
        read_dir: Path | None = None,
        time_based: bool = True,
    ) -> None:
        self.ckpt = ckpt
        for directory in {
            Path(d) / sub
            for d in (checkpoint_dir, read_dir or checkpoint_dir)
            for sub in ("train", "best")
        }:
            check_state_file(directory)
        self.periodic = tf.train.CheckpointManager(
            ckpt, str(checkpoint_dir / "train"), max_to_keep=cfg.max_to_keep
        )
        self.best = tf.train.CheckpointManager(ckpt, str(checkpoint_dir / "best"), max_to_keep=1)
        # Where to resume from: the same directory, or (multi-worker) the chief's.
        read_dir = Path(read_dir or checkpoint_dir)
        same = read_dir == Path(checkpoint_dir)
        self.read_periodic = (
            self.periodic
            if same
            else tf.train.CheckpointManager(
                ckpt, str(read_dir / "train"), max_to_keep=cfg.max_to_keep
            )
        )
        self.read_best = (
            self.best
            if same
            else tf.train.CheckpointManager(ckpt, str(read_dir / "best"), max_to_keep=1)
        )
        self.cfg = cfg
        self.weights = weights
        self.time_based = time_based
        self.last_save = time.monotonic()

    def _check_finite(self) -> None:
        """A NaN is never written into a checkpoint."""
        for v in self.weights:
            if not np.all(np.isfinite(v.numpy())):
                raise FloatingPointError(f"{v.path} holds inf/NaN; refusing to save it")

    def save(self, step: int) -> str:
        self._check_finite()
        self.last_save = time.monotonic()
        prefix = self.periodic.save(checkpoint_number=step)
        sync_checkpoint(prefix)
        return prefix

    def save_best(self, step: int) -> str:
        self._check_finite()
        prefix = self.best.save(checkpoint_number=step)
        sync_checkpoint(prefix)
        return prefix

    def maybe_save(self, step: int) -> str | None:
        due_steps = step % self.cfg.checkpoint_steps == 0
        due_secs = self.time_based and (
            time.monotonic() - self.last_save >= self.cfg.checkpoint_secs
        )
        return self.save(step) if due_steps or due_secs else None

    def has_checkpoints(self) -> bool:
        return bool(self.read_periodic.checkpoints or self.read_best.checkpoints)

    def restore(self, load_train: str) -> str | None:
        """Restore per DeepSpeech's --load_train; returns the checkpoint used (None: fresh).

        A checkpoint that cannot be read (truncated, corrupt) is skipped with a warning
        and the next older one is tried.
        """
        if load_train == "init":
            if self.has_checkpoints():
                raise CheckpointStateError(
                    f"--load_train init: {Path(self.periodic.directory).parent} already holds "
                    "checkpoints; use another --checkpoint_dir to start fresh, or "
                    "--load_train auto to continue"
                )
            return None
        order = {
            "auto": [self.read_periodic, self.read_best],
            "last": [self.read_periodic],
            "best": [self.read_best],
        }[load_train]
        candidates = [p for m in order for p in reversed(m.checkpoints)]
        for path in candidates:
            try:
                self.ckpt.restore(path).assert_existing_objects_matched()
                self._check_finite()
            except (
                tf.errors.OpError,
                AssertionError,
                ValueError,
                FloatingPointError,
                IndexError,
                OSError,
            ) as exc:  # each is how TensorFlow reports a truncated or corrupt file
                log.warning(
                    "checkpoint %s is unusable (%s); trying the one before it",
                    path,
                    str(exc).splitlines()[0][:200],
                )
                continue
            return path
        if candidates:
            raise CheckpointStateError(
                f"none of the {len(candidates)} checkpoints in {self.periodic.directory} could "
                "be read; move them away to start fresh"
            )
        if load_train in ("best", "last"):
            raise CheckpointStateError(
                f"--load_train {load_train}: no such checkpoint in "
                f"{Path(self.periodic.directory).parent}"
            )
        return None
