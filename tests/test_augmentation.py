import numpy as np
import pytest

from deepspeech_core.config import TrainingConfig
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.features.augmentation import (
    AugmentationError,
    AugmentationPlan,
    augment_clip,
    parse_augmentation,
    parse_value,
)
from deepspeech_core.features.batches import SplitIndex, batch_plan, load_batch


def _features(frames=100, n=26, seed=0):
    return np.random.default_rng(seed).normal(3.0, 1.0, (frames, n)).astype(np.float32)


def _apply(spec, x, seed=0, clock=0.0, min_frames=0):
    return augment_clip(
        x, [parse_augmentation(spec)], np.random.default_rng(seed), clock, 20.0, min_frames
    )


def test_value_syntax_follows_deepspeech():
    rng = np.random.default_rng(0)
    assert parse_value("3", True).pick(rng, 0.5) == 3
    ramp = parse_value("2:6", True)
    assert (ramp.pick(rng, 0.0), ramp.pick(rng, 0.5), ramp.pick(rng, 1.0)) == (2, 4, 6)
    jitter = parse_value("1.0~0.25", False)
    draws = [jitter.pick(rng, 0) for _ in range(200)]
    assert 0.75 <= min(draws) < 0.8
    assert 1.2 < max(draws) <= 1.25
    both = parse_value("0:10~1", False)
    assert 4 <= both.pick(rng, 0.5) <= 6


