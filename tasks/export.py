"""Stage 5: export the new model as a version; promote it if it is no worse."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.export.export_model import export_model, verification_clips
from deepspeech_core.manifests import (
    CorpusManifest,
    EvaluationManifest,
    ExportManifest,
    FeatureCacheManifest,
)
from tasks.reporting import core_logs_to_run_log
from tasks.retry import retry_unless_expected


@task(
    name="export_model",
    task_run_name="export-model",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_unless_expected,
)
def export_model_task(
    config: PipelineConfig,
    evaluation: EvaluationManifest | None,
    corpus: CorpusManifest | None = None,
    features: FeatureCacheManifest | None = None,
    promote: bool = True,
    reason: str = "",
) -> ExportManifest:
    with core_logs_to_run_log() as log:
        clips = verification_clips(features) if features else []
        manifest = export_model(
            config.checkpoint_dir,
            config.export_dir,
            config.export,
            evaluation,
            corpus,
            clips,
            promote=promote,
        )
        if reason:
            log.info("%s %s: %s", manifest.version, "promoted" if promote else "kept", reason)
    manifest = manifest.model_copy(update={"promotion_reason": reason})
    create_markdown_artifact(key="export", markdown=export_markdown(manifest), description="Export")
    return manifest


def export_markdown(m: ExportManifest) -> str:
    status = (
        f"promoted: `{m.current}` -> {m.version}"
        if m.promoted
        else f"**not promoted** ({m.promotion_reason})"
    )
    lines = [
        f"**Exported {m.version}** to `{m.export_dir}`, {status}",
        "",
        "| file | size | max abs logit diff vs Keras |",
        "|---|---:|---:|",
        f"| saved_model/ | {m.size_bytes / 1e6:.1f} MB | (same graph) |",
        *(
            f"| {name} | {t.size_bytes / 1e6:.2f} MB | {t.max_abs_diff:.2e} |"
            for name, t in m.tflite.items()
        ),
        "",
        f"Try it: `deepspeech-flow transcribe --model {m.export_dir.parent} clip.wav`",
    ]
    return "\n".join(lines)
