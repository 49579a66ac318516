"""A stand-in for pynvml (nvidia-ml-py) with the same function names, for GPU monitor tests.

Each GPU replays a list of utilisation percentages (the last one repeats) and memory
readings; `fail_after` makes every reading raise, as when a GPU falls off the bus.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

GIB = 1 << 30


class NVMLError(Exception):
    """pynvml's base error."""


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801 - pynvml's name
    def __str__(self) -> str:
        return "GPU is lost"


@dataclass
class FakeGpu:
    name: str = "NVIDIA A100-SXM4-80GB"
    utilization: list[float] = field(default_factory=lambda: [97.0])
    memory_used_gb: list[float] = field(default_factory=lambda: [31.2])
    memory_total_gb: float = 80.0
    temperature: float | None = 61.0
    power_w: float | None = 312.5
    uuid: str = ""


class FakeNVML:
    """Module-like: `nvmlInit`, `nvmlDeviceGetCount`, `nvmlDeviceGetHandleByIndex`, ..."""

    NVML_TEMPERATURE_GPU = 0
    NVMLError = NVMLError

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        init_error: Exception | None = None,
        fail_after: int | None = None,
        error: Exception | None = None,
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.fail_after = fail_after  # readings (utilisation calls) before every call raises
        self.error = error or NVMLError_GpuIsLost()
        self.readings = 0
        self.initialised = 0
        self.shutdowns = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if not 0 <= index < len(self.gpus):
            raise NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:  # noqa: N802
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid and gpu.uuid == uuid:
                return index
        raise NVMLError("Not Found")

    def nvmlDeviceGetIndex(self, handle: int) -> int:  # noqa: N802
        return handle

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802 - old pynvml: bytes
        return self.gpus[handle].name.encode()

    def _reading(self, handle: int) -> int:
        """Which sample of this GPU this is (one per utilisation call); raise when failing."""
        if self.fail_after is not None and self.readings >= self.fail_after:
            raise self.error
        return self.readings // len(self.gpus)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        with self._lock:
            self.threads.add(threading.current_thread().name)
            n = self._reading(handle)
            self.readings += 1
        values = self.gpus[handle].utilization
        return SimpleNamespace(gpu=values[min(n, len(values) - 1)], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        if self.fail_after is not None and self.readings > self.fail_after:
            raise self.error
        gpu = self.gpus[handle]
        n = max(self.readings - 1, 0) // len(self.gpus)
        used = gpu.memory_used_gb[min(n, len(gpu.memory_used_gb) - 1)]
        total = int(gpu.memory_total_gb * GIB)
        return SimpleNamespace(total=total, used=int(used * GIB), free=total - int(used * GIB))

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        if self.gpus[handle].temperature is None:
            raise NVMLError("Not Supported")
        return self.gpus[handle].temperature

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        if self.gpus[handle].power_w is None:
            raise NVMLError("Not Supported")
        return int(self.gpus[handle].power_w * 1000)
