"""The train-cv flow: validate -> features -> train -> evaluate -> export (+ promotion).

Each stage is one task run; every stage is safe to rerun (fingerprints skip done work,
training resumes from its newest checkpoint), so running the flow again on the same
work directory is how an interrupted run is continued.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from deepspeech_core import stopping
from deepspeech_core.config import PipelineConfig, Stage, runs_stage
from deepspeech_core.export import store
from deepspeech_core.export.promotion import comparison_markdown, decide, is_already_current
from deepspeech_core.manifests import PipelineResult
from deepspeech_core.stopping import StopRequested, stop_on_signals
from deepspeech_core.train.trainings import (
    NoTrainedModelError,
    RetrainFrom,
    has_trained_model,
    no_trained_model_message,
    resolve_trainings_roots,
    run_checkpoint_dir,
    warm_start_source,
    with_training,
)
from deepspeech_core.workdir.input_overlap import check_inputs_outside_outputs
from deepspeech_core.workdir.locking import workdir_lock
from deepspeech_core.workdir.status import record_last_run
from flows.stopping import stopped_run_state
from tasks.evaluate import evaluate_model_task
from tasks.export import export_model_task
from tasks.features import build_feature_cache_stage
from tasks.train import train_model_task
from tasks.validate import validate_corpus_task


def with_overrides(
    config: PipelineConfig | dict | None, workdir: Path | None, corpus: Path | None
) -> PipelineConfig:
    """The run's config: `config`, with the `workdir` and `corpus` parameters when given.

    A deployment keeps its work directory and corpus in these two parameters, so
    `prefect deployment run -p 'config={...}'` (which replaces the whole `config`
    parameter) changes settings without losing where to work and what to train on.
    """
    if isinstance(config, dict):
        config = PipelineConfig.model_validate(config)
    config = config or PipelineConfig()
    if workdir is not None:
        config = config.model_copy(update={"workdir": Path(workdir)})
    if corpus is not None:
        source = config.corpus.model_copy(
            update={"corpus": Path(corpus), "train_files": [], "dev_files": [], "test_files": []}
        )
        config = config.model_copy(update={"corpus": source})
    return config


def _run_name() -> str:
    """`train-cv-<corpus>-<date>`: says what ran, in the UI's run list."""
    params = flow_run.parameters or {}
    try:
        c = with_overrides(params.get("config"), params.get("workdir"), params.get("corpus")).corpus
    except ValueError:
        c = None
    source = "corpus"
    if c is not None and c.corpus is not None:
        parent = c.corpus.parent.name
        source = f"{parent}-{c.corpus.name}" if parent else c.corpus.name
    elif c is not None and (c.train_files or c.test_files):
        source = (c.train_files or c.test_files)[0].stem
    return f"train-cv-{source}-{datetime.now():%Y%m%d-%H%M}"


def _export_with_promotion(config: PipelineConfig, result: PipelineResult, has_test: bool):
    """Evaluate the current model on the same test set; export, promote if no worse."""
    current = store.current(config.export_dir)
    champion = None
    if current is not None:
        if is_already_current(current, result.evaluation):
            print(
                f"the current model {current.name} is this training's best checkpoint: "
                "nothing new to export (--export_* settings apply to the next new export)"
            )
            return None
        if has_test:
            champion = evaluate_model_task(
                config, result.features, current / "checkpoint", label="champion"
            )
    decision = decide(result.evaluation, champion, has_current=current is not None)
    exported = export_model_task(
        config,
        result.evaluation,
        result.corpus,
        result.features,
        promote=decision.promote,
        reason=decision.reason,
    )
    create_markdown_artifact(
        key="promotion",
        markdown=comparison_markdown(
            result.evaluation,
            champion,
            decision,
            exported.version,
            current.name if current else None,
        ),
        description="Champion/challenger: was the new model promoted?",
    )
    return exported


@flow(name="train-cv", flow_run_name=_run_name, log_prints=True)
def train_cv(
    config: PipelineConfig | None = None,
    target: Stage = "export",
    reuse_trained_model: bool = False,
    retrain_from: RetrainFrom = "current",
    workdir: Path | None = None,
    corpus: Path | None = None,
) -> PipelineResult:
    """Run the pipeline up to `target`.

    `workdir` and `corpus`, when given, override the config's (deployments set them).

    With `reuse_trained_model`, an existing trained model is evaluated/exported as it is
    (the `evaluate` and `export` commands); otherwise training runs, continuing from its
    newest checkpoint when there is one. A new training (new data) starts from the
    exported model in use (`retrain_from="current"`) or from scratch. The new model
    replaces `export/current` only if its test WER is no worse than the current one's.
    """
    config = with_overrides(config, workdir, corpus).resolved()
    check_inputs_outside_outputs(
        config.corpus,
        config.workdir,
        {"--test_output_file": config.evaluation.test_output_file},
    )
    config = resolve_trainings_roots(config, reuse_trained_model and target != "train")
    # SIGINT/SIGTERM stop the run at its next safe point (flows/stopping.py).
    with stop_on_signals(), workdir_lock(config.workdir):
        result, outcome, started = PipelineResult(), "failed", time.time()
        try:
            _run(config, target, reuse_trained_model, retrain_from, result)
            outcome = "completed"
            return result
        except StopRequested as stop:
            outcome = f"stopped: {stop.message}"
            return stopped_run_state(stop)
        except Exception as exc:
            outcome = f"failed: {type(exc).__name__}: {exc}"
            raise
        finally:  # what `deepspeech-flow status` shows as the last run
            record_last_run(config.workdir, target, started, outcome, result.stage_seconds)


def _run(
    config: PipelineConfig,
    target: Stage,
    reuse_trained_model: bool,
    retrain_from: RetrainFrom,
    result: PipelineResult,
) -> PipelineResult:
    def timed(stage: str, fn, *args, **kwargs):
        stopping.check(f"before {stage}")
        started = time.monotonic()
        out = fn(*args, **kwargs)
        result.stage_seconds[stage] = round(time.monotonic() - started, 2)
        return out

    result.corpus = timed("validate", validate_corpus_task, config, retrain_from == "current")
    if runs_stage(target, "features"):
        result.features = timed("features", build_feature_cache_stage, config, result.corpus)
    if runs_stage(target, "train"):
        checkpoint_dir = run_checkpoint_dir(config, result.features, reuse_trained_model)
        config = with_training(config, checkpoint_dir=checkpoint_dir)
        if reuse_trained_model and target != "train":
            # `evaluate` and `export` use a trained model; they never start a training.
            if not has_trained_model(checkpoint_dir):
                raise NoTrainedModelError(no_trained_model_message(checkpoint_dir))
        else:
            source = warm_start_source(config, retrain_from)
            if source is not None:
                model = source.parent.name
                print(f"warm start: the new training starts from the current model {model}")
                config = with_training(config, load_checkpoint_dir=source)
            train_task = train_model_task.with_options(retries=config.training.train_retries)
            result.training = timed("train", train_task, config, result.features)
    has_test = "test" in result.features.indexes if result.features else False
    if runs_stage(target, "evaluate") and (has_test or target == "evaluate"):
        result.evaluation = timed("evaluate", evaluate_model_task, config, result.features)
    if runs_stage(target, "export"):
        result.export = timed("export", _export_with_promotion, config, result, has_test)
    return result
