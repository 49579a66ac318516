"""Shard reads by pread: the same frames as the array, no mapping kept, damage refused."""

import os

import numpy as np
import pytest

from deepspeech_core.features.cache import ShardReader


def _shards(root, count: int, rows: int = 50, n_input: int = 26) -> dict[str, np.ndarray]:
    (root / "ns" / "shards").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(count):
        arrays[f"ns/s{i}"] = rng.normal(size=(rows, n_input)).astype(np.float32)
        np.save(root / "ns" / "shards" / f"s{i}.npy", arrays[f"ns/s{i}"])
    return arrays


def _mapped_npy_files() -> int:
    with open(f"/proc/{os.getpid()}/maps") as f:
        return sum(line.rstrip().endswith(".npy") for line in f)


def test_reads_equal_the_arrays_and_map_nothing(tmp_path, monkeypatch):
    arrays = _shards(tmp_path, 3)
    monkeypatch.setattr(ShardReader, "_MAX_OPEN", 2)  # the third shard: open, read, close
    reader = ShardReader(tmp_path, 26)
    out = np.zeros((40, 26), np.float32)
    for shard, array in arrays.items():
        reader.read_into(shard, 7, 30, out)
        np.testing.assert_array_equal(out[:30], array[7:37])
        np.testing.assert_array_equal(reader.read(shard, 0, 5), array[:5])
    strided = np.zeros((40, 52), np.float32)[:, :26]  # not contiguous: copied in
    reader.read_into("ns/s0", 1, 3, strided)
    np.testing.assert_array_equal(strided[:3], arrays["ns/s0"][1:4])
    assert _mapped_npy_files() == 0, "shards must not stay mapped (their pages count as RSS)"
    reader.close()


def test_a_cut_short_shard_is_refused(tmp_path):
    _shards(tmp_path, 1)
    npy = tmp_path / "ns" / "shards" / "s0.npy"
    os.truncate(npy, npy.stat().st_size - 26 * 4 * 10)
    reader = ShardReader(tmp_path, 26)
    np.testing.assert_array_equal(reader.read("ns/s0", 0, 2).shape, (2, 26))
    with pytest.raises(OSError, match="shorter"):
        reader.read("ns/s0", 40, 10)
