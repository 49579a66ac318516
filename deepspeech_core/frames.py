"""Frame counts: how many MFCC frames audio makes, and how many CTC needs for a transcript.

Validation (a clip too short for its transcript is rejected), feature extraction (which
cuts a batch of clips back into clips) and the training input pipeline all count frames;
they share these two formulas so that they can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from deepspeech_core.config import FeatureConfig


def feature_frames(n_samples: int, features: FeatureConfig) -> int:
    """MFCC frames AudioSpectrogram makes from `n_samples` (no padding at the end)."""
    if n_samples < features.window_samples:
        return 0
    return 1 + (n_samples - features.window_samples) // features.step_samples


def ctc_required_frames(labels: Sequence) -> int:
    """Frames CTC needs for a transcript or label sequence: one per label, plus a blank
    between repeats."""
    repeats = sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)
    return len(labels) + repeats
