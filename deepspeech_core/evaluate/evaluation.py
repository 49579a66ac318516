"""The evaluate stage: decode the test files, per-sample results, DeepSpeech's reports.

As DeepSpeech's evaluate.py: every test file is reported on its own (WER, CER, mean
loss) and the best, median and worst `report_count` samples are shown; the per-sample
JSON has DeepSpeech's --test_output_file fields. On top: the whole test split's figures,
a WER-by-duration breakdown, WER/CER per speaker (Common Voice client_id) and per
gender, age and accent where the corpus fills them, and the decoder that produced them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepspeech_core import progress
from deepspeech_core.config import EvaluationConfig
from deepspeech_core.evaluate.decoders import (
    Decoder,
    DecoderPool,
    GreedyDecoder,
    available_cores,
    make_decoder,
)
from deepspeech_core.evaluate.error_rates import ErrorCounts, error_counts
from deepspeech_core.evaluate.speakers import DEMOGRAPHICS, SPEAKER, clip_speakers, group_by
from deepspeech_core.features.batches import SplitIndex, batch_plan, make_dataset
from deepspeech_core.manifests import EvaluationManifest, FeatureCacheManifest, Metrics
from deepspeech_core.model.checkpoints import load_model
from deepspeech_core.model.ctc_loss import make_eval_step
from deepspeech_core.workdir.atomic_files import atomic_write_json

log = logging.getLogger(__name__)


class NothingToEvaluateError(ValueError):
    """The run has no test clips; the message says how to give some."""


# Upper bounds (seconds) of the WER-by-duration rows; the last row is open-ended.
DURATION_EDGES = (2.0, 4.0, 6.0, 8.0, 10.0)


@dataclass(frozen=True)
class SampleResult:
    """One clip's result, with exactly DeepSpeech's --test_output_file fields."""

    wav_filename: str
    src: str
    res: str
    loss: float
    char_distance: int
    char_length: int
    word_distance: int
    word_length: int
    cer: float
    wer: float


# Beam search in worker processes pays off from this many clips (starting a worker and
# loading its decoder takes about a second); below it the clips are decoded here.
PARALLEL_MIN_CLIPS = 32


def decoder_workers(decoder: Decoder, clips: int) -> int:
    """How many processes decode: every core for a beam search over enough clips."""
    if isinstance(decoder, GreedyDecoder) or not hasattr(decoder, "config"):
        return 1
    return available_cores() if clips >= PARALLEL_MIN_CLIPS else 1


def decode_split(
    model,
    decoder: Decoder,
    index: SplitIndex,
    batch_size: int,
    n_input: int,
    workers: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """(per-sample CTC loss, decoded text) for every clip of `index`, in index order.

    The model's forward pass runs here while `workers` processes (None: see
    `decoder_workers`) decode earlier batches, so both cores stay busy; at most a few
    batches per worker wait, so memory does not grow with the split.
    """
    workers = decoder_workers(decoder, len(index)) if workers is None else workers
    losses = np.zeros(len(index), np.float64)
    texts = [""] * len(index)
    plan = batch_plan(index.n_frames, batch_size)
    eval_step = make_eval_step(model, n_input)
    progress.report("evaluate", len(index), 0)
    tracker = _Progress(index)
    pool = DecoderPool(decoder, workers) if workers > 1 else None
    pending: deque[tuple[np.ndarray, Future]] = deque()
    try:
        for ids, batch in zip(plan, make_dataset(index, plan, n_input), strict=True):
            logits, batch_losses = eval_step(batch)
            logits, lengths = logits.numpy(), batch.feature_lengths.numpy()
            losses[ids] = np.asarray(batch_losses)
            clips = [logits[j, : lengths[j]] for j in range(len(ids))]
            if pool is None:
                tracker.done(ids, [decoder.decode(c) for c in clips], texts)
                continue
            pending.append((ids, pool.submit(clips)))
            while len(pending) > 4 * workers:
                done_ids, future = pending.popleft()
                tracker.done(done_ids, future.result(), texts)
        while pending:
            done_ids, future = pending.popleft()
            tracker.done(done_ids, future.result(), texts)
    finally:
        if pool is not None:
            pool.close()
    return losses, texts


class _Progress:
    """Progress of a split's decoding: the progress bar, and a log line every 30 s."""

    def __init__(self, index: SplitIndex) -> None:
        self.index, self.count = index, 0
        self.started = self.last_log = time.monotonic()

    def done(self, ids: np.ndarray, decoded: list[str], texts: list[str]) -> None:
        for i, text in zip(ids, decoded, strict=True):
            texts[i] = text
        self.count += len(ids)
        seconds = float(self.index.durations[ids].sum())
        progress.report("evaluate", len(self.index), self.count, audio_seconds=seconds)
        if time.monotonic() - self.last_log > 30:
            self.last_log = time.monotonic()
            log.info(
                "decoded %d/%d clips (%.1f clips/s)",
                self.count,
                len(self.index),
                self.count / (self.last_log - self.started),
            )


