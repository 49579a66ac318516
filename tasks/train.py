"""Stage 3: training, with retries that resume from the last checkpoint."""

from __future__ import annotations

import base64
import time

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.manifests import FeatureCacheManifest, TrainedModelManifest
from deepspeech_core.train.gpu_monitor import GpuSummary
from deepspeech_core.train.loop import Progress, train
from deepspeech_core.train.loss_curve import plot_loss
from tasks.reporting import core_logs_to_run_log
from tasks.retry import retry_unless_expected


class _ProgressReporter:
    """Updates a progress artifact at most every few seconds (the UI shows a bar)."""

    def __init__(self, every_seconds: float = 5.0) -> None:
        self.artifact_id = create_progress_artifact(
            progress=0.0, key="training-progress", description="Training progress (% of steps)"
        )
        self.every = every_seconds
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last >= self.every or p.step == p.total_steps:
            self.last = now
            update_progress_artifact(
                artifact_id=self.artifact_id,
                progress=100.0 * p.step / max(p.total_steps, 1),
                description=(
                    f"epoch {p.epoch}, step {p.step}/{p.total_steps}, loss {p.loss:.3f}, "
                    f"{p.audio_seconds_per_second:.0f} audio-s/s" + (f", {p.gpu}" if p.gpu else "")
                ),
            )


def _loss_curve_artifact(config: PipelineConfig, manifest: TrainedModelManifest) -> None:
    """The loss PNG, shown inline in the UI, with where it and TensorBoard's logs are."""
    if not manifest.train_loss_history:
        return
    png = plot_loss(
        manifest.train_loss_history,
        manifest.dev_loss_history,
        config.workdir / "reports" / "loss.png",
        title=f"{manifest.checkpoint_dir.name}: {manifest.epochs} epoch(s)",
    )
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    create_markdown_artifact(
        key="training-loss-curve",
        markdown=(
            f"![loss per epoch](data:image/png;base64,{image})\n\n"
            f"PNG: `{png}`  \nTensorBoard: `tensorboard --logdir {config.workdir / 'tensorboard'}`"
        ),
        description="Loss curve",
    )


@task(
    name="train_model",
    task_run_name="train-model",
    cache_policy=NO_CACHE,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_expected,
)
def train_model_task(
    config: PipelineConfig, features: FeatureCacheManifest
) -> TrainedModelManifest:
    with core_logs_to_run_log() as log:
        manifest = train(
            features,
            config.model,
            config.features,
            config.training,
            config.checkpoint_dir,
            on_progress=_ProgressReporter(),
            tensorboard_dir=config.workdir / "tensorboard",
        )
        if manifest.resumed_from_step:
            log.info("this attempt resumed from step %d", manifest.resumed_from_step)
        if manifest.initialized_from is not None:
            log.info("this training started from the weights of %s", manifest.initialized_from)
    _loss_curve_artifact(config, manifest)
    create_table_artifact(
        key="training-loss",
        table=_loss_table(manifest),
        description=f"Per-epoch loss; checkpoints in {manifest.checkpoint_dir}"
        + (f"; {manifest.gpu.line()}" if manifest.gpu else ""),
    )
    if manifest.gpu is not None:
        _gpu_artifact(manifest.gpu)
    return manifest


def _loss_table(manifest: TrainedModelManifest) -> list[dict]:
    """One row per epoch: train and dev loss, and dev WER where --best_metric measured it."""
    dev, wer = manifest.dev_loss_history, manifest.dev_wer_history
    rows = []
    for i, loss in enumerate(manifest.train_loss_history):
        row = {"epoch": i, "train_loss": round(loss, 4)}
        row["dev_loss"] = round(dev[i], 4) if i < len(dev) else None
        if wer:
            row["dev_wer"] = round(wer[i], 4) if i < len(wer) else None
        rows.append(row)
    return rows


def _gpu_artifact(summary: GpuSummary) -> None:
    """One row per GPU (what nvtop would have shown, summarised), or why there is none."""
    rows = [
        {
            "gpu": g.gpu,
            "name": g.name,
            "mean_utilization_%": g.mean_utilization,
            "p10_utilization_%": g.p10_utilization,
            "peak_memory_gb": g.peak_memory_gb,
            "memory_total_gb": g.memory_total_gb,
            "max_temperature_c": g.max_temperature_c,
            "mean_power_w": g.mean_power_w,
            "samples": g.samples,
        }
        for g in summary.gpus
    ]
    notes = [summary.note] if summary.note else []
    create_table_artifact(
        key="training-gpu",
        table=rows or [{"gpu": "none", "note": summary.note or "no GPU monitored"}],
        description="; ".join(notes + [f"warning: {w}" for w in summary.warnings])
        or f"GPU use sampled every {summary.interval_seconds:g} s over {summary.seconds:g} s",
    )
