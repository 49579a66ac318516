"""Stage 2: the MFCC feature cache, fanned out as one task run per shard.

The stage is a subflow so that it can carry its own task runner: local threads (the
default), local processes, or a Dask cluster through prefect-dask, whichever
`--task_runner` names. Each shard is a `featurise-shard-<id>` task run in the UI.
"""

from __future__ import annotations

import os

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from deepspeech_core import stopping
from deepspeech_core.config import ExecutionConfig, PipelineConfig
from deepspeech_core.features.augmentation import split_specs
from deepspeech_core.features.cache import ShardJob, ShardResult, build_feature_cache, build_shard
from deepspeech_core.manifests import CorpusManifest, FeatureCacheManifest
from tasks.reporting import core_logs_to_run_log
from tasks.retry import retry_unless_expected


@task(
    name="featurise_shard",
    task_run_name="featurise-shard-{job.name}",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_unless_expected,
)
def featurise_shard_task(job: ShardJob) -> ShardResult:
    stopping.check("computing features")  # a stop leaves the shards not begun to the next run
    return build_shard(job)


def _map_shards(_fn, jobs: list[ShardJob]) -> list[ShardResult]:
    """deepspeech_core's map function, carried out as Prefect task runs."""
    futures = featurise_shard_task.map(jobs)
    futures.wait()
    stopping.check("computing features")  # finished shards are kept (written atomically)
    return [future.result() for future in futures]


def make_task_runner(execution: ExecutionConfig) -> TaskRunner:
    workers = execution.workers or os.cpu_count() or 1
    if execution.task_runner == "processes":
        return ProcessPoolTaskRunner(
            max_workers=workers, initializer=stopping.pool_worker_init, initargs=(os.getpid(),)
        )
    if execution.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise RuntimeError(
                "--task_runner dask needs prefect-dask: pip install 'deepspeech-flow[dask]'"
            ) from exc
        if execution.dask_address:
            return DaskTaskRunner(address=execution.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    return ThreadPoolTaskRunner(max_workers=workers)


@flow(name="build-feature-cache", flow_run_name="build-feature-cache", log_prints=True)
def build_feature_cache_flow(
    config: PipelineConfig, corpus: CorpusManifest
) -> FeatureCacheManifest:
    sample_augment, _ = split_specs(config.training.augment)
    with core_logs_to_run_log():
        manifest = build_feature_cache(
            corpus,
            config.features,
            config.workdir,
            config.execution.shard_size,
            _map_shards,
            sample_augment=sample_augment,
            augment_seed=config.training.seed,
        )
    counts = ", ".join(f"{k}: {v}" for k, v in manifest.counts.items())
    create_markdown_artifact(
        key="feature-cache",
        markdown=(
            f"**Feature cache** `{manifest.cache_dir}`\n\n"
            f"- clips per split: {counts}\n"
            f"- computed this run: {manifest.computed}, reused: {manifest.reused_clips}\n"
            f"- task runner: {config.execution.task_runner}\n"
        ),
        description="MFCC feature cache summary",
    )
    return manifest


def build_feature_cache_stage(
    config: PipelineConfig, corpus: CorpusManifest
) -> FeatureCacheManifest:
    """The features subflow, with the task runner the configuration asks for."""
    runner = make_task_runner(config.execution)
    return build_feature_cache_flow.with_options(task_runner=runner)(config, corpus)