def _metrics(samples: list[SampleResult]) -> Metrics:
    """Corpus-level rates from the samples' own jiwer counts (no second alignment)."""
    totals = ErrorCounts(
        word_distance=sum(s.word_distance for s in samples),
        word_length=sum(s.word_length for s in samples),
        char_distance=sum(s.char_distance for s in samples),
        char_length=sum(s.char_length for s in samples),
    )
    wer, cer = totals.wer, totals.cer
    loss = float(np.mean([s.loss for s in samples])) if samples else 0.0
    return Metrics(wer=wer, cer=cer, loss=loss, samples=len(samples))


def _duration_label(seconds: float) -> str:
    low = 0.0
    for high in DURATION_EDGES:
        if seconds < high:
            return f"{low:g}-{high:g} s"
        low = high
    return f">= {low:g} s"


def by_duration(samples: list[SampleResult], durations: np.ndarray) -> dict[str, Metrics]:
    """Metrics per clip-length range, shortest first (empty ranges left out)."""
    groups: dict[str, list[SampleResult]] = {}
    for sample, seconds in sorted(zip(samples, durations, strict=True), key=lambda x: x[1]):
        groups.setdefault(_duration_label(float(seconds)), []).append(sample)
    return {label: _metrics(group) for label, group in groups.items()}


def by_speaker(
    samples: list[SampleResult], index: SplitIndex
) -> tuple[dict[str, Metrics], dict[str, dict[str, Metrics]]]:
    """Metrics per Common Voice speaker (client_id), and per gender, age and accent.

    Empty where the corpus has no such column (DeepSpeech CSVs) or leaves it blank.
    """
    who = clip_speakers(index.wav_filenames, index.sources)
    speakers = group_by([w[SPEAKER] for w in who], samples)
    demographics = {}
    for column in DEMOGRAPHICS:
        groups = group_by([w[column] for w in who], samples)
        if groups:
            demographics[column] = {value: _metrics(group) for value, group in groups.items()}
    return {k: _metrics(group) for k, group in speakers.items()}, demographics


