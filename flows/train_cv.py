"""The train-cv flow: validate -> features -> train -> evaluate -> export (+ promotion).

Each stage is one task run; every stage is safe to rerun (fingerprints skip done work,
training resumes from its newest checkpoint), so running the flow again on the same
work directory is how an interrupted run is continued.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from deepspeech_core import export_store, stopping
from deepspeech_core.config import STAGES, PipelineConfig, Stage
from deepspeech_core.locking import workdir_lock
from deepspeech_core.manifests import FeatureCacheManifest, PipelineResult
from deepspeech_core.overlap import check_inputs_outside_outputs
from deepspeech_core.promotion import comparison_markdown, decide
from deepspeech_core.stopping import StopRequested, stop_on_signals
from deepspeech_core.training_runs import (
    NoTrainedModelError,
    checkpoint_dir_for,
    has_trained_model,
    is_trainings_root,
    latest_trained,
    no_trained_model_message,
    resolve_trained,
    trainings,
)
from deepspeech_core.workdir_status import record_last_run
from flows.stopping import stopped_run_state
from tasks.evaluate import evaluate_model_task
from tasks.export import export_model_task
from tasks.features import build_feature_cache_stage
from tasks.train import train_model_task
from tasks.validate import validate_corpus_task

RetrainFrom = Literal["current", "scratch"]


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


def _with_training(config: PipelineConfig, **fields) -> PipelineConfig:
    """A copy of `config` with these training settings changed."""
    training = config.training.model_copy(update=fields)
    return config.model_copy(update={"training": training})


def _given_trainings_root(config: PipelineConfig) -> Path | None:
    """The --checkpoint_dir when it names a directory of trainings rather than a training."""
    given = config.training.checkpoint_dir
    if given is not None and (given == config.workdir / "checkpoints" or is_trainings_root(given)):
        return given
    return None


def _resolve_trainings_roots(config: PipelineConfig, reuse_trained_model: bool) -> PipelineConfig:
    """A parent `checkpoints/` directory given where a training is meant: its newest training.

    For --load_checkpoint_dir always; for --checkpoint_dir when an existing model is
    evaluated or exported (training into a parent trains into its subdirectory for the
    data, see `_checkpoint_dir`). Done before validation, which takes the alphabet from
    the training.
    """
    load = config.training.load_checkpoint_dir
    if load is not None and is_trainings_root(load):
        config = _with_training(
            config, load_checkpoint_dir=resolve_trained(load, "--load_checkpoint_dir")
        )
    if not reuse_trained_model:
        return config
    root = _given_trainings_root(config)
    if root is not None and is_trainings_root(root):
        return _with_training(config, checkpoint_dir=resolve_trained(root))
    where = config.training.checkpoint_dir or config.workdir / "checkpoints"
    if not (has_trained_model(where) or trainings(where)):  # fail before any work
        raise NoTrainedModelError(no_trained_model_message(where))
    return config


def _checkpoint_dir(
    config: PipelineConfig, features: FeatureCacheManifest, reuse_trained_model: bool
) -> Path:
    """The training's directory: the user's --checkpoint_dir, else one per training data.

    A --checkpoint_dir that holds trainings (WORKDIR/checkpoints) is their root, as the
    default is. Evaluating or exporting without training data (e.g. only --test_files)
    uses the newest training under the root.
    """
    given = config.training.checkpoint_dir
    if given is not None and _given_trainings_root(config) is None:
        return given
    root = given or config.workdir / "checkpoints"
    if has_trained_model(root):  # a work directory from before per-data trainings
        return root
    own = checkpoint_dir_for(root, features)
    if reuse_trained_model and not has_trained_model(own):
        return latest_trained(root) or own
    return own


def _warm_start(config: PipelineConfig, retrain_from: RetrainFrom) -> PipelineConfig:
    """A new training starts from the exported model in use unless told otherwise."""
    current = export_store.current(config.export_dir)
    if (
        retrain_from == "scratch"
        or current is None
        or config.training.load_checkpoint_dir is not None
        or has_trained_model(config.checkpoint_dir)
    ):
        return config
    print(f"warm start: the new training starts from the current model {current.name}")
    return _with_training(config, load_checkpoint_dir=current / "checkpoint")


def _export_with_promotion(config: PipelineConfig, result: PipelineResult, has_test: bool):
    """Evaluate the current model on the same test set; export, promote if no worse."""
    current = export_store.current(config.export_dir)
    champion = None
    if current is not None:
        exported_from = json.loads((current / "metadata.json").read_text()).get("checkpoint")
        if result.evaluation and exported_from == str(result.evaluation.checkpoint):
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
    config = _resolve_trainings_roots(config, reuse_trained_model and target != "train")
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
    last = STAGES.index(target)

    def timed(stage: str, fn, *args, **kwargs):
        stopping.check(f"before {stage}")
        started = time.monotonic()
        out = fn(*args, **kwargs)
        result.stage_seconds[stage] = round(time.monotonic() - started, 2)
        return out

    result.corpus = timed("validate", validate_corpus_task, config, retrain_from == "current")
    if last >= STAGES.index("features"):
        result.features = timed("features", build_feature_cache_stage, config, result.corpus)
    if last >= STAGES.index("train"):
        checkpoint_dir = _checkpoint_dir(config, result.features, reuse_trained_model)
        config = _with_training(config, checkpoint_dir=checkpoint_dir)
        if reuse_trained_model and target != "train":
            # `evaluate` and `export` use a trained model; they never start a training.
            if not has_trained_model(checkpoint_dir):
                raise NoTrainedModelError(no_trained_model_message(checkpoint_dir))
        else:
            config = _warm_start(config, retrain_from)
            train_task = train_model_task.with_options(retries=config.training.train_retries)
            result.training = timed("train", train_task, config, result.features)
    has_test = "test" in result.features.indexes if result.features else False
    if last >= STAGES.index("evaluate") and (has_test or target == "evaluate"):
        result.evaluation = timed("evaluate", evaluate_model_task, config, result.features)
    if last >= STAGES.index("export"):
        result.export = timed("export", _export_with_promotion, config, result, has_test)
    return result
