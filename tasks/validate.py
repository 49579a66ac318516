"""Stage 1: validate (and import) the corpus."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.corpus import validate_corpus
from deepspeech_core.manifests import CorpusManifest
from tasks.reporting import core_logs_to_run_log


def alphabet_for(config: PipelineConfig) -> Path | None:
    """The alphabet to validate against: the configured one, else an existing model's.

    A checkpoint directory that already holds a model fixes the characters it can write,
    so resuming or evaluating it must not derive a different alphabet from new data.
    """
    if config.corpus.alphabet_config_path is not None:
        return config.corpus.alphabet_config_path
    from_checkpoint = config.checkpoint_dir / "alphabet.txt"
    return from_checkpoint if from_checkpoint.is_file() else None


@task(name="validate_corpus", task_run_name="validate-corpus", cache_policy=NO_CACHE)
def validate_corpus_task(config: PipelineConfig) -> CorpusManifest:
    with core_logs_to_run_log() as log:
        manifest = validate_corpus(
            config.corpus, config.features, config.workdir, alphabet_for(config)
        )
        if manifest.reused:
            log.info("corpus unchanged: reused the validation of an earlier run")
    table = [
        {
            "split": split,
            "clips": manifest.counts[split],
            "hours": manifest.hours[split],
            "rejected": sum(manifest.rejected[split].values()),
            **{f"rejected_{k}": v for k, v in sorted(manifest.rejected[split].items())},
        }
        for split in manifest.splits
    ]
    create_table_artifact(
        table=table,
        key="corpus-validation",
        description=f"Clips kept and rejected per split; details in {manifest.rejected_csv}",
    )
    return manifest
