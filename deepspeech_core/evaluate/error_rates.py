"""Word and character error rates, DeepSpeech's corpus-level definition.

WER = sum of word edit distances / sum of reference words over the whole set (never an
average of per-sample or per-batch rates); CER likewise over characters. jiwer computes
the alignments.
"""

from __future__ import annotations

from dataclasses import dataclass

import jiwer


@dataclass(frozen=True)
class ErrorCounts:
    word_distance: int
    word_length: int
    char_distance: int
    char_length: int

    @property
    def wer(self) -> float:
        return self.word_distance / self.word_length if self.word_length else 0.0

    @property
    def cer(self) -> float:
        return self.char_distance / self.char_length if self.char_length else 0.0


def _distance(output) -> int:
    return output.substitutions + output.deletions + output.insertions


def error_counts(reference: str, hypothesis: str) -> ErrorCounts:
    """Edit distances and reference lengths of one sample."""
    words = jiwer.process_words(reference, hypothesis)
    chars = jiwer.process_characters(reference, hypothesis)
    return ErrorCounts(
        word_distance=_distance(words),
        word_length=len(reference.split()),
        char_distance=_distance(chars),
        char_length=len(reference),
    )


def corpus_error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """(WER, CER) over the whole set."""
    if not references:
        return 0.0, 0.0
    return (
        float(jiwer.wer(references, hypotheses)),
        float(jiwer.cer(references, hypotheses)),
    )
