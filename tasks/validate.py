"""Stage 1: validate (and import) the corpus."""

from __future__ import annotations

import json

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.data.validation import REASONS, validate_corpus
from deepspeech_core.manifests import CorpusManifest
from deepspeech_core.train.trainings import alphabet_for
from tasks.reporting import core_logs_to_run_log
from tasks.retry import retry_unless_expected


def _report_artifacts(manifest: CorpusManifest) -> None:
    report = json.loads(manifest.report_path.read_text())
    splits = report["splits"]
    create_table_artifact(
        key="corpus-validation",
        table=[
            {
                "split": split,
                "clips": s["clips"],
                "hours": s["hours"],
                "resampled": s["resampled"],
                "downmixed": s["downmixed"],
                **{f"dur_{k}_s": v for k, v in s["duration_seconds"].items()},
                **{reason: s["rejected"].get(reason, 0) for reason in REASONS},
            }
            for split, s in splits.items()
        ],
        description=f"Clips kept and rejected per split; rejected rows: {manifest.rejected_csv}",
    )
    examples = [
        {"reason": reason, **row}
        for reason, rows in report["rejected_examples"].items()
        for row in rows
    ]
    if examples:
        create_table_artifact(
            key="corpus-rejected-examples",
            table=examples,
            description="The first rejected rows of each reason",
        )
    overlap = report["overlap_train_test"]
    create_markdown_artifact(
        key="corpus-summary",
        markdown=(
            f"**Corpus** `{manifest.corpus_dir}`: "
            + ", ".join(
                f"{k} {v} clips ({manifest.hours[k]:.2f} h)" for k, v in manifest.counts.items()
            )
            + f"\n\nAlphabet: `{report['alphabet']}`\n\n"
            f"Speakers in both train and test: {overlap['speakers']['count']}; "
            f"sentences in both: {overlap['sentences']['count']}"
        ),
        description="Validation summary",
    )


@task(
    name="validate_corpus",
    task_run_name="validate-corpus",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_unless_expected,
)
def validate_corpus_task(
    config: PipelineConfig, alphabet_from_current_export: bool = True
) -> CorpusManifest:
    with core_logs_to_run_log() as log:
        alphabet = alphabet_for(config, alphabet_from_current_export)
        manifest = validate_corpus(config.corpus, config.features, config.workdir, alphabet)
        if manifest.reused:
            log.info("corpus unchanged: reused the validation of an earlier run")
    _report_artifacts(manifest)
    return manifest
