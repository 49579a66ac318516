"""What the GPU monitor costs training: per-sample and per-step cost, and a tiny training.

The monitor samples NVML on its own thread; the training loop only reads its latest
line. This measures, with the tests' fake NVML (no GPU needed): the monitor thread's
work per sample (1 and 8 GPUs), the loop's per-step reads, and a tiny training (40
espeak-ng clips, n_hidden 32) sampling every 10 ms and with the monitor off (500x the
default rate): wall time and whether the weights are bit-equal.
Prints one `name: value unit` line per figure. Usage:
    python bench/gpu_monitor.py [--epochs 3] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fake_nvml


def sampling_cost() -> None:
    from deepspeech_core.train.gpu_monitor import GpuMonitor
    from tests.fake_nvml import FakeGpu, FakeNVML

    for gpus in (1, 8):
        monitor = GpuMonitor(FakeNVML([FakeGpu() for _ in range(gpus)]), interval=5.0)
        monitor.open()
        n = 5000
        started = time.perf_counter()
        for i in range(n):
            monitor.sample(i * 5.0)
        per_sample = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for _ in range(n):
            monitor.line()
            monitor.new_scalars()
        per_step = (time.perf_counter() - started) / n
        print(f"monitor_sample_{gpus}gpu: {per_sample * 1e6:.0f} us (fake NVML, monitor thread)")
        print(f"monitor_reads_per_step_{gpus}gpu: {per_step * 1e6:.1f} us (training thread)")


def training_cost(epochs: int, interval: float) -> None:
    import numpy as np

    from deepspeech_core.config import PipelineConfig
    from deepspeech_core.data.demo_corpus import make_demo_corpus
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.model.checkpoints import load_model
    from deepspeech_core.train.loop import train
    from tests.fake_nvml import FakeNVML

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cv = make_demo_corpus(root / "cv", count=40, seed=3)
        cfg = PipelineConfig.model_validate(
            {
                "workdir": str(root / "work"),
                "corpus": {"corpus": str(cv), "import_workers": 1},
                "model": {"n_hidden": 32},
                "training": {"epochs": epochs, "train_batch_size": 8, "dev_batch_size": 8},
            }
        ).resolved()
        corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
        features = build_feature_cache(corpus, cfg.features, cfg.workdir)
        weights, seconds = {}, {}
        # the first training in a process pays TensorFlow's start-up: a warm-up run first
        runs = (("warmup", None, 0.0), ("on", FakeNVML(), interval), ("off", None, 0.0))
        for name, nvml, every in runs:
            training = cfg.training.model_copy(
                update={"deterministic": True, "gpu_monitor_interval": every}
            )
            out = root / name
            started = time.monotonic()
            manifest = train(features, cfg.model, cfg.features, training, out, nvml=nvml)
            seconds[name] = time.monotonic() - started
            weights[name] = load_model(out, "last")[0].get_weights()
            if manifest.gpu and manifest.gpu.gpus:
                print(f"monitor_samples_taken: {manifest.gpu.gpus[0].samples}")
        same = all(np.array_equal(a, b) for a, b in zip(weights["off"], weights["on"], strict=True))
        print(f"tiny_training_monitor_off: {seconds['off']:.1f} s ({epochs} epochs)")
        print(f"tiny_training_monitor_on: {seconds['on']:.1f} s (sampling every {interval} s)")
        print(f"weights_bit_equal: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args()
    sampling_cost()
    training_cost(args.epochs, args.interval)


if __name__ == "__main__":
    main()
