"""The train stage: DeepSpeech's training loop, resumable at the next batch.

Read top to bottom: `train` sets up (model, optimizer, checkpoint state, resume),
then runs epochs; `_train_epoch` runs the batches of one epoch's plan that were not
yet trained on; `dev_loss` evaluates. State saved in every checkpoint: weights,
optimizer slots, dropout RNG state, global step, the step at which the current epoch
began, completed epochs and the best dev loss. Per-epoch losses go to history.json.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepspeech_core.alphabet import Alphabet
from deepspeech_core.augmentation import AugmentationPlan, parse_augmentations, split_specs
from deepspeech_core.checkpoints import (
    ModelSpec,
    check_compatible,
    read_spec,
    tracked_state,
    write_spec,
)
from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig
from deepspeech_core.dataset import Batch, SplitIndex, batch_plan, batch_signature, make_dataset
from deepspeech_core.io_utils import atomic_write_json
from deepspeech_core.losses import ctc_loss_per_sample, make_eval_step
from deepspeech_core.manifests import FeatureCacheManifest, TrainedModelManifest

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on; the message names the cause and the clips involved."""


@dataclass(frozen=True)
class Progress:
    """What a caller (a Prefect task, a test) is told after every step."""

    epoch: int
    step: int
    total_steps: int
    loss: float
    audio_seconds_per_second: float


ProgressCallback = Callable[[Progress], None]


def make_optimizer(cfg: TrainingConfig) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate=cfg.learning_rate, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=cfg.epsilon
    )


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, n_input: int):
    """One compiled optimisation step; shapes are dynamic so it is traced once."""

    @tf.function(input_signature=[batch_signature(n_input)])
    def train_step(batch: Batch) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(batch.features, training=True)
            loss = tf.reduce_mean(
                ctc_loss_per_sample(
                    batch.labels, batch.label_lengths, logits, batch.feature_lengths
                )
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return train_step


def dev_loss(eval_step, index: SplitIndex, batch_size: int, n_input: int) -> float:
    """Mean per-clip CTC loss over a split."""
    total, count = 0.0, 0
    for batch in make_dataset(index, batch_plan(index.n_frames, batch_size), n_input):
        losses = eval_step(batch)[1].numpy()
        total += float(losses.sum())
        count += len(losses)
    return total / max(count, 1)


class _State:
    """Counters saved with every checkpoint (tf.Variables so tf.train.Checkpoint holds them)."""

    def __init__(self) -> None:
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.epoch_start_step = tf.Variable(0, dtype=tf.int64, name="epoch_start_step")
        self.completed_epochs = tf.Variable(0, dtype=tf.int64, name="completed_epochs")
        self.best_dev_loss = tf.Variable(math.inf, dtype=tf.float64, name="best_dev_loss")
        # Sum of this epoch's batch losses, so a resumed epoch reports its whole mean.
        self.epoch_loss_sum = tf.Variable(0.0, dtype=tf.float64, name="epoch_loss_sum")

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch_start_step": self.epoch_start_step,
            "completed_epochs": self.completed_epochs,
            "best_dev_loss": self.best_dev_loss,
            "epoch_loss_sum": self.epoch_loss_sum,
        }

    def epoch_mean_loss(self) -> float:
        steps = int(self.step.numpy() - self.epoch_start_step.numpy())
        return float(self.epoch_loss_sum.numpy()) / steps if steps else float("nan")


class _Saver:
    """Periodic and best-dev checkpoint managers plus the save-every-N rule."""

    def __init__(self, ckpt: tf.train.Checkpoint, checkpoint_dir: Path, cfg: TrainingConfig):
        self.periodic = tf.train.CheckpointManager(
            ckpt, str(checkpoint_dir / "train"), max_to_keep=cfg.max_to_keep
        )
        self.best = tf.train.CheckpointManager(ckpt, str(checkpoint_dir / "best"), max_to_keep=1)
        self.cfg = cfg
        self.last_save = time.monotonic()

    def save(self, step: int) -> str:
        self.last_save = time.monotonic()
        return self.periodic.save(checkpoint_number=step)

    def maybe_save(self, step: int) -> None:
        due_steps = step % self.cfg.checkpoint_steps == 0
        due_secs = time.monotonic() - self.last_save >= self.cfg.checkpoint_secs
        if due_steps or due_secs:
            path = self.save(step)
            log.info("checkpoint at step %d: %s", step, path)