def report_examples(samples: list[SampleResult], count: int) -> dict[str, list[dict]]:
    """DeepSpeech's report: best, median and worst samples by WER, then by loss."""
    if not count or not samples:
        return {}
    ranked = sorted(samples, key=lambda s: (s.wer, s.loss))
    middle = max(0, len(ranked) // 2 - count // 2)
    groups = {
        "best": ranked[:count],
        "median": ranked[middle : middle + count],
        "worst": ranked[-count:][::-1],
    }
    return {name: [asdict(s) for s in group] for name, group in groups.items()}


def _sample(wav: str, ref: str, hyp: str, loss: float) -> SampleResult:
    counts = error_counts(ref, hyp)
    return SampleResult(
        wav,
        ref,
        hyp,
        float(loss),
        counts.char_distance,
        counts.char_length,
        counts.word_distance,
        counts.word_length,
        counts.cer,
        counts.wer,
    )


def evaluate(
    feature_manifest: FeatureCacheManifest,
    checkpoint_dir: Path,
    cfg: EvaluationConfig,
    reports_dir: Path,
    split: str = "test",
) -> EvaluationManifest:
    """Decode `split` with the best checkpoint; write evaluation.json and test_output.json."""
    if split not in feature_manifest.indexes:
        raise NothingToEvaluateError(
            f"no {split} split to evaluate: give --test_files or a corpus with test.tsv"
        )
    model, spec, prefix = load_model(checkpoint_dir, "best")
    decoder = make_decoder(spec.alphabet, cfg)
    index = SplitIndex.load(feature_manifest.indexes[split], spec.alphabet)
    log.info("evaluating %s (%d clips) with the %s decoder", prefix, len(index), decoder.name)
    losses, texts = decode_split(model, decoder, index, cfg.test_batch_size, spec.features.n_input)
    samples = [
        _sample(*row)
        for row in zip(index.wav_filenames, index.transcripts, texts, losses, strict=True)
    ]
    per_file: dict[str, list[SampleResult]] = {}
    for sample, source in zip(samples, index.sources, strict=True):
        per_file.setdefault(source, []).append(sample)
    overall = _metrics(samples)
    files = {source: _metrics(group) for source, group in per_file.items()}
    durations = by_duration(samples, index.durations)
    speakers, demographics = by_speaker(samples, index)
    examples = report_examples(samples, cfg.report_count)

    reports_dir = Path(reports_dir)
    report = reports_dir / "evaluation.json"
    test_output = reports_dir / "test_output.json"
    records = [asdict(s) for s in samples]
    atomic_write_json(test_output, records)
    if cfg.test_output_file is not None:
        atomic_write_json(Path(cfg.test_output_file), records)
    atomic_write_json(
        report,
        {
            **overall.model_dump(),
            "checkpoint": str(prefix),
            "split": split,
            "decoder": decoder.name,
            "beam_width": cfg.beam_width,
            "scorer_path": str(cfg.scorer_path) if cfg.scorer_path else None,
            "lm_alpha": getattr(decoder, "alpha", None),
            "lm_beta": getattr(decoder, "beta", None),
            "per_file": {k: v.model_dump() for k, v in files.items()},
            "by_duration": {k: v.model_dump() for k, v in durations.items()},
            "by_speaker": {k: v.model_dump() for k, v in speakers.items()},
            "by_demographic": {
                column: {k: v.model_dump() for k, v in groups.items()}
                for column, groups in demographics.items()
            },
            "examples": examples,
        },
    )
    for source, m in files.items():
        log.info(
            "Test on %s - WER: %.6f, CER: %.6f, loss: %.6f (%d clips)",
            source,
            m.wer,
            m.cer,
            m.loss,
            m.samples,
        )
    for speaker, m in speakers.items():
        log.info("speaker %s: WER %.4f, CER %.4f (%d clips)", speaker[:12], m.wer, m.cer, m.samples)
    _log_examples(examples)
    log.info(
        "%s: WER %.4f, CER %.4f, loss %.3f on %d clips (%s decoder)",
        split,
        overall.wer,
        overall.cer,
        overall.loss,
        overall.samples,
        decoder.name,
    )
    return EvaluationManifest(
        **overall.model_dump(),
        report_path=report,
        test_output_path=test_output,
        checkpoint=prefix,
        decoder=decoder.name,
        per_file=files,
        by_duration=durations,
        by_speaker=speakers,
        by_demographic=demographics,
        examples=examples,
    )


def _log_examples(examples: dict[str, list[dict]]) -> None:
    for title, group in examples.items():
        log.info("%s samples:", title.capitalize())
        for s in group:
            log.info(
                "  WER %.2f, CER %.2f, loss %.2f | %s\n    src: %r\n    res: %r",
                s["wer"],
                s["cer"],
                s["loss"],
                s["wav_filename"],
                s["src"],
                s["res"],
            )
