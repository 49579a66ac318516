"""The tune-lm flow: validate -> features -> tune-lm, on the trained model in use.

A flow of its own so it shows in the Prefect UI like train-cv's stages: the corpus and
feature cache come back from their fingerprints, and the tune-lm task run shows its
progress, best pair and trials.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow

from deepspeech_core.config import PipelineConfig
from deepspeech_core.evaluate.lm_tuning import TuningResult
from deepspeech_core.train.trainings import run_checkpoint_dir
from deepspeech_core.workdir.locking import workdir_lock
from tasks.features import build_feature_cache_stage
from tasks.tune_lm import tune_lm_task
from tasks.validate import validate_corpus_task


@flow(
    name="tune-lm", flow_run_name=lambda: f"tune-lm-{datetime.now():%Y%m%d-%H%M}", log_prints=True
)
def tune_lm_flow(
    config: PipelineConfig,
    n_trials: int = 2400,
    lm_alpha_max: float = 5.0,
    lm_beta_max: float = 5.0,
) -> TuningResult:
    """Tune lm_alpha/lm_beta of `config.evaluation.scorer_path` on the dev set."""
    config = config.resolved()
    with workdir_lock(config.workdir):
        corpus = validate_corpus_task(config)
        features = build_feature_cache_stage(config, corpus)
        checkpoint_dir = run_checkpoint_dir(config, features, reuse_trained_model=True)
        return tune_lm_task(config, features, checkpoint_dir, n_trials, lm_alpha_max, lm_beta_max)
