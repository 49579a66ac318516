"""tune-lm: DeepSpeech's lm_optimizer.py, searching lm_alpha/lm_beta on the dev set.

As lm_optimizer.py: optuna's default (TPE) sampler draws alpha in [0, lm_alpha_max] and
beta in [0, lm_beta_max] (5 and 5), each trial decodes the dev set with the scorer and
scores its corpus-level WER (CER in bytes-output mode), and the best pair wins. The
acoustic model runs once: its dev logits are kept and only the beam search is repeated.

The result is written to WORKDIR/reports/lm_tuning.json with the scorer's content hash:
the next evaluation with the same scorer uses the pair when --lm_alpha/--lm_beta are
not given, and `build-lm --scorer --workdir WORKDIR` writes it into the package header.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from deepspeech_core.config import EvaluationConfig
from deepspeech_core.evaluate.decoders import (
    LMBeamSearchDecoder,
    PyctcdecodeLMDecoder,
    make_lm_decoder,
)
from deepspeech_core.evaluate.error_rates import ErrorCounts, error_counts
from deepspeech_core.features.batches import SplitIndex, batch_plan, make_dataset
from deepspeech_core.manifests import FeatureCacheManifest
from deepspeech_core.model.checkpoints import load_model
from deepspeech_core.model.ctc_loss import make_eval_step
from deepspeech_core.workdir.atomic_files import atomic_write_json

log = logging.getLogger(__name__)

TUNING_FILE = Path("reports") / "lm_tuning.json"


class LMTuningError(ValueError):
    """tune-lm cannot run as asked; the message says what to do."""


class TrialResult(BaseModel):
    number: int
    lm_alpha: float
    lm_beta: float
    wer: float
    cer: float


class TuningResult(BaseModel):
    """The best pair and what it was found on; the file the next stages read."""

    scorer_path: Path
    scorer_sha256: str
    checkpoint: Path
    split: str
    clips: int
    metric: str
    lm_alpha: float
    lm_beta: float
    wer: float
    cer: float
    trials: list[TrialResult]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def split_logits(model, index: SplitIndex, batch_size: int, n_input: int) -> list[np.ndarray]:
    """Each clip's logits [frames, classes], in index order (the model runs once)."""
    out: list[np.ndarray] = [np.empty(0)] * len(index)
    plan = batch_plan(index.n_frames, batch_size)
    eval_step = make_eval_step(model, n_input)
    for ids, batch in zip(plan, make_dataset(index, plan, n_input), strict=True):
        logits, _ = eval_step(batch)
        logits, lengths = logits.numpy(), batch.feature_lengths.numpy()
        for j, i in enumerate(ids):
            out[i] = logits[j, : lengths[j]]
    return out


def _score(decoder: LMBeamSearchDecoder | PyctcdecodeLMDecoder, logits, references) -> ErrorCounts:
    totals = [0, 0, 0, 0]
    for clip, reference in zip(logits, references, strict=True):
        c = error_counts(reference, decoder.decode(clip))
        for k, v in enumerate((c.word_distance, c.word_length, c.char_distance, c.char_length)):
            totals[k] += v
    return ErrorCounts(*totals)


def tune(
    features: FeatureCacheManifest,
    checkpoint_dir: Path,
    cfg: EvaluationConfig,
    n_trials: int = 2400,
    lm_alpha_max: float = 5.0,
    lm_beta_max: float = 5.0,
    split: str = "dev",
    seed: int = 4568,
    on_trial: Callable[[TrialResult, TrialResult], None] | None = None,
) -> TuningResult:
    """Search alpha/beta on `split`; `on_trial(trial, best)` reports each trial."""
    import optuna

    if cfg.scorer_path is None:
        raise LMTuningError("tune-lm needs --scorer_path: the .scorer (or ARPA/KenLM) to tune")
    if split not in features.indexes:
        raise LMTuningError(
            f"no {split} split to tune on: give --dev_files or a corpus with dev.tsv"
        )
    model, spec, prefix = load_model(checkpoint_dir, "best")
    index = SplitIndex.load(features.indexes[split], spec.alphabet)
    started = time.monotonic()
    logits = split_logits(model, index, cfg.test_batch_size, spec.features.n_input)
    log.info("dev logits of %d clips in %.1f s", len(index), time.monotonic() - started)
    decoder = make_lm_decoder(spec.alphabet, cfg.scorer_path, cfg.beam_width)
    metric = "wer" if " " in spec.alphabet.characters else "cer"
    trials: list[TrialResult] = []

    def objective(trial) -> float:
        alpha = trial.suggest_float("lm_alpha", 0.0, lm_alpha_max)
        beta = trial.suggest_float("lm_beta", 0.0, lm_beta_max)
        decoder.set_weights(alpha, beta)
        counts = _score(decoder, logits, index.transcripts)
        result = TrialResult(
            number=trial.number, lm_alpha=alpha, lm_beta=beta, wer=counts.wer, cer=counts.cer
        )
        trials.append(result)
        best = min(trials, key=lambda t: getattr(t, metric))
        if on_trial is not None:
            on_trial(result, best)
        return getattr(result, metric)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    best = trials[study.best_trial.number]
    return TuningResult(
        scorer_path=Path(cfg.scorer_path),
        scorer_sha256=file_sha256(Path(cfg.scorer_path)),
        checkpoint=prefix,
        split=split,
        clips=len(index),
        metric=metric,
        lm_alpha=best.lm_alpha,
        lm_beta=best.lm_beta,
        wer=best.wer,
        cer=best.cer,
        trials=trials,
    )


def save(result: TuningResult, workdir: Path) -> Path:
    path = Path(workdir) / TUNING_FILE
    atomic_write_json(path, result.model_dump(mode="json"))
    return path


def load(workdir: Path) -> TuningResult | None:
    path = Path(workdir) / TUNING_FILE
    return TuningResult.model_validate_json(path.read_text()) if path.is_file() else None


def tuned_weights(workdir: Path, scorer_path: Path | None) -> tuple[float, float] | None:
    """tune-lm's pair for this scorer (same content), if it was tuned in `workdir`."""
    result = load(workdir)
    if result is None or scorer_path is None or not Path(scorer_path).is_file():
        return None
    if result.scorer_sha256 != file_sha256(Path(scorer_path)):
        return None
    return result.lm_alpha, result.lm_beta


def with_tuned_weights(cfg: EvaluationConfig, workdir: Path) -> EvaluationConfig:
    """`cfg` with tune-lm's alpha/beta where the flags left them unset."""
    if cfg.lm_alpha is not None and cfg.lm_beta is not None:
        return cfg
    tuned = tuned_weights(workdir, cfg.scorer_path)
    if tuned is None:
        return cfg
    alpha = cfg.lm_alpha if cfg.lm_alpha is not None else tuned[0]
    beta = cfg.lm_beta if cfg.lm_beta is not None else tuned[1]
    log.info("lm_alpha %.4f, lm_beta %.4f: tune-lm's for %s", alpha, beta, cfg.scorer_path)
    return cfg.model_copy(update={"lm_alpha": alpha, "lm_beta": beta})
