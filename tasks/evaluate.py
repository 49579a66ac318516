"""Stage 4: evaluation on the test split."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.evaluation import evaluate
from deepspeech_core.manifests import EvaluationManifest, FeatureCacheManifest
from tasks.reporting import core_logs_to_run_log


@task(name="evaluate_model", task_run_name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model_task(
    config: PipelineConfig, features: FeatureCacheManifest
) -> EvaluationManifest:
    with core_logs_to_run_log():
        manifest = evaluate(
            features, config.checkpoint_dir, config.evaluation, config.workdir / "reports"
        )
    create_markdown_artifact(
        key="evaluation",
        markdown=(
            f"**Test WER {manifest.wer:.4f}, CER {manifest.cer:.4f}**, mean CTC loss "
            f"{manifest.loss:.3f} on {manifest.samples} clips.\n\n"
            f"Per-sample results: `{manifest.test_output_path}`"
        ),
        description="Evaluation summary",
    )
    return manifest
