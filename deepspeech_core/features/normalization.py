"""Global feature normalisation: the training features' mean and standard deviation.

Speaker-disjoint corpora (Common Voice's official splits) reward features that do not
carry the recording's level and channel: NeMo, icefall and ESPnet recipes normalise
their features as a matter of course, DeepSpeech did not. A global (not per-utterance)
mean/variance is the form that streams: one affine map per coefficient, fixed at
training time, which every exported graph applies inside itself (model.FeatureNormalization
and model.normalize_windows), so DeepSpeech clients run it without knowing about it.
"""

from __future__ import annotations

import numpy as np

from deepspeech_core.features.batches import SplitIndex

MIN_STD = 1e-6  # a constant coefficient (silence only) would otherwise divide by zero


def training_statistics(index: SplitIndex) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per MFCC coefficient over every frame of `index`'s clips.

    Sums in float64 over the memory-mapped shards, one clip at a time: exact, and a
    100-hour corpus (~18 M frames) takes seconds.
    """
    if not len(index):
        raise ValueError("no training clips to compute feature statistics from")
    total = np.zeros(index.n_input, np.float64)
    squares = np.zeros(index.n_input, np.float64)
    frames = 0
    for i in range(len(index)):
        x = np.asarray(index.features(i), np.float64)
        total += x.sum(axis=0)
        squares += np.square(x).sum(axis=0)
        frames += len(x)
    if not frames:
        raise ValueError("the training clips have no feature frames to compute statistics from")
    mean = total / frames
    variance = np.maximum(squares / frames - np.square(mean), 0.0)
    return mean.astype(np.float32), np.maximum(np.sqrt(variance), MIN_STD).astype(np.float32)