def _load_history(path: Path, completed_epochs: int) -> dict[str, list[float]]:
    """Per-epoch losses, trimmed to the epochs the restored checkpoint had completed."""
    if not path.is_file():
        return {"train_loss": [], "dev_loss": []}
    data = json.loads(path.read_text())
    return {k: list(data.get(k, []))[:completed_epochs] for k in ("train_loss", "dev_loss")}


def _check_finite(loss: float, batch: Batch, ids: np.ndarray, index: SplitIndex) -> None:
    if not math.isfinite(loss):
        clips = [index.wav_filenames[i] for i in ids]
        raise TrainingError(
            f"CTC loss is {loss} on a batch of {clips}; check these clips' audio and "
            "transcripts (a transcript too long for its audio gives infinite loss)"
        )


def train(
    feature_manifest: FeatureCacheManifest,
    model_cfg: ModelConfig,
    feature_cfg: FeatureConfig,
    cfg: TrainingConfig,
    checkpoint_dir: Path,
    on_progress: ProgressCallback | None = None,
) -> TrainedModelManifest:
    """Train (or continue training) until `cfg.epochs` epochs are complete."""
    started = time.monotonic()
    checkpoint_dir = Path(checkpoint_dir)
    alphabet = Alphabet.load(feature_manifest.alphabet_path)
    spec = ModelSpec(alphabet, feature_cfg, model_cfg)
    existing = read_spec(checkpoint_dir)
    if existing is not None:
        check_compatible(existing, spec, checkpoint_dir)
    if "train" not in feature_manifest.indexes:
        raise TrainingError("no training split: give --corpus or --train_files to train")
    train_index = SplitIndex.load(feature_manifest.indexes["train"], alphabet)
    if "train_augmented" in feature_manifest.indexes:  # sample-augmented copies of clips
        extra = SplitIndex.load(feature_manifest.indexes["train_augmented"], alphabet)
        log.info("training on %d clips plus %d augmented copies", len(train_index), len(extra))
        train_index = train_index.concat(extra)
    dev_index = (
        SplitIndex.load(feature_manifest.indexes["dev"], alphabet)
        if "dev" in feature_manifest.indexes
        else None
    )

    # Seed everything first: the initial weights and dropout masks follow from the seed.
    keras.utils.set_random_seed(cfg.seed)
    model = spec.build()
    optimizer = make_optimizer(cfg)
    optimizer.build(model.trainable_variables)
    state = _State()
    ckpt = tracked_state(model, optimizer, **state.as_dict())
    saver = _Saver(ckpt, checkpoint_dir, cfg)

    # Resume: the newest periodic checkpoint holds everything needed to continue.
    resumed_from = 0
    if saver.periodic.latest_checkpoint:
        ckpt.restore(saver.periodic.latest_checkpoint).assert_existing_objects_matched()
        resumed_from = int(state.step.numpy())
        log.info(
            "resuming from %s: step %d, %d epoch(s) complete",
            saver.periodic.latest_checkpoint,
            resumed_from,
            int(state.completed_epochs.numpy()),
        )
    write_spec(checkpoint_dir, spec)
    optimizer.learning_rate.assign(cfg.learning_rate)
    history = _load_history(checkpoint_dir / "history.json", int(state.completed_epochs.numpy()))

    train_step = make_train_step(model, optimizer, feature_cfg.n_input)
    # Sample-domain augmentations were applied by the features stage (an augmented copy).
    augmentations = tuple(parse_augmentations(split_specs(cfg.augment)[1]))
    eval_step = make_eval_step(model, feature_cfg.n_input)
    steps_per_epoch = math.ceil(len(train_index) / cfg.train_batch_size)
    total_steps = cfg.epochs * steps_per_epoch

    while int(state.completed_epochs.numpy()) < cfg.epochs:
        epoch = int(state.completed_epochs.numpy())
        plan = batch_plan(train_index.n_frames, cfg.train_batch_size, seed=cfg.seed, epoch=epoch)
        start = int(state.step.numpy() - state.epoch_start_step.numpy())
        if start:
            log.info("epoch %d: continuing at batch %d of %d", epoch, start, len(plan))
        augment = AugmentationPlan(
            augmentations, cfg.seed, epoch, cfg.epochs, len(plan), feature_cfg.feature_win_step
        )
        _train_epoch(
            train_step,
            train_index,
            plan,
            augment,
            start,
            state,
            saver,
            feature_cfg,
            epoch,
            total_steps,
            on_progress,
        )
        train_loss = state.epoch_mean_loss()
        # Epoch end: dev loss, history, best model, then a checkpoint that marks it done.
        history["train_loss"].append(train_loss)
        if dev_index is not None:
            loss = dev_loss(eval_step, dev_index, cfg.dev_batch_size, feature_cfg.n_input)
            history["dev_loss"].append(loss)
            log.info("epoch %d: train loss %.3f, dev loss %.3f", epoch, train_loss, loss)
        else:
            loss = train_loss
            log.info("epoch %d: train loss %.3f (no dev split)", epoch, train_loss)
        state.completed_epochs.assign_add(1)
        state.epoch_start_step.assign(state.step)
        state.epoch_loss_sum.assign(0.0)
        atomic_write_json(checkpoint_dir / "history.json", history)
        if loss < float(state.best_dev_loss.numpy()):
            state.best_dev_loss.assign(loss)
            saver.best.save(checkpoint_number=int(state.step.numpy()))
            log.info("epoch %d: new best dev loss %.3f", epoch, loss)
        saver.save(int(state.step.numpy()))

    if not saver.periodic.latest_checkpoint:  # epochs=0: still leave a loadable model
        saver.save(int(state.step.numpy()))
    return TrainedModelManifest(
        checkpoint_dir=checkpoint_dir,
        best_checkpoint=Path(saver.best.latest_checkpoint)
        if saver.best.latest_checkpoint
        else None,
        last_checkpoint=Path(saver.periodic.latest_checkpoint),
        steps=int(state.step.numpy()),
        epochs=int(state.completed_epochs.numpy()),
        resumed_from_step=resumed_from,
        train_loss_history=history["train_loss"],
        dev_loss_history=history["dev_loss"],
        seconds=round(time.monotonic() - started, 2),
    )


