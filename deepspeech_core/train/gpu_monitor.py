"""The playbook's `nvtop` step, built in: GPU use sampled through NVML while training runs.

The DeepSpeech playbook ends training's set-up by asking a person to watch `nvtop` and
check that the GPUs are "heavily utilised", because otherwise "you may be training only
on your CPUs". `GpuMonitor` does the watching: a background thread samples every GPU
this process may use (utilisation, memory, temperature, power) every few seconds; the
training loop reads its latest sample for the log line, the progress artifact and
TensorBoard, and its summary (mean and p10 utilisation, peak memory) goes into the
training manifest and the exported model's metadata. It warns when the GPUs idle (the
input pipeline, a small batch or a CPU-placed model starves them) and when memory is
close to full (the cuDNN "Failed to get convolution algorithm" situation).

Monitoring must never slow or break training: NVML calls run on the monitor's thread,
the loop only reads a reference, and any failure (no nvidia-ml-py, no driver, a GPU
that vanished, anything raised) is one log line, after which the monitor is silent.
NVML is injected (`nvml=`): tests pass a fake with pynvml's function names; by default
`pynvml` (the `nvidia-ml-py` package, in the `gpu` extra) is imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from deepspeech_core.workdir.atomic_files import atomic_write_json

log = logging.getLogger(__name__)

GIB = float(1 << 30)
USAGE_FILE = "gpu_usage.json"  # beside the checkpoints: one record per training attempt
NVML_TEMPERATURE_GPU = 0  # pynvml's sensor constant, so fakes need not define it
INSTALL_HINT = "pip install 'deepspeech-flow[gpu]' (nvidia-ml-py)"


class GpuStats(BaseModel):
    """One GPU over a training attempt."""

    model_config = ConfigDict(extra="forbid")

    gpu: str  # GPU0, GPU1, ... in the order TensorFlow numbers the visible GPUs
    name: str
    nvml_index: int
    samples: int
    mean_utilization: float  # percent
    p10_utilization: float  # percent: 90% of the samples were at least this busy
    peak_memory_gb: float
    memory_total_gb: float
    max_temperature_c: float | None = None
    mean_power_w: float | None = None


class GpuSummary(BaseModel):
    """What the monitor saw during one training attempt, or why it saw nothing."""

    model_config = ConfigDict(extra="forbid")

    monitored: bool
    note: str = ""  # why no GPU (or not the whole attempt) was monitored
    interval_seconds: float = 0.0
    seconds: float = 0.0  # from the first to the last sample
    gpus: list[GpuStats] = []
    warnings: list[str] = []

    def line(self) -> str:
        """`GPU0 mean 97% p10 90% peak 31.2/80 GB`, or the reason nothing was monitored."""
        if not self.gpus:
            return f"no GPU monitored: {self.note}" if self.note else "no GPU monitored"
        return ", ".join(
            f"{g.gpu} mean {g.mean_utilization:.0f}% p10 {g.p10_utilization:.0f}% "
            f"peak {g.peak_memory_gb:.1f}/{g.memory_total_gb:.0f} GB"
            for g in self.gpus
        )


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU."""

    gpu: str
    utilization: float  # percent
    memory_used: int  # bytes
    memory_total: int  # bytes
    temperature: float | None = None  # degrees C
    power: float | None = None  # watts

    def line(self) -> str:
        """`GPU0 97% 31.2/80 GB`: what nvtop would have shown."""
        return (
            f"{self.gpu} {self.utilization:.0f}% "
            f"{self.memory_used / GIB:.1f}/{self.memory_total / GIB:.0f} GB"
        )


@dataclass
class _Device:
    label: str
    nvml_index: int
    name: str
    handle: Any


