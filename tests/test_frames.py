"""One frame-count formula for validation, batched feature extraction and CTC."""

from __future__ import annotations

import numpy as np
import pytest

from deepspeech_core.config import FeatureConfig
from deepspeech_core.frames import ctc_required_frames, feature_frames

pytestmark = pytest.mark.unit  # `make test-fast`


def test_batched_mfccs_are_cut_by_the_same_formula_as_validation_counts():
    from deepspeech_core.features import MfccExtractor

    features = FeatureConfig()
    rng = np.random.default_rng(0)
    lengths = [100, features.window_samples, 5_000, 16_000, features.window_samples + 319]
    clips = [rng.integers(-3000, 3000, n).astype(np.int16) for n in lengths]
    extractor = MfccExtractor(features)

    batched = extractor.batch(clips)

    assert [len(m) for m in batched] == [feature_frames(n, features) for n in lengths]
    for clip, mfccs in zip(clips[1:], batched[1:], strict=True):  # the first is too short
        np.testing.assert_allclose(mfccs, extractor(clip), rtol=1e-5, atol=1e-4)


def test_ctc_needs_a_blank_between_repeated_labels():
    assert ctc_required_frames([3, 3, 4]) == 4
    assert ctc_required_frames("") == 0
