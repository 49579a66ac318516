"""The train stage: DeepSpeech's training loop, resumable at the next batch.

Read top to bottom: `train` prepares (devices, lock, model, optimizer, resume), then
runs epochs; `_train_epoch` runs the batches of one epoch's plan that were not yet
trained on; `_end_epoch` evaluates dev loss and applies best-model, early-stop and
plateau rules. Everything a restart needs is in the checkpoint (see training_state).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from deepspeech_core import progress, stopping
from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig, recipe_record
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.evaluate.decoders import GreedyDecoder
from deepspeech_core.evaluate.error_rates import corpus_error_rates
from deepspeech_core.features.augmentation import AugmentationPlan, parse_augmentations, split_specs
from deepspeech_core.features.batches import (
    Batch,
    SplitIndex,
    batch_plan,
    batch_signature,
    make_dataset,
)
from deepspeech_core.features.normalization import training_statistics
from deepspeech_core.manifests import FeatureCacheManifest, TrainedModelManifest
from deepspeech_core.model.checkpoints import (
    RECIPE_FILE,
    ModelSpec,
    check_compatible,
    read_spec,
    refuse_deepspeech_checkpoint_dir,
    tracked_state,
    transfer_weights,
    write_spec,
)
from deepspeech_core.model.ctc_loss import ctc_loss_per_sample, make_eval_step
from deepspeech_core.model.network import set_feature_statistics
from deepspeech_core.train.devices import DeviceReport, preflight, warn_if_model_on_cpu
from deepspeech_core.train.gpu_monitor import GpuMonitor, check_gpu_agreement, record_attempt
from deepspeech_core.train.state import CheckpointSaver, TrainState
from deepspeech_core.workdir.atomic_files import atomic_write_json, read_json_or_none
from deepspeech_core.workdir.locking import training_lock

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
    gpu: str = ""  # the GPU monitor's latest sample, `GPU0 97% 31.2/80 GB`; '' without one


ProgressCallback = Callable[[Progress], None]


def make_optimizer(cfg: TrainingConfig, loss_scaling: bool = False) -> keras.optimizers.Optimizer:
    adam = keras.optimizers.Adam(
        learning_rate=cfg.learning_rate, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=cfg.epsilon
    )
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
    return keras.optimizers.LossScaleOptimizer(adam) if loss_scaling else adam


def make_strategy(distribute: str, devices) -> tf.distribute.Strategy:
    """tf.distribute for several devices: all GPUs, or (no GPU) all logical CPU devices.

    `auto` mirrors over GPUs when there is more than one; `mirrored` always mirrors;
    `none` keeps TensorFlow's default single-device strategy.
    """
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if distribute == "none" or (distribute == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    strategy = tf.distribute.MirroredStrategy(gpus or cpus)
    log.info("training on %d replicas: %s", strategy.num_replicas_in_sync, ", ".join(gpus or cpus))
    return strategy


def mixed_precision_policy(enabled: bool, devices) -> str | None:
    """--automatic_mixed_precision: float16 on a GPU (tensor cores), bfloat16 on a CPU."""
    if not enabled:
        return None
    policy = "mixed_float16" if devices.gpus else "mixed_bfloat16"
    log.info("automatic mixed precision: %s", policy)
    return policy


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    n_input: int,
    strategy: tf.distribute.Strategy | None = None,
    state: TrainState | None = None,
):
    """One compiled optimisation step, traced once (dynamic shapes).

    Each replica (one per device under tf.distribute; one in all without it) takes
    every n-th clip of the batch and sums its clips' losses over the global batch size,
    so the summed gradients are those of the batch mean, whatever the device count.
    Returns (loss, applied): a batch whose loss or gradients are not finite leaves the
    weights and optimizer untouched (applied=False), so a bad clip can never poison the
    model or a checkpoint. With `state`, the step counter and the epoch's loss sum are
    updated inside the graph too: per-step Python round trips are what bound small
    models (batch size 1 especially).
    """
    strategy = strategy or tf.distribute.get_strategy()
    SUM = tf.distribute.ReduceOp.SUM

    def replica_step(batch: Batch):
        ctx = tf.distribute.get_replica_context()
        rows = tf.range(
            ctx.replica_id_in_sync_group, tf.shape(batch.features)[0], ctx.num_replicas_in_sync
        )
        part = Batch(*(tf.gather(t, rows) for t in batch))
        global_size = tf.cast(tf.shape(batch.features)[0], tf.float32)
        with tf.GradientTape() as tape:
            logits = model(part.features, training=True)
            per_clip = ctc_loss_per_sample(
                part.labels, part.label_lengths, logits, part.feature_lengths
            )
            loss = tf.reduce_sum(per_clip) / global_size
            scaled = optimizer.scale_loss(loss)  # identity unless loss scaling is on
        return loss, tape.gradient(scaled, model.trainable_variables)

    @tf.function(input_signature=[batch_signature(n_input)])
    def train_step(batch: Batch) -> tuple[tf.Tensor, tf.Tensor]:
        losses, grads = strategy.run(replica_step, args=(batch,))
        loss = strategy.reduce(SUM, losses, axis=None)
        grads = [strategy.reduce(SUM, g, axis=None) for g in grads]
        finite = tf.math.is_finite(loss)
        for g in grads:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))

        def apply() -> tf.Tensor:
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return tf.constant(True)

        applied = tf.cond(finite, apply, lambda: tf.constant(False))
        if state is not None:
            state.step.assign_add(1)
            state.epoch_loss_sum.assign_add(tf.where(applied, tf.cast(loss, tf.float64), 0.0))
            state.epoch_good_steps.assign_add(tf.cast(applied, tf.int64))
        return loss, applied

    return train_step


def dev_scores(
    eval_step, index: SplitIndex, batch_size: int, n_input: int, decoder: GreedyDecoder | None
) -> tuple[float, float | None]:
    """(mean per-clip CTC loss, greedy WER or None without a decoder) over a split.

    Non-finite clips are left out of the loss and logged. Greedy decoding costs little
    beside the forward pass it shares with the loss.
    """
    total, count, bad = 0.0, 0, 0
    plan = batch_plan(index.n_frames, batch_size)
    texts = [""] * len(index)
    for ids, batch in zip(plan, make_dataset(index, plan, n_input), strict=True):
        stopping.check("training")  # a stop need not wait for the whole dev pass
        logits, losses = (t.numpy() for t in eval_step(batch))
        finite = np.isfinite(losses)
        bad += int((~finite).sum())
        total += float(losses[finite].sum())
        count += int(finite.sum())
        if decoder is not None:
            lengths = batch.feature_lengths.numpy()
            for j, clip in enumerate(ids):
                texts[clip] = decoder.decode(logits[j, : lengths[j]])
    if bad:
        log.warning("%d dev clip(s) had a non-finite loss and were left out of dev loss", bad)
    wer = corpus_error_rates(index.transcripts, texts)[0] if decoder is not None else None
    return total / max(count, 1), wer


def _load_index(manifest: FeatureCacheManifest, alphabet: Alphabet) -> SplitIndex:
    if "train" not in manifest.indexes:
        raise TrainingError("no training split: give --corpus or --train_files to train")
    index = SplitIndex.load(manifest.indexes["train"], alphabet)
    if "train_augmented" in manifest.indexes:  # sample-augmented copies of clips
        extra = SplitIndex.load(manifest.indexes["train_augmented"], alphabet)
        log.info("training on %d clips plus %d augmented copies", len(index), len(extra))
        index = index.concat(extra)
    return index


def train(
    feature_manifest: FeatureCacheManifest,
    model_cfg: ModelConfig,
    feature_cfg: FeatureConfig,
    cfg: TrainingConfig,
    checkpoint_dir: Path,
    on_progress: ProgressCallback | None = None,
    tensorboard_dir: Path | None = None,
    nvml: Any = None,
) -> TrainedModelManifest:
    """Train (or continue training) until `cfg.epochs` epochs are complete.

    With `distribute="multi_worker"`, every host runs this with its TF_CONFIG: all
    resume from CHECKPOINT_DIR (a shared filesystem); the chief writes there, the
    others into CHECKPOINT_DIR/.worker-N, as tf.distribute requires every worker to save.
    `nvml` is the NVML module of the GPU monitor (default: pynvml, when installed).
    """
    checkpoint_dir = Path(checkpoint_dir)
    refuse_deepspeech_checkpoint_dir(checkpoint_dir)
    # MultiWorkerMirroredStrategy must exist before TensorFlow initialises its devices.
    early = (
        tf.distribute.MultiWorkerMirroredStrategy() if cfg.distribute == "multi_worker" else None
    )
    tf_gpus = [g.name for g in tf.config.list_physical_devices("GPU")]
    check_gpu_agreement(tf_gpus, cfg.require_gpu, nvml)
    devices = preflight(cfg.require_gpu, cfg.gpu_memory_growth)
    strategy = early or make_strategy(cfg.distribute, devices)
    write_dir = _write_dir(strategy, checkpoint_dir)
    tensorboard_dir = tensorboard_dir or checkpoint_dir.parent / "tensorboard"
    place = _Placement(
        devices,
        strategy,
        checkpoint_dir,
        write_dir,
        tensorboard_dir if write_dir == checkpoint_dir else write_dir / "tensorboard",
        nvml,
    )
    with training_lock(write_dir):
        return _train_locked(feature_manifest, model_cfg, feature_cfg, cfg, place, on_progress)


@dataclass(frozen=True)
class _Placement:
    """Where this process computes and what it reads and writes."""

    devices: DeviceReport
    strategy: tf.distribute.Strategy
    checkpoint_dir: Path  # resume from here (shared by all workers)
    write_dir: Path  # save here: checkpoint_dir, except on non-chief workers
    tensorboard_dir: Path
    nvml: Any = None  # the GPU monitor's NVML module (None: pynvml)


def _write_dir(strategy: tf.distribute.Strategy, checkpoint_dir: Path) -> Path:
    """Where this process writes checkpoints: the chief (or a lone process) the real dir."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0)
    return checkpoint_dir if chief else checkpoint_dir / f".worker-{task_id}"


