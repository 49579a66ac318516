"""Stage 5: export the best model."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.export import export_model
from deepspeech_core.manifests import EvaluationManifest, ExportManifest
from tasks.reporting import core_logs_to_run_log


@task(name="export_model", task_run_name="export-model", cache_policy=NO_CACHE)
def export_model_task(
    config: PipelineConfig, evaluation: EvaluationManifest | None
) -> ExportManifest:
    with core_logs_to_run_log():
        manifest = export_model(config.checkpoint_dir, config.export_dir, evaluation)
    create_markdown_artifact(
        key="export",
        markdown=(
            f"**Exported** `{manifest.saved_model}` ({manifest.size_bytes / 1e6:.1f} MB)\n\n"
            f"Try it: `deepspeech-flow transcribe --model {manifest.export_dir} clip.wav`"
        ),
        description="Export summary",
    )
    return manifest
