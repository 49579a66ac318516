"""The evaluate stage: greedy CTC decoding of a split, per-sample results, WER/CER."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepspeech_core.checkpoints import load_model
from deepspeech_core.config import EvaluationConfig
from deepspeech_core.dataset import SplitIndex, batch_plan, make_dataset
from deepspeech_core.io_utils import atomic_write_json
from deepspeech_core.losses import greedy_decode, make_eval_step
from deepspeech_core.manifests import EvaluationManifest, FeatureCacheManifest
from deepspeech_core.metrics import corpus_error_rates, error_counts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleResult:
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


def transcribe_split(model, alphabet, index: SplitIndex, batch_size: int, n_input: int):
    """(per-sample loss, decoded text) for every clip of `index`, in index order."""
    losses = np.zeros(len(index), np.float64)
    texts = [""] * len(index)
    plan = batch_plan(index.n_frames, batch_size)
    eval_step = make_eval_step(model, n_input)
    for ids, batch in zip(plan, make_dataset(index, plan, n_input), strict=True):
        logits, batch_losses = eval_step(batch)
        batch_losses = batch_losses.numpy()
        decoded = greedy_decode(logits, batch.feature_lengths)
        for j, i in enumerate(ids):
            losses[i] = batch_losses[j]
            texts[i] = alphabet.decode(decoded[j])
    return losses, texts


def evaluate(
    feature_manifest: FeatureCacheManifest,
    checkpoint_dir: Path,
    cfg: EvaluationConfig,
    reports_dir: Path,
    split: str = "test",
) -> EvaluationManifest:
    """Decode `split` with the best checkpoint; write evaluation.json and test_output.json."""
    if split not in feature_manifest.indexes:
        raise ValueError(
            f"no {split} split to evaluate: give --test_files or a corpus with test.tsv"
        )
    model, spec, prefix = load_model(checkpoint_dir, "best")
    index = SplitIndex.load(feature_manifest.indexes[split], spec.alphabet)
    losses, texts = transcribe_split(
        model, spec.alphabet, index, cfg.test_batch_size, spec.features.n_input
    )
    samples = []
    for wav, ref, hyp, loss in zip(
        index.wav_filenames, index.transcripts, texts, losses, strict=True
    ):
        counts = error_counts(ref, hyp)
        samples.append(
            SampleResult(
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
        )
    wer, cer = corpus_error_rates(index.transcripts, texts)
    mean_loss = float(np.mean(losses)) if len(losses) else 0.0
    reports_dir = Path(reports_dir)
    report = reports_dir / "evaluation.json"
    test_output = reports_dir / "test_output.json"
    atomic_write_json(test_output, [asdict(s) for s in samples])
    atomic_write_json(
        report,
        {
            "wer": wer,
            "cer": cer,
            "loss": mean_loss,
            "samples": len(samples),
            "checkpoint": str(prefix),
            "split": split,
        },
    )
    _log_examples(samples, cfg.report_count)
    log.info(
        "%s: WER %.4f, CER %.4f, loss %.3f on %d clips", split, wer, cer, mean_loss, len(samples)
    )
    return EvaluationManifest(
        wer=wer,
        cer=cer,
        loss=mean_loss,
        samples=len(samples),
        report_path=report,
        test_output_path=test_output,
        checkpoint=prefix,
    )


def _log_examples(samples: list[SampleResult], count: int) -> None:
    """Best and worst samples by WER then loss, as DeepSpeech's report does."""
    if not count:
        return
    ranked = sorted(samples, key=lambda s: (s.wer, s.loss))
    for title, group in (("best", ranked[:count]), ("worst", ranked[-count:][::-1])):
        for s in group:
            log.info(
                "%s: WER %.2f CER %.2f loss %.2f | src %r | res %r",
                title,
                s.wer,
                s.cer,
                s.loss,
                s.src,
                s.res,
            )
