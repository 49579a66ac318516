"""What TensorFlow will train on, said before training starts.

The DeepSpeech playbook's two GPU sections, made automatic: memory growth on (the fix
for "Failed to get convolution algorithm" / cuDNN init errors), the visible devices
logged, a clear failure when a GPU is required and absent, and a warning when a GPU is
there but the model's variables landed on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tensorflow as tf

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    pass


@dataclass(frozen=True)
class DeviceReport:
    gpus: list[str]
    cpus: list[str]
    memory_growth: bool

    def describe(self) -> str:
        gpus = ", ".join(self.gpus) if self.gpus else "none"
        return f"TensorFlow {tf.__version__} sees GPUs: {gpus}; CPUs: {', '.join(self.cpus)}"


def preflight(require_gpu: bool = False, memory_growth: bool = True) -> DeviceReport:
    """Configure GPUs (before they are initialised) and report the devices."""
    gpus = tf.config.list_physical_devices("GPU")
    applied = False
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, memory_growth)
            applied = memory_growth
        except RuntimeError:  # already initialised in this process: keep what it has
            log.info("GPU %s was initialised earlier; memory growth left as it was", gpu.name)
    report = DeviceReport(
        [g.name for g in gpus],
        [c.name for c in tf.config.list_physical_devices("CPU")],
        applied,
    )
    log.info(report.describe())
    if require_gpu and not gpus:
        raise DeviceError(
            "--require_gpu: TensorFlow sees no GPU. Check `nvidia-smi`, that the GPU build "
            "is installed (pip install 'deepspeech-flow[gpu]' / make setup TF_EXTRA=gpu), and "
            "that CUDA_VISIBLE_DEVICES does not hide the device."
        )
    return report


def warn_if_model_on_cpu(report: DeviceReport, variables: list) -> bool:
    """True (and a warning) when a GPU exists but the weights are placed on a CPU."""
    if not report.gpus or not variables:
        return False
    device = getattr(variables[0], "device", "") or ""
    if "GPU" in device.upper():
        return False
    log.warning(
        "a GPU is visible but the model's variables are on %s: this run trains on the CPU",
        device or "an unknown device",
    )
    return True