def _train_locked(
    feature_manifest: FeatureCacheManifest,
    model_cfg: ModelConfig,
    feature_cfg: FeatureConfig,
    cfg: TrainingConfig,
    place: _Placement,
    on_progress: ProgressCallback | None,
) -> TrainedModelManifest:
    started = time.monotonic()
    checkpoint_dir, write_dir = place.checkpoint_dir, place.write_dir
    devices, strategy = place.devices, place.strategy
    alphabet = Alphabet.load(feature_manifest.alphabet_path)
    spec = ModelSpec(alphabet, feature_cfg, model_cfg)
    existing = read_spec(checkpoint_dir)
    if existing is not None:
        check_compatible(existing, spec, checkpoint_dir)
    train_index = _load_index(feature_manifest, alphabet)
    dev_index = (
        SplitIndex.load(feature_manifest.indexes["dev"], alphabet)
        if "dev" in feature_manifest.indexes
        else None
    )

    # Seed everything first: initial weights and dropout masks follow from the seed.
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.seed)
    policy = mixed_precision_policy(cfg.automatic_mixed_precision, devices)
    with strategy.scope():  # variables created here are mirrored on every replica
        model = spec.build(policy, seed=cfg.seed)
        optimizer = make_optimizer(cfg, loss_scaling=policy == "mixed_float16")
        optimizer.build(model.trainable_variables)
        state = TrainState()
    warn_if_model_on_cpu(devices, model.weights)
    ckpt = tracked_state(model, optimizer, **state.as_dict())
    saver = CheckpointSaver(
        ckpt,
        write_dir,
        cfg,
        model.weights,
        read_dir=checkpoint_dir,
        time_based=cfg.distribute != "multi_worker",  # workers must save at the same steps
    )

    # Resume: the checkpoint holds everything needed to continue at the next batch.
    restored = saver.restore(cfg.load_train)
    resumed_from = state.int("step")
    if restored:
        log.info(
            "resuming from %s: step %d, %d epoch(s) complete, learning rate %.3g",
            restored,
            resumed_from,
            state.int("completed_epochs"),
            float(optimizer.learning_rate.numpy()),
        )
    initialized_from, copied = None, []
    if not restored and cfg.load_checkpoint_dir is not None:
        initialized_from = Path(cfg.load_checkpoint_dir)
        copied = transfer_weights(model, spec, cfg.load_checkpoint_dir, cfg.drop_source_layers)
        log.info(
            "transfer learning from %s: copied %s, re-initialised the last %d layer(s)",
            cfg.load_checkpoint_dir,
            ", ".join(copied),
            cfg.drop_source_layers,
        )
    if model_cfg.feature_norm and not restored and "layer_1" not in copied:
        mean, std = training_statistics(train_index)  # resume/warm start keep theirs
        set_feature_statistics(model, mean, std)
        log.info("feature normalisation: statistics of %d training clips", len(train_index))
    if not restored or cfg.force_initialize_learning_rate:
        optimizer.learning_rate.assign(cfg.learning_rate)
    write_spec(write_dir, spec)
    recipe = recipe_record(cfg.recipe, model_cfg, cfg)
    if recipe is not None:
        atomic_write_json(write_dir / RECIPE_FILE, recipe)
    history = _load_history(checkpoint_dir / "history.json", state.int("completed_epochs"))

    loop = _Loop(
        train_step=make_train_step(model, optimizer, feature_cfg.n_input, strategy, state),
        eval_step=make_eval_step(model, feature_cfg.n_input),
        optimizer=optimizer,
        state=state,
        saver=saver,
        cfg=cfg,
        feature_cfg=feature_cfg,
        train_index=train_index,
        dev_index=dev_index,
        dev_decoder=GreedyDecoder(alphabet) if cfg.best_metric == "dev_wer" else None,
        history=history,
        checkpoint_dir=write_dir,
        on_progress=on_progress,
        writer=tf.summary.create_file_writer(str(place.tensorboard_dir)),
        augmentations=tuple(parse_augmentations(split_specs(cfg.augment)[1])),
        gpu=_gpu_monitor(cfg, place.nvml),
    )
    with loop.gpu:  # the playbook's nvtop, on a thread of its own
        loop.run()
    gpu_summary = loop.gpu.summary()
    if state.int("step") > resumed_from:
        record_attempt(write_dir, gpu_summary, (resumed_from, state.int("step")))

    if not saver.periodic.latest_checkpoint:  # epochs=0: still leave a loadable model
        saver.save(state.int("step"))
    return TrainedModelManifest(
        checkpoint_dir=checkpoint_dir,
        best_checkpoint=Path(saver.best.latest_checkpoint)
        if saver.best.latest_checkpoint
        else None,
        last_checkpoint=Path(saver.periodic.latest_checkpoint),
        steps=state.int("step"),
        epochs=state.int("completed_epochs"),
        resumed_from_step=resumed_from,
        initialized_from=initialized_from,
        train_loss_history=history["train_loss"],
        dev_loss_history=history["dev_loss"],
        dev_wer_history=history.get("dev_wer", []),
        seconds=round(time.monotonic() - started, 2),
        gpu=gpu_summary,
    )