@dataclass
class _Accumulator:
    """Running statistics of one GPU in bounded memory (a week of samples or a minute)."""

    samples: int = 0
    utilization_sum: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * 101)  # integer percent
    peak_memory: int = 0
    memory_total: int = 0
    max_temperature: float | None = None
    power_sum: float = 0.0
    power_samples: int = 0

    def add(self, s: GpuSample) -> None:
        self.samples += 1
        self.utilization_sum += s.utilization
        self.histogram[min(max(round(s.utilization), 0), 100)] += 1
        self.peak_memory = max(self.peak_memory, s.memory_used)
        self.memory_total = s.memory_total
        if s.temperature is not None:
            self.max_temperature = max(self.max_temperature or s.temperature, s.temperature)
        if s.power is not None:
            self.power_sum += s.power
            self.power_samples += 1

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile: the smallest value with at least q% of samples at or below."""
        rank = max(1, -(-self.samples * q // 100))  # ceil(n q / 100)
        seen = 0
        for value, count in enumerate(self.histogram):
            seen += count
            if seen >= rank:
                return float(value)
        return 100.0


def load_nvml(nvml: Any = None) -> tuple[Any, str]:
    """The NVML module to use (the injected one, else pynvml), or None and why not."""
    if nvml is not None:
        return nvml, ""
    try:
        import pynvml
    except ImportError:
        return None, f"nvidia-ml-py is not installed ({INSTALL_HINT})"
    return pynvml, ""


def _error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def visible_devices(nvml: Any, env: str | None) -> list[_Device]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES selects them.

    NVML sees every GPU of the machine; TensorFlow only those CUDA_VISIBLE_DEVICES lists
    (indices or GPU-/MIG- UUIDs, in that order; like CUDA, the list ends at the first
    entry that names no device). Labels follow TensorFlow's numbering: GPU0 is the first
    visible one.
    """
    count = int(nvml.nvmlDeviceGetCount())
    if env is None:
        entries: list[str] = [str(i) for i in range(count)]
    else:
        entries = [e.strip() for e in env.split(",") if e.strip()]
    devices: list[_Device] = []
    for entry in entries:
        if entry.lstrip("-").isdigit():
            index = int(entry)
            if not 0 <= index < count:
                break
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        else:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(entry)
            except Exception:  # an unknown UUID ends the list, as in CUDA
                break
            index = _nvml_index(nvml, handle)
        devices.append(_Device(f"GPU{len(devices)}", index, _name(nvml, handle), handle))
    return devices


def _nvml_index(nvml: Any, handle: Any) -> int:
    try:
        return int(nvml.nvmlDeviceGetIndex(handle))
    except Exception:
        return -1


def _name(nvml: Any, handle: Any) -> str:
    try:
        return _text(nvml.nvmlDeviceGetName(handle))
    except Exception:
        return "unknown GPU"


def nvml_gpus(nvml: Any = None, env: str | None = None) -> tuple[list[str] | None, str]:
    """Names of the GPUs NVML reports as visible to this process, or None and why not.

    None means NVML could not be asked (nvidia-ml-py missing); an empty list with a
    reason means NVML answered, or failed to start, which both say "no NVIDIA GPU here".
    """
    module, why = load_nvml(nvml)
    if module is None:
        return None, why
    try:
        module.nvmlInit()
    except Exception as exc:
        return [], f"NVML could not start ({_error(exc)})"
    try:
        devices = visible_devices(module, env)
        return [f"{d.label} {d.name}" for d in devices], "" if devices else "NVML sees no GPU"
    except Exception as exc:
        return [], f"NVML could not list the GPUs ({_error(exc)})"
    finally:
        _shutdown(module)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass


def check_gpu_agreement(
    tf_gpus: list[str], require_gpu: bool, nvml: Any = None, env: str | None = None
) -> None:
    """Compare the GPUs TensorFlow sees with those NVML (the driver) reports.

    With --require_gpu a disagreement is fatal at once, before any training; without
    it, NVIDIA GPUs that TensorFlow cannot use are worth a warning (the playbook's
    "training only on your CPUs"). Both seeing none is preflight's business.
    """
    from deepspeech_core.train.devices import DeviceError

    names, why = nvml_gpus(nvml, os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env)
    if names is None:
        if require_gpu and tf_gpus:
            log.info("--require_gpu: cannot cross-check TensorFlow's GPUs: %s", why)
        return
    if tf_gpus and not names and require_gpu:
        raise DeviceError(
            f"--require_gpu: TensorFlow sees {len(tf_gpus)} GPU(s) ({', '.join(tf_gpus)}) but "
            f"{why}: the NVIDIA driver is not loaded or not reachable, so the GPUs cannot be "
            "monitored and may not work. Check that `nvidia-smi` runs; in a container, start "
            "it with the GPUs and driver mounted (docker run --gpus all); or drop --require_gpu."
        )
    if names and not tf_gpus:
        problem = (
            f"NVML sees {len(names)} GPU(s) ({', '.join(names)}) but TensorFlow sees none, "
            "so this run would train on the CPU. Install the GPU build of TensorFlow "
            "(make setup TF_EXTRA=gpu, or pip install 'deepspeech-flow[gpu]') and check that "
            "its CUDA libraries match the driver (TensorFlow's log says which failed to load)."
        )
        if require_gpu:
            raise DeviceError(f"--require_gpu: {problem}")
        log.warning(problem)


