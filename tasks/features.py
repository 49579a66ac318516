"""Stage 2: the MFCC feature cache."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.feature_cache import build_feature_cache
from deepspeech_core.manifests import CorpusManifest, FeatureCacheManifest
from tasks.reporting import core_logs_to_run_log


@task(name="build_feature_cache", task_run_name="build-feature-cache", cache_policy=NO_CACHE)
def build_feature_cache_task(
    config: PipelineConfig, corpus: CorpusManifest
) -> FeatureCacheManifest:
    with core_logs_to_run_log():
        manifest = build_feature_cache(corpus, config.features, config.workdir)
    counts = ", ".join(f"{k}: {v}" for k, v in manifest.counts.items())
    create_markdown_artifact(
        key="feature-cache",
        markdown=(
            f"**Feature cache** `{manifest.cache_dir}`\n\n"
            f"- clips per split: {counts}\n"
            f"- computed this run: {manifest.computed}, reused: {manifest.reused_clips}\n"
        ),
        description="MFCC feature cache summary",
    )
    return manifest
