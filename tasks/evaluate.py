"""Stage 4: evaluation on the test files (the new model's, and the current export's)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.evaluate.evaluation import evaluate
from deepspeech_core.evaluate.lm_tuning import with_tuned_weights
from deepspeech_core.manifests import EvaluationManifest, FeatureCacheManifest, Metrics
from tasks.reporting import core_logs_to_run_log
from tasks.retry import retry_unless_expected


def _metrics_table(title: str, rows: dict[str, Metrics]) -> list[str]:
    lines = [f"| {title} | clips | WER | CER | loss |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| {name} | {m.samples} | {m.wer:.4f} | {m.cer:.4f} | {m.loss:.3f} |"
        for name, m in rows.items()
    ]
    return lines


def _speaker_tables(manifest: EvaluationManifest) -> list[str]:
    """WER/CER per speaker (client_id, shortened) and per gender, age and accent."""
    lines: list[str] = []
    if manifest.by_speaker:
        speakers = {name[:12]: m for name, m in manifest.by_speaker.items()}
        lines += [*_metrics_table("speaker (client_id)", speakers), ""]
    for column, groups in manifest.by_demographic.items():
        lines += [*_metrics_table(column, groups), ""]
    return lines


def evaluation_markdown(manifest: EvaluationManifest) -> str:
    """The summary, one row per test file, WER by clip duration and by speaker."""
    files = {Path(k).name: v for k, v in manifest.per_file.items()}
    return "\n".join(
        [
            f"**Test WER {manifest.wer:.4f}, CER {manifest.cer:.4f}**, mean CTC loss "
            f"{manifest.loss:.3f} on {manifest.samples} clips, {manifest.decoder} decoder, "
            f"checkpoint `{manifest.checkpoint}`.",
            "",
            *_metrics_table("test file", files),
            "",
            *_metrics_table("duration", manifest.by_duration),
            "",
            *_speaker_tables(manifest),
            f"Per-sample results: `{manifest.test_output_path}`",
        ]
    )


@task(
    name="evaluate_model",
    task_run_name="evaluate-{label}",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_unless_expected,
)
def evaluate_model_task(
    config: PipelineConfig,
    features: FeatureCacheManifest,
    checkpoint_dir: Path | None = None,
    label: str = "model",
) -> EvaluationManifest:
    """Evaluate `checkpoint_dir` (default: the run's) and publish its artifacts.

    The new model's artifacts have the keys `evaluation` and `evaluation-samples`, the
    current export's `evaluation-champion`: stable keys, so the UI charts them across runs.
    """
    reports = config.workdir / "reports"
    if label != "model":
        reports = reports / label
    with core_logs_to_run_log():
        decoder = with_tuned_weights(config.evaluation, config.workdir)  # tune-lm's, if any
        manifest = evaluate(features, checkpoint_dir or config.checkpoint_dir, decoder, reports)
    key = "evaluation" if label == "model" else f"evaluation-{label}"
    create_markdown_artifact(
        key=key, markdown=evaluation_markdown(manifest), description=f"Evaluation ({label})"
    )
    if label == "model" and manifest.examples:
        create_table_artifact(
            key="evaluation-samples",
            table=[
                {"rank": rank, **{k: s[k] for k in ("wer", "cer", "loss", "src", "res")}}
                | {"wav_filename": Path(s["wav_filename"]).name}
                for rank, group in manifest.examples.items()
                for s in group
            ],
            description="Best, median and worst test samples (DeepSpeech's report)",
        )
    return manifest