class GpuMonitor:
    """Samples the visible GPUs every `interval` seconds on a daemon thread.

    `idle_window` seconds of mean utilisation under `idle_utilization` % on a GPU, and
    memory at `memory_warning` of the total (None: no memory warning), are each warned
    about once. `open` and `sample` are the thread's steps, callable directly with a
    chosen clock value so tests need not wait for real minutes.
    """

    def __init__(
        self,
        nvml: Any = None,
        *,
        interval: float = 5.0,
        idle_window: float = 60.0,
        idle_utilization: float = 30.0,
        memory_warning: float | None = 0.95,
        visible: str | None = None,
    ) -> None:
        self.interval = interval
        self.idle_window = idle_window
        self.idle_utilization = idle_utilization
        self.memory_warning = memory_warning
        self._injected = nvml
        self._visible = visible if visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
        self._nvml: Any = None
        self._devices: list[_Device] = []
        self._stats: dict[str, _Accumulator] = {}
        self._window: deque[tuple[float, tuple[float, ...]]] = deque()
        self._latest: tuple[GpuSample, ...] = ()
        self._line = ""  # the latest sample formatted once, on the monitor's thread
        self._sequence = 0  # samples taken; new_scalars reports each one once
        self._reported = 0
        self._first: float | None = None
        self._last: float | None = None
        self._idle_warned = False
        self._memory_warned: set[str] = set()
        self._warnings: list[str] = []
        self._note = "" if interval > 0 else "GPU monitor off (--gpu_monitor_interval 0)"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the monitor's thread -----------------------------------------------------------

    def open(self) -> bool:
        """Start NVML and find the GPUs; False (and one log line) when there are none."""
        module, why = load_nvml(self._injected)
        if module is None:
            return self._give_up(why)
        try:
            module.nvmlInit()
        except Exception as exc:
            return self._give_up(f"NVML could not start ({_error(exc)}); no NVIDIA driver here?")
        self._nvml = module
        try:
            self._devices = visible_devices(module, self._visible)
        except Exception as exc:
            return self._give_up(f"NVML could not list the GPUs ({_error(exc)})")
        if not self._devices:
            hidden = self._visible is not None and not self._visible.strip(" ,")
            return self._give_up(
                "CUDA_VISIBLE_DEVICES hides every GPU" if hidden else "NVML sees no GPU"
            )
        self._stats = {d.label: _Accumulator() for d in self._devices}
        log.info(
            "GPU monitor: sampling %s every %g s",
            ", ".join(f"{d.label} ({d.name})" for d in self._devices),
            self.interval,
        )
        return True

    def sample(self, now: float) -> bool:
        """Read every GPU once; False (and one log line) when the readings fail."""
        try:
            readings = tuple(self._read(d) for d in self._devices)
            line = ", ".join(s.line() for s in readings)
        except Exception as exc:
            return self._give_up(
                f"GPU monitor stopped after {self._sequence} sample(s): {_error(exc)}; "
                "training goes on unmonitored",
                level=logging.WARNING,
                monitored=True,
            )
        with self._lock:
            for s in readings:
                self._stats[s.gpu].add(s)
            self._latest, self._line = readings, line
            self._sequence += 1
            self._first = now if self._first is None else self._first
            self._last = now
            self._window.append((now, tuple(s.utilization for s in readings)))
            while self._window and self._window[0][0] < now - self.idle_window:
                self._window.popleft()
        self._check_memory(readings)
        self._check_idle(now)
        return True

    def _read(self, device: _Device) -> GpuSample:
        nvml, handle = self._nvml, device.handle
        utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return GpuSample(
            gpu=device.label,
            utilization=float(utilization.gpu),
            memory_used=int(memory.used),
            memory_total=int(memory.total),
            temperature=_optional(
                lambda: float(nvml.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU))
            ),
            power=_optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
        )

    def _check_memory(self, readings: tuple[GpuSample, ...]) -> None:
        if self.memory_warning is None:
            return
        for s in readings:
            full = s.memory_used / s.memory_total if s.memory_total else 0.0
            if full >= self.memory_warning and s.gpu not in self._memory_warned:
                self._memory_warned.add(s.gpu)
                self._warn(
                    f"{s.gpu} memory is close to full: {s.memory_used / GIB:.1f} of "
                    f"{s.memory_total / GIB:.1f} GB ({100 * full:.0f}%). A longer batch may "
                    "fail with cuDNN's 'Failed to get convolution algorithm' or out of memory "
                    "(memory growth only postpones it): lower --train_batch_size, "
                    "--max_duration or --n_hidden, or use --automatic_mixed_precision."
                )

    def _check_idle(self, now: float) -> None:
        if self._idle_warned or self._first is None or now - self._first < self.idle_window:
            return
        with self._lock:
            window = [u for _, u in self._window]
        means = [sum(col) / len(col) for col in zip(*window, strict=True)]
        idle = [
            f"{d.label} {m:.0f}%"
            for d, m in zip(self._devices, means, strict=True)
            if m < self.idle_utilization
        ]
        if idle:
            self._idle_warned = True
            self._warn(
                f"GPU mostly idle: mean utilisation {', '.join(idle)} over the last "
                f"{self.idle_window:g} s of training (under {self.idle_utilization:g}%). Likely "
                "causes: the input pipeline cannot feed it (feature cache on a slow disk, "
                "sample-domain --augment), --train_batch_size is too small, or the model sits "
                "on the CPU (see the device line at the start of training)."
            )

    def _warn(self, message: str) -> None:
        with self._lock:
            self._warnings.append(message)
        log.warning(message)

    def _give_up(self, why: str, level: int = logging.INFO, monitored: bool = False) -> bool:
        """Say once why monitoring ends; the monitor is silent afterwards."""
        with self._lock:
            self._note = why
        if monitored:
            log.log(level, why)
        else:
            log.log(level, "no GPU is monitored: %s", why)
        return False

    def _run(self) -> None:
        try:
            if self.open():
                while not self._stop.is_set() and self.sample(time.monotonic()):
                    self._stop.wait(self.interval)
        except Exception as exc:  # nothing may escape into the training's process
            self._give_up(f"GPU monitor stopped: {_error(exc)}", logging.WARNING, True)
        finally:
            if self._nvml is not None:
                _shutdown(self._nvml)

    # -- the training loop's side: cheap reads that never raise -----------------------

    def start(self) -> GpuMonitor:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> GpuSummary:
        """Stop sampling (waiting at most `timeout` s for a hung NVML call) and summarise."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.summary()

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def line(self) -> str:
        """The latest sample of every GPU, `GPU0 97% 31.2/80 GB, GPU1 ...`; '' without one."""
        return self._line

    def new_scalars(self) -> dict[str, float]:
        """TensorBoard scalars of the latest sample if it was not reported yet, per GPU."""
        try:
            with self._lock:
                if self._sequence == self._reported:
                    return {}
                self._reported = self._sequence
                latest = self._latest
            scalars: dict[str, float] = {}
            for s in latest:
                key = s.gpu.lower()
                scalars[f"{key}/utilization_percent"] = s.utilization
                scalars[f"{key}/memory_used_gb"] = s.memory_used / GIB
                if s.temperature is not None:
                    scalars[f"{key}/temperature_c"] = s.temperature
                if s.power is not None:
                    scalars[f"{key}/power_w"] = s.power
            return scalars
        except Exception:
            return {}

    def summary(self) -> GpuSummary:
        """Mean and p10 utilisation, peak memory, temperature and power per GPU."""
        try:
            with self._lock:
                return self._summary()
        except Exception as exc:
            return GpuSummary(monitored=False, note=f"no summary: {_error(exc)}")

    def _summary(self) -> GpuSummary:
        gpus = [
            GpuStats(
                gpu=d.label,
                name=d.name,
                nvml_index=d.nvml_index,
                samples=a.samples,
                mean_utilization=round(a.utilization_sum / a.samples, 1),
                p10_utilization=a.percentile(10),
                peak_memory_gb=round(a.peak_memory / GIB, 2),
                memory_total_gb=round(a.memory_total / GIB, 2),
                max_temperature_c=a.max_temperature,
                mean_power_w=round(a.power_sum / a.power_samples, 1) if a.power_samples else None,
            )
            for d in self._devices
            if (a := self._stats[d.label]).samples
        ]
        first, last = self._first, self._last
        seconds = (last - first) if first is not None and last is not None else 0.0
        return GpuSummary(
            monitored=bool(gpus),
            note=self._note,
            interval_seconds=self.interval,
            seconds=round(seconds, 1),
            gpus=gpus,
            warnings=list(self._warnings),
        )


def _optional(read) -> float | None:
    """Temperature and power are not supported on every GPU: None instead of a failure."""
    try:
        return read()
    except Exception:
        return None


def record_attempt(checkpoint_dir: Path, summary: GpuSummary, steps: tuple[int, int]) -> None:
    """Append this training attempt's GPU summary to CHECKPOINT_DIR/gpu_usage.json."""
    attempts = read_usage(checkpoint_dir)
    attempts.append({"steps": list(steps), **summary.model_dump()})
    try:
        atomic_write_json(Path(checkpoint_dir) / USAGE_FILE, {"attempts": attempts})
    except OSError as exc:  # a record of GPU use is not worth failing a finished training
        log.warning("could not record GPU use in %s: %s", checkpoint_dir, exc)


def read_usage(checkpoint_dir: Path) -> list[dict]:
    """Every recorded attempt's GPU summary (for metadata.json); [] when none or unreadable."""
    path = Path(checkpoint_dir) / USAGE_FILE
    try:
        attempts = json.loads(path.read_text()).get("attempts", [])
    except (OSError, ValueError, AttributeError):
        return []
    return attempts if isinstance(attempts, list) else []
