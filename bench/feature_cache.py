"""Feature cache: build throughput (1 and 2 workers), tf.data read-back, padding.

Uses the shared FSDD release (imported into a temporary work directory first).
Prints one `name: value unit` line per figure. Usage:
    python bench/feature_cache.py [--corpus DIR] [--batch_size 32] [--shard_size 500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd-cv" / "en"


def _one_thread() -> None:
    """Worker initialiser: one TensorFlow thread per process, so a worker is a core."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"


def _process_map(workers: int):
    def map_fn(fn, jobs):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread) as pool:
            # warm-up: TensorFlow import and tracing are per process, not per clip
            list(pool.map(_noop, range(workers)))
            started = time.perf_counter()
            results = list(pool.map(fn, jobs))
            map_fn.seconds = time.perf_counter() - started
        return results

    return map_fn


def _noop(_: int) -> None:
    import tensorflow  # noqa: F401

    from deepspeech_core.config import FeatureConfig
    from deepspeech_core.features.mfcc import MfccExtractor

    MfccExtractor(FeatureConfig()).batch([__import__("numpy").zeros(16000, "int16")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--shard_size", type=int, default=500)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"skipped: no corpus at {args.corpus}")
        return
    import numpy as np

    from deepspeech_core.config import CorpusConfig, FeatureConfig
    from deepspeech_core.data.alphabet import Alphabet
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.batches import SplitIndex, batch_plan, make_dataset
    from deepspeech_core.features.cache import build_feature_cache

    features = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = validate_corpus(CorpusConfig(corpus=args.corpus), features, Path(tmp))
        audio = sum(corpus.hours.values()) * 3600
        rates = {}
        for workers in (1, 2):
            work = Path(tmp) / f"w{workers}"
            map_fn = _process_map(workers)
            build_feature_cache(corpus, features, work, args.shard_size, map_fn)
            rates[workers] = audio / map_fn.seconds
            print(f"feature_build_throughput_{workers}_worker: {rates[workers]:.0f} audio-s/s")
        print(f"feature_build_throughput_per_core: {rates[1]:.0f} audio-s/s")
        print(f"feature_build_speedup_1_to_2_workers: {rates[2] / rates[1]:.2f} x")

        started = time.perf_counter()
        again = build_feature_cache(corpus, features, Path(tmp) / "w2", args.shard_size)
        print(f"feature_cache_rerun_seconds: {time.perf_counter() - started:.3f} s")
        assert again.computed == 0

        alphabet = Alphabet.load(again.alphabet_path)
        index = SplitIndex.load(again.indexes["train"], alphabet)
        plan = batch_plan(index.n_frames, args.batch_size, seed=1, epoch=0)
        train_audio = float(index.durations.sum())
        for _ in make_dataset(index, plan, features.n_input):
            pass  # warm-up epoch: shards mapped into memory, tf.data threads started
        started = time.perf_counter()
        batches = sum(1 for _ in make_dataset(index, plan, features.n_input))
        seconds = time.perf_counter() - started
        print(f"read_back_throughput: {train_audio / seconds:.0f} audio-s/s ({batches} batches)")

        def padded_share(p) -> float:
            real = sum(int(index.n_frames[b].sum()) for b in p)
            padded = sum(int(index.n_frames[b].max()) * len(b) for b in p)
            return 1 - real / padded

        rng = np.random.default_rng(1)
        random_plan = np.array_split(rng.permutation(len(index)), len(plan))
        print(f"padding_share_bucketed: {100 * padded_share(plan):.1f} %")
        print(f"padding_share_random_batches: {100 * padded_share(random_plan):.1f} %")


if __name__ == "__main__":
    main()
