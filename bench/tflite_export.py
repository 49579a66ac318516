"""Streaming TFLite export: conversion time, size, fidelity and real-time factor.

For randomly initialised models (29 classes), converts the DeepSpeech-style streaming
graph to fp32 and dynamic-range quantised TFLite, measures the max abs logit difference
from the Keras model on ~10 s of random features, and the TFLite streaming real-time
factor on them: compute seconds per audio second, where a frame is one feature step
(20 ms by default, so 10 s is 500 frames).
Prints one `name: value unit` line per figure. Usage:
    python bench/tflite_export.py [--sizes 2048,256] [--seconds 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"  # 28 characters + blank = 29 classes


def bench_size(h: int, seconds: float, threads: int) -> None:
    import numpy as np

    from deepspeech_core.config import FeatureConfig, ModelConfig
    from deepspeech_core.data.alphabet import Alphabet
    from deepspeech_core.export.streaming_tflite import (
        TFLiteStreamer,
        convert_tflite,
        keras_logits,
        logit_error,
    )
    from deepspeech_core.model.checkpoints import ModelSpec

    spec = ModelSpec(Alphabet(ALPHABET), FeatureConfig(), ModelConfig(n_hidden=h))
    model = spec.build()
    rng = np.random.default_rng(0)
    frames = int(seconds * 1000 / spec.features.feature_win_step)
    features = rng.normal(size=(frames, spec.features.n_input)).astype(np.float32)
    want = keras_logits(model, [features])[0]
    for label, quantize in (("fp32", False), ("quant", True)):
        started = time.perf_counter()
        tflite = convert_tflite(model, spec, quantize)
        convert_seconds = time.perf_counter() - started
        streamer = TFLiteStreamer(tflite, num_threads=threads)
        streamer.logits(features[:64])  # warm up (allocation, delegate setup)
        started = time.perf_counter()
        got = streamer.logits(features)
        rtf = (time.perf_counter() - started) / seconds
        print(f"tflite_convert_seconds_{label}_n_hidden_{h}: {convert_seconds:.1f} s")
        print(f"tflite_size_{label}_n_hidden_{h}: {len(tflite) / 1e6:.2f} MB")
        print(f"tflite_max_abs_diff_{label}_n_hidden_{h}: {np.max(np.abs(got - want)):.3g} logit")
        print(f"tflite_relative_error_{label}_n_hidden_{h}: {logit_error(got, want):.3g} ratio")
        print(f"tflite_streaming_rtf_{label}_n_hidden_{h}_threads_{threads}: {rtf:.4f} s/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2048,256")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="TFLite interpreter threads")
    args = parser.parse_args()
    for h in (int(s) for s in args.sizes.split(",")):
        bench_size(h, args.seconds, args.threads)


if __name__ == "__main__":
    main()