def _gpu_monitor(cfg: TrainingConfig, nvml: Any) -> GpuMonitor:
    """The GPU monitor this training's settings ask for (started by the loop's caller)."""
    return GpuMonitor(
        nvml,
        interval=cfg.gpu_monitor_interval,
        idle_window=cfg.gpu_idle_window,
        idle_utilization=cfg.gpu_idle_utilization,
        # without memory growth TensorFlow reserves all memory at once: always "full"
        memory_warning=cfg.gpu_memory_warning if cfg.gpu_memory_growth else None,
    )


def _load_history(path: Path, completed_epochs: int) -> dict[str, list[float]]:
    """Per-epoch losses, trimmed to the epochs the restored checkpoint had completed."""
    data = read_json_or_none(path, "training history")
    if not isinstance(data, dict):
        return {"train_loss": [], "dev_loss": []}
    keys = ["train_loss", "dev_loss", *(["dev_wer"] if "dev_wer" in data else [])]
    return {k: list(data.get(k, []))[:completed_epochs] for k in keys}


@dataclass
class _Loop:
    """The epoch loop's collaborators, so each phase is a short method."""

    train_step: Callable
    eval_step: Callable
    optimizer: keras.optimizers.Optimizer
    state: TrainState
    saver: CheckpointSaver
    cfg: TrainingConfig
    feature_cfg: FeatureConfig
    train_index: SplitIndex
    dev_index: SplitIndex | None
    dev_decoder: GreedyDecoder | None  # --best_metric dev_wer
    history: dict[str, list[float]]
    checkpoint_dir: Path
    on_progress: ProgressCallback | None
    writer: tf.summary.SummaryWriter
    augmentations: tuple
    gpu: GpuMonitor

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_index) / self.cfg.train_batch_size)

    def run(self) -> None:
        try:
            self._run_epochs()
        except stopping.StopRequested as stop:
            raise self._stop(stop) from None

    def _stop(self, stop: stopping.StopRequested) -> stopping.StopRequested:
        """Checkpoint the step reached (as a periodic save would), for the caller to raise.

        Stops are honoured only between steps and before an epoch's end-of-epoch
        updates, so the state saved is exactly a periodic checkpoint's: a resume from
        it is bit-exact.
        """
        step = self.state.int("step")
        latest = self.saver.periodic.latest_checkpoint
        if not latest or not latest.endswith(f"-{step}"):
            latest = self.saver.save(step)
        stopped = stopping.StopRequested(stop.signum, stop.where, step)
        log.warning("%s; checkpoint %s", stopped.message, latest)
        return stopped

    def _run_epochs(self) -> None:
        state, cfg = self.state, self.cfg
        while state.int("completed_epochs") < cfg.epochs and not bool(state.stopped_early.numpy()):
            stopping.check("training")
            epoch = state.int("completed_epochs")
            plan = batch_plan(
                self.train_index.n_frames, cfg.train_batch_size, seed=cfg.seed, epoch=epoch
            )
            start = int(state.step.numpy() - state.epoch_start_step.numpy())
            if start:
                log.info("epoch %d: continuing at batch %d of %d", epoch, start, len(plan))
            self._train_epoch(epoch, plan, start)
            self._end_epoch(epoch)
        if bool(state.stopped_early.numpy()):
            log.info("training stopped early after %d epoch(s)", state.int("completed_epochs"))

    def _train_epoch(self, epoch: int, plan: list[np.ndarray], start: int) -> None:
        """Train on plan[start:], the batches of this epoch not yet trained on."""
        state, index = self.state, self.train_index
        augment = AugmentationPlan(
            self.augmentations,
            self.cfg.seed,
            epoch,
            self.cfg.epochs,
            len(plan),
            self.feature_cfg.feature_win_step,
        )
        remaining = plan[start:]
        dataset = make_dataset(index, remaining, self.feature_cfg.n_input, augment, start)
        total_steps = self.cfg.epochs * self.steps_per_epoch
        audio_seconds, t0, last_log = 0.0, time.monotonic(), time.monotonic()
        step = state.int("step")
        for ids, batch in zip(remaining, dataset, strict=True):
            step_started = time.monotonic()
            loss_t, applied = self.train_step(batch)  # also advances state.step
            loss, step = float(loss_t.numpy()), step + 1
            if not bool(applied.numpy()):
                self._bad_batch(loss, ids)
            audio_seconds += float(index.durations[ids].sum())
            speed = audio_seconds / max(time.monotonic() - t0, 1e-9)
            saved = self.saver.maybe_save(step)
            if saved:
                log.info("checkpoint at step %d: %s", step, saved)
            gpu = self.gpu.line()
            if time.monotonic() - last_log >= 15 or step == total_steps:
                last_log = time.monotonic()
                log.info(
                    "epoch %d step %d/%d loss %.3f (%.0f audio-s/s)%s",
                    epoch,
                    step,
                    total_steps,
                    loss,
                    speed,
                    f" {gpu}" if gpu else "",
                )
            if step % 10 == 0:
                with self.writer.as_default(step=step):
                    tf.summary.scalar("train/loss", loss)
                    tf.summary.scalar(
                        "train/learning_rate", float(self.optimizer.learning_rate.numpy())
                    )
                    tf.summary.scalar("train/step_seconds", time.monotonic() - step_started)
                    tf.summary.scalar("train/audio_seconds_per_second", speed)
            if gpu_scalars := self.gpu.new_scalars():
                with self.writer.as_default(step=step):
                    for name, value in gpu_scalars.items():
                        tf.summary.scalar(name, value)
            if self.on_progress is not None:
                self.on_progress(Progress(epoch, step, total_steps, loss, speed, gpu))
            self._report(epoch, step, total_steps, loss, float(index.durations[ids].sum()))
            stopping.check("training")

    def _report(self, epoch: int, step: int, total: int, loss: float, seconds: float) -> None:
        """Where training is, for a progress display (deepspeech_core.progress)."""
        dev = self.history.get("dev_loss") or [float("nan")]
        progress.report(
            "train",
            total,
            step,
            unit="steps",
            audio_seconds=seconds,
            epoch=epoch,
            epochs=self.cfg.epochs,
            steps_per_epoch=self.steps_per_epoch,
            loss=loss,
            dev_loss=dev[-1],
        )

    def _bad_batch(self, loss: float, ids: np.ndarray) -> None:
        """Skip a batch with an inf/NaN loss; stop when there are too many."""
        self.state.bad_batches.assign_add(1)
        clips = [self.train_index.wav_filenames[i] for i in ids]
        count = self.state.int("bad_batches")
        log.warning("skipped a batch with loss %s (%d so far): %s", loss, count, clips)
        if count > self.cfg.max_bad_batches:
            raise TrainingError(
                f"{count} batches had an inf/NaN loss (more than --max_bad_batches "
                f"{self.cfg.max_bad_batches}); the last one held {clips}. Check those clips' "
                "audio and transcripts, or lower --learning_rate."
            )

    def _end_epoch(self, epoch: int) -> None:
        """Dev loss (and WER), history, best model, early stop and plateau, a checkpoint."""
        state, cfg = self.state, self.cfg
        train_loss = state.epoch_mean_loss()
        self.history["train_loss"].append(train_loss)
        loss, wer = train_loss, None
        if self.dev_index is not None:
            loss, wer = dev_scores(
                self.eval_step,
                self.dev_index,
                cfg.dev_batch_size,
                self.feature_cfg.n_input,
                self.dev_decoder,
            )
            self.history["dev_loss"].append(loss)
            if wer is not None:
                self.history.setdefault("dev_wer", []).append(wer)
            total = cfg.epochs * self.steps_per_epoch  # the display shows the new dev loss
            self._report(epoch, state.int("step"), total, train_loss, 0.0)
        log.info(
            "epoch %d: train loss %.3f, %s loss %.3f%s",
            epoch,
            train_loss,
            "dev" if self.dev_index is not None else "(no dev split) train",
            loss,
            "" if wer is None else f", dev WER {wer:.3f} (greedy)",
        )
        with self.writer.as_default(step=state.int("step")):
            tf.summary.scalar("epoch/train_loss", train_loss)
            tf.summary.scalar("epoch/dev_loss", loss)
            if wer is not None:
                tf.summary.scalar("epoch/dev_wer", wer)
        self.writer.flush()
        self._track_best(epoch, loss, wer)

        state.completed_epochs.assign_add(1)
        state.start_epoch()
        atomic_write_json(self.checkpoint_dir / "history.json", self.history)
        self.saver.save(state.int("step"))

    def _track_best(self, epoch: int, loss: float, wer: float | None) -> None:
        """Best checkpoint, early-stop and plateau counters on --best_metric.

        Dev WER is used once it was measured below 1 (dev_wer and a dev split); any
        fall counts, as a WER moves in whole words. Before that, while the model gets
        no word right (CTC's first epochs emit blanks: WER 1 whatever the loss), and
        for dev_loss, dev loss by es_min_delta, so patience does not run out before
        the model has started to learn.
        """
        state, cfg = self.state, self.cfg
        best_loss = float(state.best_dev_loss.numpy())
        if loss < best_loss:
            state.best_dev_loss.assign(loss)
        # The best WER so far comes from the history, trimmed to the restored epochs, not
        # from a checkpoint variable: checkpoints written before --best_metric stay loadable.
        earlier = min(self.history.get("dev_wer", [])[:-1], default=math.inf)
        if wer is not None and min(wer, earlier) < 1.0:
            name, value, best, delta = "dev WER", wer, earlier, 0.0
        else:
            name, value, best, delta = "dev loss", loss, best_loss, cfg.es_min_delta
        improved = value < best - delta
        if value < best:
            self.saver.save_best(state.int("step"))
            log.info("epoch %d: new best %s %.3f", epoch, name, value)
        state.es_counter.assign(0 if improved else state.int("es_counter") + 1)
        state.plateau_counter.assign(0 if improved else state.int("plateau_counter") + 1)
        if cfg.reduce_lr_on_plateau and state.int("plateau_counter") >= cfg.plateau_epochs:
            lr = float(self.optimizer.learning_rate.numpy()) * cfg.plateau_reduction
            self.optimizer.learning_rate.assign(lr)
            state.plateau_counter.assign(0)
            log.info(
                "%s has not improved for %d epochs: learning rate now %.3g",
                name,
                cfg.plateau_epochs,
                lr,
            )
        if cfg.early_stop and state.int("es_counter") >= cfg.es_epochs:
            state.stopped_early.assign(True)
            log.info(
                "%s has not improved by %g for %d epochs: stopping early",
                name,
                delta,
                cfg.es_epochs,
            )
