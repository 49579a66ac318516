"""tune-lm: DeepSpeech's lm_optimizer.py as a task run with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from deepspeech_core.config import PipelineConfig
from deepspeech_core.evaluate import lm_tuning
from deepspeech_core.evaluate.lm_tuning import TrialResult, TuningResult
from deepspeech_core.manifests import FeatureCacheManifest
from tasks.reporting import core_logs_to_run_log


class _TrialReporter:
    """A progress bar in the UI and a log line every few seconds: trial, pair, best."""

    def __init__(self, n_trials: int, log, every_seconds: float = 5.0) -> None:
        self.artifact_id = create_progress_artifact(
            progress=0.0, key="lm-tuning-progress", description="tune-lm trials"
        )
        self.n_trials, self.log, self.every, self.last = n_trials, log, every_seconds, 0.0

    def __call__(self, trial: TrialResult, best: TrialResult) -> None:
        now = time.monotonic()
        done = trial.number + 1
        if now - self.last < self.every and done != self.n_trials:
            return
        self.last = now
        text = (
            f"trial {done}/{self.n_trials}: alpha {trial.lm_alpha:.3f}, beta "
            f"{trial.lm_beta:.3f}, WER {trial.wer:.4f}; best so far: alpha {best.lm_alpha:.3f}, "
            f"beta {best.lm_beta:.3f}, WER {best.wer:.4f}, CER {best.cer:.4f}"
        )
        self.log.info(text)
        update_progress_artifact(
            artifact_id=self.artifact_id, progress=100.0 * done / self.n_trials, description=text
        )


@task(name="tune_lm", task_run_name="tune-lm", cache_policy=NO_CACHE)
def tune_lm_task(
    config: PipelineConfig,
    features: FeatureCacheManifest,
    checkpoint_dir: Path,
    n_trials: int,
    lm_alpha_max: float,
    lm_beta_max: float,
) -> TuningResult:
    """Search lm_alpha/lm_beta on the dev set; write them where evaluate and build-lm look."""
    with core_logs_to_run_log() as log:
        result = lm_tuning.tune(
            features,
            checkpoint_dir,
            config.evaluation,
            n_trials=n_trials,
            lm_alpha_max=lm_alpha_max,
            lm_beta_max=lm_beta_max,
            seed=config.training.seed,
            on_trial=_TrialReporter(n_trials, log),
        )
        path = lm_tuning.save(result, config.workdir)
        log.info(
            "best: lm_alpha %.4f, lm_beta %.4f, dev WER %.4f, CER %.4f (%s)",
            result.lm_alpha,
            result.lm_beta,
            result.wer,
            result.cer,
            path,
        )
    create_markdown_artifact(
        key="lm-tuning",
        markdown=(
            f"**Best lm_alpha {result.lm_alpha:.4f}, lm_beta {result.lm_beta:.4f}**: "
            f"{result.split} WER {result.wer:.4f}, CER {result.cer:.4f} on {result.clips} clips "
            f"after {len(result.trials)} trials, scorer `{result.scorer_path}`, checkpoint "
            f"`{result.checkpoint}`.\n\nSaved to `{path}`: the next evaluation with this "
            "scorer uses them, and `build-lm --scorer ... --workdir` writes them into the "
            "package."
        ),
        description="tune-lm result",
    )
    create_table_artifact(
        key="lm-tuning-trials",
        table=[t.model_dump() for t in sorted(result.trials, key=lambda t: t.wer)[:50]],
        description="The best 50 trials",
    )
    return result
