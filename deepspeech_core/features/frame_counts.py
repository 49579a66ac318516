"""Frame counts: how many MFCC frames audio makes, and how many CTC needs for a transcript.

Validation (a clip too short for its transcript is rejected), feature extraction (which
pads a clip to its last frame and cuts a batch of clips back into clips) and the training
input pipeline all count frames; they share these formulas so that they can never
disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from deepspeech_core.config import FeatureConfig

# Part of the feature cache's and validation's keys: a cache or a validation made with
# another frame formula is rebuilt, never mixed with this one.
FRAMES_VERSION = "client-final-frame-1"


def feature_frames(n_samples: int, features: FeatureConfig) -> int:
    """MFCC frames of `n_samples`: every full window, plus the final frame DeepSpeech's
    client computes at the end of a stream.

    libdeepspeech (native_client/deepspeech.cc, StreamingState::finalizeStream) always
    takes the MFCCs of the audio left after the last full window (192 to 511 samples at
    16 kHz; all of a clip shorter than one window), zero-padded to a window by its
    TensorFlow build. Training, validation and `transcribe` count and compute that frame
    too, so that `transcribe` sees what a DeepSpeech app sees and the model is trained
    on the frames it will be run on.
    """
    if n_samples <= 0:
        return 0
    full = 0
    if n_samples >= features.window_samples:
        full = 1 + (n_samples - features.window_samples) // features.step_samples
    return full + 1


def padded_samples(n_samples: int, features: FeatureConfig) -> int:
    """Samples the audio is zero-padded to so that AudioSpectrogram (no padding of its
    own) makes exactly `feature_frames(n_samples)` frames."""
    frames = feature_frames(n_samples, features)
    if frames == 0:
        return n_samples
    return (frames - 1) * features.step_samples + features.window_samples


def ctc_required_frames(labels: Sequence) -> int:
    """Frames CTC needs for a transcript or label sequence: one per label, plus a blank
    between repeats."""
    repeats = sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)
    return len(labels) + repeats
