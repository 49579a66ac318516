"""Training speed: audio-s/s, model FLOPs utilisation, checkpoint overhead.

Steady-state steps on synthetic batches of 3 s clips (149 frames), timed after warm-up;
the matmul peak is measured in the same run, so MFU compares like with like.
Prints one `name: value unit` line per figure. Usage:
    python bench/training.py [--sizes 256,2048] [--batch 16] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FRAMES = 149  # a 3 s clip at a 20 ms step
N_CLASSES = 29


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    started = time.perf_counter()
    for _ in range(reps):
        out = matmul(a, b)
    out.numpy()
    return 2 * n**3 * reps / (time.perf_counter() - started) / 1e9


def train_flops_per_frame(h: int, n_input: int = 494) -> float:
    """Matmul FLOPs of one frame, forward + backward (3x forward)."""
    forward = 2 * (n_input * h + h * h + h * h + 8 * h * h + h * h + h * N_CLASSES)
    return 3 * forward


def bench_size(h: int, batch: int, steps: int, peak: float) -> None:
    import numpy as np
    import tensorflow as tf

    from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig
    from deepspeech_core.features.batches import Batch
    from deepspeech_core.model.network import create_model
    from deepspeech_core.train.loop import make_optimizer, make_train_step

    rng = np.random.default_rng(0)
    data = Batch(
        tf.constant(rng.normal(size=(batch, FRAMES, 26)), tf.float32),
        tf.fill([batch], FRAMES),
        tf.constant(rng.integers(0, 28, size=(batch, 40)), tf.int32),
        tf.fill([batch], 40),
    )
    model = create_model(ModelConfig(n_hidden=h), FeatureConfig(), N_CLASSES)
    optimizer = make_optimizer(TrainingConfig())
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, 26)
    step(data)[0].numpy()  # trace and warm up
    step(data)[0].numpy()
    started = time.perf_counter()
    for _ in range(steps):
        loss = step(data)[0]
    loss.numpy()
    seconds = (time.perf_counter() - started) / steps
    audio = batch * FRAMES * 0.02
    achieved = train_flops_per_frame(h) * batch * FRAMES / seconds / 1e9
    print(f"train_throughput_n_hidden_{h}: {audio / seconds:.1f} audio-s/s")
    print(f"train_step_seconds_n_hidden_{h}: {seconds:.3f} s")
    print(f"train_mfu_n_hidden_{h}: {100 * achieved / peak:.1f} %")

    # Checkpoint overhead: one save per 100 steps, as a share of those steps' time.
    ckpt = tf.train.Checkpoint(weights=model.weights, optimizer=optimizer)
    with tempfile.TemporaryDirectory() as tmp:
        manager = tf.train.CheckpointManager(ckpt, str(Path(tmp)), max_to_keep=2)
        manager.save()
        saves = 3
        started = time.perf_counter()
        for _ in range(saves):
            manager.save()
        save_seconds = (time.perf_counter() - started) / saves
    print(f"checkpoint_save_seconds_n_hidden_{h}: {save_seconds:.3f} s")
    print(
        f"checkpoint_overhead_every_100_steps_n_hidden_{h}: "
        f"{100 * save_seconds / (100 * seconds):.2f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="256,2048")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    peak = matmul_peak_gflops()
    print(f"matmul_peak_fp32: {peak:.0f} GFLOP/s")
    for h in (int(s) for s in args.sizes.split(",")):
        bench_size(h, args.batch, args.steps if h > 512 else 4 * args.steps, peak)


if __name__ == "__main__":
    main()
