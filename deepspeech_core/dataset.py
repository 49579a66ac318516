"""Batches for training and evaluation, read from the feature cache.

An epoch is a *batch plan*: a list of index arrays made deterministically from the
seed and the epoch number. Resuming at batch k of an epoch is then just taking the
plan from k on: no input-pipeline state has to be saved, and the batches after a
resume are exactly the ones an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import tensorflow as tf

from deepspeech_core.alphabet import Alphabet
from deepspeech_core.feature_cache import ShardReader


class Batch(NamedTuple):
    """Padded features and labels with their true lengths (CTC needs those, not the pad)."""

    features: tf.Tensor  # [batch, frames, n_input] float32
    feature_lengths: tf.Tensor  # [batch] int32
    labels: tf.Tensor  # [batch, max_label] int32, padded with 0
    label_lengths: tf.Tensor  # [batch] int32


@dataclass(frozen=True)
class SplitIndex:
    """One split of the feature cache, ready to batch."""

    reader: ShardReader
    shards: list[str]
    offsets: np.ndarray
    n_frames: np.ndarray
    durations: np.ndarray
    transcripts: list[str]
    labels: list[np.ndarray]
    wav_filenames: list[str]

    def __len__(self) -> int:
        return len(self.shards)

    def features(self, i: int) -> np.ndarray:
        return self.reader.read(self.shards[i], int(self.offsets[i]), int(self.n_frames[i]))

    @classmethod
    def load(cls, index_csv: Path, alphabet: Alphabet) -> SplitIndex:
        df = pd.read_csv(index_csv, dtype={"transcript": str, "shard": str}, keep_default_na=False)
        return cls(
            reader=ShardReader(Path(index_csv).parent),
            shards=list(df["shard"]),
            offsets=df["offset"].to_numpy(np.int64),
            n_frames=df["n_frames"].to_numpy(np.int64),
            durations=df["duration"].to_numpy(np.float64),
            transcripts=list(df["transcript"]),
            labels=[alphabet.encode(t) for t in df["transcript"]],
            wav_filenames=list(df["wav_filename"]),
        )


def batch_plan(
    n_frames: np.ndarray, batch_size: int, *, seed: int | None = None, epoch: int = 0
) -> list[np.ndarray]:
    """Split clip indices into batches of similar length.

    With a seed (training): lengths get a little random jitter before sorting, so
    batches differ between epochs while padding stays small; batch order is shuffled;
    the batch with the longest clips goes first so an out-of-memory error shows in the
    first seconds, not hours in. Without a seed (dev/test): sorted, in order.
    """
    n = len(n_frames)
    if seed is None:
        order = np.argsort(n_frames, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    jitter = n_frames * (1.0 + rng.uniform(-0.1, 0.1, size=n))
    order = np.argsort(jitter, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng.shuffle(batches)
    longest = int(np.argmax([n_frames[b].max() for b in batches]))
    batches.insert(0, batches.pop(longest))
    return batches


def _pad(arrays: Sequence[np.ndarray], dtype: type, width: int | None = None) -> np.ndarray:
    width = width if width is not None else max(len(a) for a in arrays)
    out = np.zeros((len(arrays), width, *arrays[0].shape[1:]), dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def load_batch(index: SplitIndex, ids: np.ndarray) -> Batch:
    feats = [index.features(i) for i in ids]
    labels = [index.labels[i] for i in ids]
    return Batch(
        features=_pad(feats, np.float32),
        feature_lengths=np.array([len(f) for f in feats], np.int32),
        labels=_pad(labels, np.int32, max(1, max(len(x) for x in labels))),
        label_lengths=np.array([len(x) for x in labels], np.int32),
    )


def batch_signature(n_input: int) -> Batch:
    return Batch(
        features=tf.TensorSpec([None, None, n_input], tf.float32),
        feature_lengths=tf.TensorSpec([None], tf.int32),
        labels=tf.TensorSpec([None, None], tf.int32),
        label_lengths=tf.TensorSpec([None], tf.int32),
    )


def make_dataset(index: SplitIndex, plan: Sequence[np.ndarray], n_input: int) -> tf.data.Dataset:
    """Batches of `plan`, loaded and padded off the training thread, prefetched."""

    def generate() -> Iterator[Batch]:
        for ids in plan:
            yield load_batch(index, ids)

    dataset = tf.data.Dataset.from_generator(generate, output_signature=batch_signature(n_input))
    return dataset.prefetch(4)