@pytest.mark.parametrize(
    "spec, message",
    [
        ("warp[p=1]", "unknown augmentation"),
        ("time_mask[nn=2]", "unknown parameter"),
        ("time_mask[n=two]", "bad value"),
        ("time_mask[p=2]", "between 0 and 1"),
        ("volume[p=0.5,gain=3]", "unknown parameter"),
        ("overlay[p=0.5,source=/nonexistent]", "neither a folder"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(AugmentationError, match=message):
        parse_augmentation(spec)
    with pytest.raises(ValueError, match=message):
        TrainingConfig(augment=[spec])


def test_frequency_mask_zeroes_bands_of_coefficients():
    out = _apply("frequency_mask[p=1,n=1,size=4]", _features())
    zero_columns = np.flatnonzero((out == 0).all(axis=0))
    assert len(zero_columns) == 4
    assert np.all(np.diff(zero_columns) == 1)


def test_time_mask_zeroes_spans_of_frames():
    out = _apply("time_mask[p=1,n=1,size=100]", _features())  # 100 ms = 5 frames of 20 ms
    assert np.count_nonzero((out == 0).all(axis=1)) == 5


def test_dropout_add_multiply():
    x = _features(400)
    dropped = _apply("dropout[p=1,rate=0.2]", x)
    assert 0.17 < np.mean(dropped == 0) < 0.23
    added = _apply("add[p=1,stddev=0.5]", x) - x
    assert abs(added.mean()) < 0.02
    assert 0.47 < added.std() < 0.53
    ratio = _apply("multiply[p=1,stddev=0.1]", x) / x
    assert abs(ratio.mean() - 1) < 0.01
    assert 0.09 < ratio.std() < 0.11


def test_pitch_keeps_shape_and_tempo_rescales_time():
    x = _features(100)
    pitched = _apply("pitch[p=1,pitch=1.2]", x)
    assert pitched.shape == x.shape
    assert not np.allclose(pitched, x)
    faster = _apply("tempo[p=1,factor=1.25]", x)
    assert faster.shape == (80, 26)
    limited = _apply("tempo[p=1,factor=4]", x, min_frames=60)
    assert limited.shape == (60, 26), "never shorter than CTC needs"


def test_probability_zero_changes_nothing():
    x = _features()
    np.testing.assert_array_equal(_apply("add[p=0,stddev=5]", x), x)


def test_augmented_batches_are_reproducible(trained):
    _, _, features, _ = trained
    index = SplitIndex.load(features.indexes["train"], Alphabet.load(features.alphabet_path))
    plan = batch_plan(index.n_frames, 8, seed=3, epoch=1)
    augs = tuple(
        parse_augmentation(s)
        for s in [
            "frequency_mask[p=0.8,n=2:4,size=2:4]",
            "time_mask[p=0.5]",
            "tempo[p=0.5,factor=1.1~0.1]",
        ]
    )
    aug = AugmentationPlan(
        augs, seed=9, epoch=1, epochs=2, batches_per_epoch=len(plan), win_step_ms=20
    )
    first = load_batch(index, plan[2], aug, batch_number=2)
    again = load_batch(index, plan[2], aug, batch_number=2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    plain = load_batch(index, plan[2])
    assert not np.array_equal(first.features[:, : plain.features.shape[1]], plain.features)
    other = load_batch(index, plan[2], aug, batch_number=3)
    assert not np.array_equal(first.features, other.features)


# --- sample domain (before the cache) -------------------------------------------------


def _speechlike(seconds=1.0, rate=16000, seed=0):
    """Harmonics plus a little noise, as int16."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate([220, 440, 3000, 6000], 1))
    x = 0.2 * x / np.abs(x).max() + rng.normal(0, 0.005, len(t))
    return np.round(x * 32767).astype(np.int16)


def _run_sample(spec, pcm, seed=0):
    from deepspeech_core.features.augmentation import augment_audio

    out, changed = augment_audio(
        pcm, [parse_augmentation(spec)], 16000, np.random.default_rng(seed)
    )
    assert changed
    return out.astype(np.float64) / 32768.0


def _band_energy(x, low, high, rate=16000):
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return spectrum[(freqs >= low) & (freqs < high)].sum()


def test_volume_sets_the_peak_level():
    out = _run_sample("volume[p=1,dbfs=6]", _speechlike())
    assert 20 * np.log10(np.abs(out).max()) == pytest.approx(-6, abs=0.05)


def test_resample_removes_what_the_lower_rate_cannot_hold():
    pcm = _speechlike()
    original = pcm.astype(np.float64) / 32768.0
    out = _run_sample("resample[p=1,rate=8000]", pcm)
    assert len(out) == len(pcm)
    assert _band_energy(out, 5000, 8000) < 0.01 * _band_energy(original, 5000, 8000)
    assert _band_energy(out, 100, 1000) == pytest.approx(_band_energy(original, 100, 1000), rel=0.1)


def test_reverb_adds_echoes_and_keeps_the_peak():
    pcm = np.zeros(16000, np.int16)
    pcm[:800] = _speechlike(0.05)
    out = _run_sample("reverb[p=1,delay=20,decay=6]", pcm)
    original = pcm.astype(np.float64) / 32768.0
    assert not original[2000:].any()
    assert np.abs(out[2000:]).max() > 0.01 * np.abs(original).max(), "echoes after the sound"
    assert np.abs(out).max() == pytest.approx(np.abs(original).max(), rel=0.01)


def test_codec_round_trip_is_lossy_but_close():
    pcm = _speechlike()
    out = _run_sample("codec[p=1,bitrate=16000]", pcm)
    original = pcm.astype(np.float64) / 32768.0
    assert len(out) == len(pcm)
    assert not np.allclose(out, original, atol=1e-4)
    assert np.corrcoef(out[1000:-1000], original[1000:-1000])[0, 1] > 0.5


def test_overlay_mixes_noise_at_the_requested_snr(tmp_path):
    import soundfile

    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    soundfile.write(noise_dir / "hum.wav", _speechlike(0.3, seed=5)[::-1], 16000)
    pcm = _speechlike()
    out = _run_sample(f"overlay[p=1,source={noise_dir},snr=10]", pcm)
    original = pcm.astype(np.float64) / 32768.0
    noise = out - original
    snr = 10 * np.log10(np.mean(original**2) / np.mean(noise**2))
    assert snr == pytest.approx(10, abs=0.2)


def test_sample_augmentation_makes_a_separate_augmented_copy(trained):
    from deepspeech_core.features.cache import build_feature_cache

    cfg, corpus, plain, _ = trained
    specs = ["resample[p=1,rate=4000]", "volume[p=1,dbfs=10]"]
    first = build_feature_cache(
        corpus, cfg.features, cfg.workdir, sample_augment=specs, augment_seed=5
    )
    assert first.namespace == plain.namespace, "the original namespace is reused"
    assert first.counts["train_augmented"] == first.counts["train"]
    aug_index = first.indexes["train_augmented"]
    assert aug_index.parent.name.startswith(f"{plain.namespace}-aug-")
    alphabet = Alphabet.load(first.alphabet_path)
    original = SplitIndex.load(first.indexes["train"], alphabet)
    augmented = SplitIndex.load(aug_index, alphabet)
    assert not np.allclose(original.features(0), augmented.features(0))
    assert original.n_frames[0] == augmented.n_frames[0]
    both = original.concat(augmented)
    assert len(both) == 2 * len(original)
    again = build_feature_cache(
        corpus, cfg.features, cfg.workdir, sample_augment=specs, augment_seed=5
    )
    assert again.computed == 0
    # the plain cache is what it was: the augmented copy lives elsewhere
    unaugmented = build_feature_cache(corpus, cfg.features, cfg.workdir)
    assert "train_augmented" not in unaugmented.indexes
    assert unaugmented.computed == 0
    np.testing.assert_array_equal(
        SplitIndex.load(unaugmented.indexes["train"], alphabet).features(0), original.features(0)
    )


def test_sample_augmented_copies_are_reproducible_by_seed(trained, tmp_path):
    from deepspeech_core.features.cache import build_feature_cache

    cfg, corpus, _, _ = trained
    specs = ["reverb[p=0.5,delay=10:30,decay=6~2]", "codec[p=0.5,bitrate=8000]"]

    def copies(workdir, seed):
        m = build_feature_cache(
            corpus, cfg.features, workdir, sample_augment=specs, augment_seed=seed
        )
        index = SplitIndex.load(m.indexes["train_augmented"], Alphabet.load(m.alphabet_path))
        return [index.features(i).tobytes() for i in range(len(index))]

    a, b, c = copies(tmp_path / "a", 1), copies(tmp_path / "b", 1), copies(tmp_path / "c", 2)
    assert a == b
    assert 0 < len(a) < 32  # p=0.5 twice: most but not all clips changed
    assert a != c
