import numpy as np
import pandas as pd
import tensorflow as tf

from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.data.audio_files import read_wav_int16
from deepspeech_core.data.validation import validate_corpus
from deepspeech_core.features.batches import SplitIndex
from deepspeech_core.features.cache import build_feature_cache
from deepspeech_core.features.frame_counts import feature_frames
from deepspeech_core.features.mfcc import MfccExtractor, context_windows
from tests.helpers import sigkill_when


def _deepspeech_samples_to_mfccs(wav_path: str, features: FeatureConfig) -> np.ndarray:
    """DeepSpeech 0.9.3's path: tf.audio.decode_wav, then the two raw audio ops."""
    samples, rate = tf.audio.decode_wav(tf.io.read_file(wav_path))
    spectrogram = tf.raw_ops.AudioSpectrogram(
        input=samples, window_size=512, stride=320, magnitude_squared=True
    )
    mfccs = tf.raw_ops.Mfcc(
        spectrogram=spectrogram,
        sample_rate=rate,
        dct_coefficient_count=26,
        upper_frequency_limit=features.audio_sample_rate / 2,
    )
    return tf.reshape(mfccs, [-1, 26]).numpy()


def _deepspeech_overlapping_windows(batch_x: tf.Tensor, n_context: int) -> np.ndarray:
    """DeepSpeech's create_overlapping_windows: conv1d with an identity filter."""
    n_input = batch_x.shape[-1]
    width = 2 * n_context + 1
    eye = np.eye(width * n_input).reshape(width, n_input, width * n_input)
    out = tf.nn.conv1d(
        input=batch_x, filters=tf.constant(eye, tf.float32), stride=1, padding="SAME"
    )
    return out.numpy()


def test_mfccs_equal_deepspeech_raw_ops(trained):
    cfg, corpus, _, _ = trained
    wav = pd.read_csv(corpus.splits["test"]).wav_filename.iloc[0]
    from deepspeech_core.data.audio_files import read_wav_int16

    samples, _ = read_wav_int16(wav)
    ours = MfccExtractor(cfg.features)(samples)
    reference = _deepspeech_samples_to_mfccs(wav, cfg.features)
    # DeepSpeech's training features, then the one more frame its client computes
    assert ours.shape == (feature_frames(len(samples), cfg.features), 26)
    assert len(reference) == len(ours) - 1
    np.testing.assert_allclose(ours[:-1], reference, atol=1e-5)


def test_8khz_features():
    features = FeatureConfig(audio_sample_rate=8000)
    assert (features.window_samples, features.step_samples) == (256, 160)
    tone = (np.sin(np.arange(8000) / 5) * 8000).astype(np.int16)
    assert MfccExtractor(features)(tone).shape == (2 + (8000 - 256) // 160, 26)


def test_context_windows_match_deepspeech():
    x = tf.random.stateless_normal([2, 13, 26], seed=[1, 2])
    ours = context_windows(x, 9).numpy()
    np.testing.assert_allclose(ours, _deepspeech_overlapping_windows(x, 9), atol=1e-6)
    assert ours.shape == (2, 13, 494)


def test_cache_is_reused_and_namespaced(trained, tmp_path):
    cfg, corpus, first, _ = trained
    assert first.computed == sum(first.counts.values())
    again = build_feature_cache(corpus, cfg.features, cfg.workdir)
    assert again.computed == 0
    assert again.fingerprint == first.fingerprint

    index = pd.read_csv(first.indexes["train"])
    split = SplitIndex.load(first.indexes["train"], Alphabet.load(first.alphabet_path))
    feats = split.features(0)
    assert feats.shape == (index.n_frames.iloc[0], 26)
    assert feats.dtype == np.float32
    samples, _ = read_wav_int16(index.wav_filename.iloc[0])
    np.testing.assert_array_equal(feats, MfccExtractor(cfg.features)(samples))

    other = FeatureConfig(feature_win_len=25, feature_win_step=10)
    changed = build_feature_cache(corpus, other, cfg.workdir)
    assert changed.namespace != first.namespace
    assert changed.computed == sum(changed.counts.values())
    assert first.cache_dir.is_dir(), "the old namespace stays"


def test_growth_computes_only_new_clips(tiny_cv, tmp_path):
    import shutil

    grown = tmp_path / "cv"
    shutil.copytree(tiny_cv, grown)
    train_tsv = grown / "train.tsv"
    full = pd.read_csv(train_tsv, sep="\t", dtype=str, keep_default_na=False)
    full.head(20).to_csv(train_tsv, sep="\t", index=False)
    features = FeatureConfig()
    work = tmp_path / "work"
    first = build_feature_cache(
        validate_corpus(CorpusConfig(corpus=grown), features, work), features, work
    )
    full.to_csv(train_tsv, sep="\t", index=False)
    second = build_feature_cache(
        validate_corpus(CorpusConfig(corpus=grown), features, work), features, work
    )
    assert second.counts["train"] == len(full) > first.counts["train"]
    assert second.computed == len(full) - 20


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.validation import validate_corpus
from deepspeech_core.features.cache import build_feature_cache

def slow_map(fn, jobs):  # a shard, then a pause: time to be killed between shards
    out = []
    for job in jobs:
        out.append(fn(job))
        time.sleep(0.3)
    return out

if __name__ == "__main__":
    work = Path(sys.argv[2])
    corpus = validate_corpus(CorpusConfig(corpus=Path(sys.argv[1])), FeatureConfig(), work)
    build_feature_cache(corpus, FeatureConfig(), work, shard_size=4, map_fn=slow_map)
"""


def _cache_view(manifest):
    """What consumers see: per split, each clip's hash, frame count and features."""
    alphabet = Alphabet.load(manifest.alphabet_path)
    view = {}
    for split, path in manifest.indexes.items():
        index = SplitIndex.load(path, alphabet)
        df = pd.read_csv(path, keep_default_na=False)
        view[split] = [
            (h, int(n), index.features(i).tobytes())
            for i, (h, n) in enumerate(zip(df.content_hash, df.n_frames, strict=True))
        ]
    return view


def test_sigkilled_build_resumes_to_the_identical_cache(tiny_cv, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    killed = tmp_path / "killed"
    script = tmp_path / "build.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tiny_cv), str(killed)],
        cwd=Path(__file__).resolve().parents[1],
    )
    sigkill_when(
        proc, lambda: len(list(killed.glob("features/*/shards/*.index.csv"))) >= 3, 120, "the build"
    )
    done = len(list(killed.glob("features/*/shards/*.index.csv")))
    assert 3 <= done < 10

    features = FeatureConfig()
    corpus = validate_corpus(CorpusConfig(corpus=tiny_cv), features, killed)
    resumed = build_feature_cache(corpus, features, killed, shard_size=4)
    assert resumed.computed == 40 - 4 * done, "finished shards were not recomputed"
    clean_corpus = validate_corpus(CorpusConfig(corpus=tiny_cv), features, tmp_path / "clean")
    clean = build_feature_cache(clean_corpus, features, tmp_path / "clean", shard_size=4)
    assert _cache_view(resumed) == _cache_view(clean)
    assert not list(killed.glob("features/*/shards/.*")), "no partial files left behind"
