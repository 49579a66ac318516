"""Batches for training and evaluation, read from the feature cache.

An epoch is a *batch plan*: a list of index arrays made deterministically from the
seed and the epoch number. Resuming at batch k of an epoch is then just taking the
plan from k on: no input-pipeline state has to be saved, and the batches after a
resume are exactly the ones an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import tensorflow as tf

from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.features.augmentation import AugmentationPlan, augment_clip
from deepspeech_core.features.cache import ShardReader
from deepspeech_core.features.frame_counts import ctc_required_frames


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
    sources: list[str]

    def __len__(self) -> int:
        return len(self.shards)

    def concat(self, other: SplitIndex) -> SplitIndex:
        """Both indexes' clips (shard ids are relative to the shared features root)."""
        return SplitIndex(
            reader=self.reader,
            shards=self.shards + other.shards,
            offsets=np.concatenate([self.offsets, other.offsets]),
            n_frames=np.concatenate([self.n_frames, other.n_frames]),
            durations=np.concatenate([self.durations, other.durations]),
            transcripts=self.transcripts + other.transcripts,
            labels=self.labels + other.labels,
            wav_filenames=self.wav_filenames + other.wav_filenames,
            sources=self.sources + other.sources,
        )

    @property
    def n_input(self) -> int:
        return self.reader.n_input

    def features(self, i: int) -> np.ndarray:
        return self.reader.read(self.shards[i], int(self.offsets[i]), int(self.n_frames[i]))

    def copy_features(self, i: int, out: np.ndarray) -> None:
        """Write clip i's frames into the start of `out` (no intermediate copy)."""
        self.reader.read_into(self.shards[i], int(self.offsets[i]), int(self.n_frames[i]), out)

    @classmethod
    def load(cls, index_csv: Path, alphabet: Alphabet) -> SplitIndex:
        df = pd.read_csv(
            index_csv,
            dtype={"transcript": str, "shard": str, "source": str},
            keep_default_na=False,
        )
        return cls(
            reader=ShardReader.for_index(Path(index_csv)),
            shards=list(df["shard"]),
            offsets=df["offset"].to_numpy(np.int64),
            n_frames=df["n_frames"].to_numpy(np.int64),
            durations=df["duration"].to_numpy(np.float64),
            transcripts=list(df["transcript"]),
            labels=[alphabet.encode(t) for t in df["transcript"]],
            wav_filenames=list(df["wav_filename"]),
            sources=list(df["source"]),
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


def _pad_labels(labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(x) for x in labels], np.int32)
    padded = np.zeros((len(labels), max(1, int(lengths.max()))), np.int32)
    for row, x in enumerate(labels):
        padded[row, : len(x)] = x
    return padded, lengths


def load_batch(
    index: SplitIndex,
    ids: np.ndarray,
    augment: AugmentationPlan | None = None,
    batch_number: int = 0,
) -> Batch:
    """One zero-padded batch; clips are copied straight from their shards.

    With an augmentation plan, each clip is augmented by a generator seeded from
    (seed, epoch, batch_number), so a batch is the same whenever it is made.
    """
    labels = [index.labels[i] for i in ids]
    padded_labels, label_lengths = _pad_labels(labels)
    if augment is None or not augment.augmentations:
        lengths = index.n_frames[ids]
        feats = np.zeros((len(ids), int(lengths.max()), index.n_input), np.float32)
        for row, i in enumerate(ids):
            index.copy_features(i, feats[row])
        return Batch(feats, lengths.astype(np.int32), padded_labels, label_lengths)
    rng, clock = augment.rng(batch_number), augment.clock(batch_number)
    clips = [
        augment_clip(
            index.features(i),
            list(augment.augmentations),
            rng,
            clock,
            augment.win_step_ms,
            ctc_required_frames(x),
        )
        for i, x in zip(ids, labels, strict=True)
    ]
    lengths = np.array([len(c) for c in clips], np.int32)
    feats = np.zeros((len(ids), int(lengths.max()), index.n_input), np.float32)
    for row, clip in enumerate(clips):
        feats[row, : len(clip)] = clip
    return Batch(feats, lengths, padded_labels, label_lengths)


def batch_signature(n_input: int) -> Batch:
    return Batch(
        features=tf.TensorSpec([None, None, n_input], tf.float32),
        feature_lengths=tf.TensorSpec([None], tf.int32),
        labels=tf.TensorSpec([None, None], tf.int32),
        label_lengths=tf.TensorSpec([None], tf.int32),
    )


def make_dataset(
    index: SplitIndex,
    plan: Sequence[np.ndarray],
    n_input: int,
    augment: AugmentationPlan | None = None,
    first_batch_number: int = 0,
) -> tf.data.Dataset:
    """Batches of `plan`, read and padded on tf.data's parallel threads, prefetched.

    Reading is a numpy copy from memory-mapped shards (far faster than the model
    consumes batches); tf.data runs it on background threads, in plan order, so the
    training step never waits for input.
    """
    plan = list(plan)

    def load(i: np.int64) -> tuple[np.ndarray, ...]:
        return tuple(load_batch(index, plan[int(i)], augment, first_batch_number + int(i)))

    def tf_load(i: tf.Tensor) -> Batch:
        spec = batch_signature(n_input)
        tensors = tf.numpy_function(load, [i], [s.dtype for s in spec], stateful=False)
        for tensor, s in zip(tensors, spec, strict=True):
            tensor.set_shape(s.shape)
        return Batch(*tensors)

    dataset = tf.data.Dataset.range(len(plan))
    dataset = dataset.map(tf_load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
