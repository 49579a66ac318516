"""The train-cv flow: validate -> features -> train -> evaluate -> export.

Each stage is one task run; every stage is safe to rerun (fingerprints skip done work,
training resumes from its newest checkpoint), so running the flow again on the same
work directory is how an interrupted run is continued.
"""

from __future__ import annotations

import time
from datetime import datetime

from prefect import flow
from prefect.runtime import flow_run

from deepspeech_core.config import STAGES, PipelineConfig, Stage
from deepspeech_core.manifests import PipelineResult
from tasks.evaluate import evaluate_model_task
from tasks.export import export_model_task
from tasks.features import build_feature_cache_stage
from tasks.train import has_trained_model, train_model_task
from tasks.validate import validate_corpus_task


def _run_name() -> str:
    """`train-cv-<corpus>-<date>`: says what ran, in the UI's run list."""
    params = flow_run.parameters or {}
    config = params.get("config")
    if isinstance(config, dict):
        config = PipelineConfig.model_validate(config)
    source = "corpus"
    if isinstance(config, PipelineConfig):
        c = config.corpus
        if c.corpus is not None:
            source = (
                f"{c.corpus.parent.name}-{c.corpus.name}" if c.corpus.parent.name else c.corpus.name
            )
        elif c.train_files or c.test_files:
            source = (c.train_files or c.test_files)[0].stem
    return f"train-cv-{source}-{datetime.now():%Y%m%d-%H%M}"


@flow(name="train-cv", flow_run_name=_run_name, log_prints=True)
def train_cv(
    config: PipelineConfig | None = None,
    target: Stage = "export",
    reuse_trained_model: bool = False,
) -> PipelineResult:
    """Run the pipeline up to `target`.

    With `reuse_trained_model`, an existing trained model in the checkpoint directory
    is evaluated/exported as it is (the `evaluate` and `export` commands); otherwise
    training runs, and continues from the newest checkpoint when there is one.
    """
    config = (config or PipelineConfig()).resolved()
    result = PipelineResult()
    last = STAGES.index(target)

    def timed(stage: str, fn, *args):
        started = time.monotonic()
        out = fn(*args)
        result.stage_seconds[stage] = round(time.monotonic() - started, 2)
        return out

    result.corpus = timed("validate", validate_corpus_task, config)
    if last >= STAGES.index("features"):
        result.features = timed("features", build_feature_cache_stage, config, result.corpus)
    if last >= STAGES.index("train"):
        if target == "train" or not (
            reuse_trained_model and has_trained_model(config.checkpoint_dir)
        ):
            train_task = train_model_task.with_options(retries=config.training.train_retries)
            result.training = timed("train", train_task, config, result.features)
    has_test = "test" in result.features.indexes
    if last >= STAGES.index("evaluate") and (has_test or target == "evaluate"):
        result.evaluation = timed("evaluate", evaluate_model_task, config, result.features)
    if last >= STAGES.index("export"):
        result.export = timed("export", export_model_task, config, result.evaluation)
    return result
