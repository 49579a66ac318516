"""DeepSpeech 0.9.3's MFCC front end: one function for the cache and the exported model.

`audio_to_mfccs` is the exact op sequence of DeepSpeech's `samples_to_mfccs`
(AudioSpectrogram with a 32 ms window and 20 ms stride, magnitude squared, then Mfcc
with 26 coefficients and the upper frequency at half the sample rate), on the audio
zero-padded to one more frame: the last one DeepSpeech's client computes (see
`frames.feature_frames`). The feature cache, `transcribe` and the SavedModel's raw-audio
signature all call it, so training, inference and the client cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from deepspeech_core.config import FeatureConfig
from deepspeech_core.features.frame_counts import feature_frames, padded_samples


def audio_to_mfccs(samples: tf.Tensor, features: FeatureConfig) -> tf.Tensor:
    """Float samples in [-1, 1], shape [n] -> MFCCs [feature_frames(n), n_input] (float32).

    The audio is zero-padded to `frames.padded_samples`, so the last frame holds what is
    left after the last full window: the frame DeepSpeech's client computes at the end
    of every stream (see `frames.feature_frames`).
    """
    samples = tf.reshape(tf.cast(samples, tf.float32), [-1])
    n = tf.size(samples)
    window, step = features.window_samples, features.step_samples
    full = tf.where(n >= window, 1 + (n - window) // step, 0)
    padded = tf.where(n > 0, full * step + window, 0)  # frames.padded_samples, in the graph
    return window_mfccs(tf.pad(samples, [[0, padded - n]]), features)


def window_mfccs(samples: tf.Tensor, features: FeatureConfig) -> tf.Tensor:
    """MFCCs of every full window of the samples, nothing padded: [frames, n_input].

    The op sequence itself; the DeepSpeech graphs' `mfccs` output applies it to the one
    window the client feeds, which the client has already padded.
    """
    samples = tf.reshape(tf.cast(samples, tf.float32), [-1, 1])
    spectrogram = tf.raw_ops.AudioSpectrogram(
        input=samples,
        window_size=features.window_samples,
        stride=features.step_samples,
        magnitude_squared=True,
    )
    mfccs = tf.raw_ops.Mfcc(
        spectrogram=spectrogram,
        sample_rate=features.audio_sample_rate,
        upper_frequency_limit=features.audio_sample_rate / 2,
        lower_frequency_limit=20.0,
        filterbank_channel_count=40,
        dct_coefficient_count=features.n_input,
    )
    return tf.reshape(mfccs, [-1, features.n_input])


class MfccExtractor:
    """A compiled `audio_to_mfccs` for one feature configuration (no retracing per clip)."""

    def __init__(self, features: FeatureConfig) -> None:
        self.features = features
        # int16 in, scaled in the graph to tf.audio.decode_wav's float32 values (division
        # by a power of two is exact), without a numpy pass per call. No AutoGraph: the
        # op sequence has no Python control flow, and converting it cost each process
        # (each feature worker, each grown-corpus run) ~0.15 CPU-s and ~0.4 s before the
        # first clip (bench/scale.py's profile of 1 % new clips).
        self._fn = tf.function(
            lambda x: audio_to_mfccs(tf.cast(x, tf.float32) / 32768.0, features),
            input_signature=[tf.TensorSpec([None], tf.int16)],
            autograph=False,
        )

    def __call__(self, pcm16: np.ndarray) -> np.ndarray:
        return self._fn(tf.constant(pcm16, dtype=tf.int16)).numpy()

    def batch(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """MFCCs of many clips from one op call, identical to calling one clip at a time.

        Each clip starts at a multiple of the window step in one long signal, after
        the zeros that pad the previous clip to its last frame, so every frame of a clip
        sees exactly its own samples and zeros; frames that would straddle two clips are
        computed and dropped. Per-call overhead, not arithmetic, dominates for
        short clips, so this is several times faster than a call per clip.
        """
        step = self.features.step_samples
        starts, frames, total = [], [], 0
        for clip in clips:
            starts.append(total // step)
            frames.append(feature_frames(len(clip), self.features))
            # room for the clip's zero-padded last frame, rounded up to a whole step
            total += -(-max(padded_samples(len(clip), self.features), 1) // step) * step
        signal = np.zeros(total, np.int16)
        for clip, start in zip(clips, starts, strict=True):
            signal[start * step : start * step + len(clip)] = clip
        mfccs = self(signal)
        return [mfccs[s : s + n] for s, n in zip(starts, frames, strict=True)]


def context_windows(mfccs: tf.Tensor, n_context: int) -> tf.Tensor:
    """[batch, time, n_input] -> [batch, time, (2*n_context+1) * n_input].

    Each frame is joined with `n_context` frames on each side, zero-padded at the ends:
    what DeepSpeech's `create_overlapping_windows` builds with an identity conv filter,
    in the same (window position, coefficient) order.
    """
    width = 2 * n_context + 1
    padded = tf.pad(mfccs, [[0, 0], [n_context, n_context], [0, 0]])
    frames = tf.signal.frame(padded, frame_length=width, frame_step=1, axis=1)
    shape = tf.shape(mfccs)
    return tf.reshape(frames, [shape[0], shape[1], width * mfccs.shape[-1]])
