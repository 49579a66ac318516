"""One frame-count formula for validation, batched feature extraction and CTC."""

from __future__ import annotations

import numpy as np
import pytest

from deepspeech_core.config import FeatureConfig
from deepspeech_core.features.frame_counts import ctc_required_frames, feature_frames

pytestmark = pytest.mark.unit  # `make test-fast`


def test_batched_mfccs_are_cut_by_the_same_formula_as_validation_counts():
    from deepspeech_core.features.mfcc import MfccExtractor

    features = FeatureConfig()
    rng = np.random.default_rng(0)
    lengths = [100, features.window_samples, 5_000, 16_000, features.window_samples + 319]
    clips = [rng.integers(-3000, 3000, n).astype(np.int16) for n in lengths]
    extractor = MfccExtractor(features)

    batched = extractor.batch(clips)

    assert [len(m) for m in batched] == [feature_frames(n, features) for n in lengths]
    for clip, mfccs in zip(clips, batched, strict=True):
        np.testing.assert_allclose(mfccs, extractor(clip), rtol=1e-5, atol=1e-4)


def test_ctc_needs_a_blank_between_repeated_labels():
    assert ctc_required_frames([3, 3, 4]) == 4
    assert ctc_required_frames("") == 0


def test_the_last_frame_is_the_one_deepspeechs_client_computes():
    """libdeepspeech's finalizeStream takes the MFCCs of the 192-511 samples left after
    the last full window, zero-padded to a window (its TensorFlow build); ours too."""
    from deepspeech_core.features.mfcc import MfccExtractor, window_mfccs

    features = FeatureConfig()
    window, step = features.window_samples, features.step_samples
    extractor = MfccExtractor(features)
    rng = np.random.default_rng(1)
    for n in (300, window, 700, 831, 832, 16_000):
        clip = rng.integers(-3000, 3000, n).astype(np.int16)
        full = 1 + (n - window) // step if n >= window else 0
        rest = clip[full * step :]
        assert n < window or 192 <= len(rest) < window
        last = np.concatenate([rest, np.zeros(window - len(rest), np.int16)]) / 32768.0
        mfccs = extractor(clip)
        assert len(mfccs) == feature_frames(n, features) == full + 1
        np.testing.assert_allclose(mfccs[-1], window_mfccs(last, features).numpy()[0], atol=1e-4)
        whole = window_mfccs(clip / 32768.0, features).numpy()
        np.testing.assert_allclose(mfccs[:-1], whole, atol=1e-4)