def _train_epoch(
    train_step,
    index: SplitIndex,
    plan: list[np.ndarray],
    augment: AugmentationPlan,
    start: int,
    state: _State,
    saver: _Saver,
    feature_cfg: FeatureConfig,
    epoch: int,
    total_steps: int,
    on_progress: ProgressCallback | None,
) -> None:
    """Train on plan[start:], the batches of this epoch not yet trained on."""
    audio_seconds, t0, last_log = 0.0, time.monotonic(), time.monotonic()
    remaining = plan[start:]
    for ids, batch in zip(
        remaining, make_dataset(index, remaining, feature_cfg.n_input, augment, start), strict=True
    ):
        loss = float(train_step(batch).numpy())
        _check_finite(loss, batch, ids, index)
        state.epoch_loss_sum.assign_add(loss)
        state.step.assign_add(1)
        step = int(state.step.numpy())
        audio_seconds += float(index.durations[ids].sum())
        speed = audio_seconds / max(time.monotonic() - t0, 1e-9)
        saver.maybe_save(step)
        if time.monotonic() - last_log >= 15:
            last_log = time.monotonic()
            log.info(
                "epoch %d step %d/%d loss %.3f (%.0f audio-s/s)",
                epoch,
                step,
                total_steps,
                loss,
                speed,
            )
        if on_progress is not None:
            on_progress(Progress(epoch, step, total_steps, loss, speed))
