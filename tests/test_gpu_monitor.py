"""The GPU monitor (issue 17) against a fake NVML: summaries, warnings, failures, devices."""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np
import pytest

from deepspeech_core.train.devices import DeviceError
from deepspeech_core.train.gpu_monitor import (
    GpuMonitor,
    check_gpu_agreement,
    read_usage,
    record_attempt,
)
from tests.fake_nvml import FakeGpu, FakeNVML, NVMLError

pytestmark = pytest.mark.unit  # `make test-fast`

LOGGER = "deepspeech_core.train.gpu_monitor"


@pytest.fixture(autouse=True)
def _all_gpus_visible(monkeypatch):
    """The fake GPUs are all visible whatever CUDA_VISIBLE_DEVICES the machine sets."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _run(monitor: GpuMonitor, samples: int, step: float = 1.0) -> None:
    """Drive the monitor's thread steps by hand at times 0, step, 2 step, ..."""
    assert monitor.open()
    for i in range(samples):
        assert monitor.sample(i * step)


def _messages(caplog, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_summary_gives_mean_p10_and_peak_memory_per_gpu():
    rng = np.random.default_rng(1)
    util0 = rng.integers(0, 101, 57).astype(float).tolist()
    mem0 = rng.uniform(1, 30, 57).round(2).tolist()
    util1 = [88.0, 91.0, 95.0]
    gpus = [
        FakeGpu(utilization=util0, memory_used_gb=mem0, temperature=70.0, power_w=250.0),
        FakeGpu(
            name="Tesla V100",
            utilization=util1,
            memory_used_gb=[12.0],
            memory_total_gb=16.0,
            power_w=None,
        ),
    ]
    monitor = GpuMonitor(FakeNVML(gpus), interval=1.0, memory_warning=None)
    _run(monitor, 57)
    summary = monitor.summary()
    assert summary.monitored
    assert summary.seconds == 56.0
    assert summary.interval_seconds == 1.0
    first, second = summary.gpus
    assert (first.gpu, second.gpu, second.name) == ("GPU0", "GPU1", "Tesla V100")
    assert first.samples == second.samples == 57
    assert first.mean_utilization == pytest.approx(np.mean(util0), abs=0.05)
    assert first.p10_utilization == np.percentile(util0, 10, method="inverted_cdf")
    assert first.peak_memory_gb == pytest.approx(max(mem0), abs=0.01)
    assert first.memory_total_gb == 80.0
    assert first.max_temperature_c == 70.0
    assert first.mean_power_w == 250.0
    full1 = util1 + [util1[-1]] * 54  # the fake repeats its last reading
    assert second.mean_utilization == pytest.approx(np.mean(full1), abs=0.05)
    assert second.p10_utilization == np.percentile(full1, 10, method="inverted_cdf") == 95.0
    assert second.peak_memory_gb == 12.0
    assert second.mean_power_w is None  # "Not Supported" is not a failure
    assert "GPU0 mean" in summary.line()
    assert "peak" in summary.line()


def test_latest_sample_reads_like_nvtop_and_feeds_tensorboard_once():
    monitor = GpuMonitor(FakeNVML([FakeGpu(utilization=[97.0], memory_used_gb=[31.2])]))
    assert monitor.line() == ""
    assert monitor.new_scalars() == {}
    _run(monitor, 1)
    assert monitor.line() == "GPU0 97% 31.2/80 GB"
    scalars = monitor.new_scalars()
    assert scalars["gpu0/utilization_percent"] == 97.0
    assert scalars["gpu0/memory_used_gb"] == pytest.approx(31.2)
    assert scalars["gpu0/temperature_c"] == 61.0
    assert scalars["gpu0/power_w"] == 312.5
    assert monitor.new_scalars() == {}  # each sample is written once
    monitor.sample(1.0)
    assert monitor.new_scalars()


def test_idle_gpu_warns_once_after_the_window_naming_the_causes(caplog):
    gpus = [FakeGpu(utilization=[5.0, 12.0, 3.0]), FakeGpu(utilization=[96.0])]
    monitor = GpuMonitor(FakeNVML(gpus), interval=1.0, idle_window=10.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _run(monitor, 10)  # t = 0..9: not yet a full window
        assert _messages(caplog) == []
        monitor.sample(10.0)
        monitor.sample(11.0)
    (warning,) = _messages(caplog)
    assert "GPU0 4%" in warning
    assert "GPU1" not in warning  # only the idle one
    assert "input pipeline" in warning
    assert "--train_batch_size" in warning
    assert "on the CPU" in warning
    assert "10 s" in warning
    assert monitor.summary().warnings == [warning]


def test_a_busy_gpu_with_idle_moments_does_not_warn(caplog):
    # checkpoints and dev evaluation leave the GPU idle for moments; the mean stays high
    util = [90.0, 95.0, 0.0, 92.0, 0.0, 97.0] * 5
    monitor = GpuMonitor(FakeNVML([FakeGpu(utilization=util)]), idle_window=10.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _run(monitor, 30)
    assert _messages(caplog) == []
    assert monitor.summary().warnings == []


def test_idle_threshold_and_window_are_parameters(caplog):
    monitor = GpuMonitor(
        FakeNVML([FakeGpu(utilization=[45.0])]), idle_window=2.0, idle_utilization=50.0
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _run(monitor, 3)
    assert "GPU0 45%" in _messages(caplog)[0]
    assert "under 50%" in _messages(caplog)[0]


def test_memory_close_to_full_warns_once_per_gpu(caplog):
    gpus = [
        FakeGpu(memory_used_gb=[40.0, 76.5, 79.0]),
        FakeGpu(memory_used_gb=[15.5], memory_total_gb=16.0),
        FakeGpu(memory_used_gb=[10.0]),
    ]
    monitor = GpuMonitor(FakeNVML(gpus), memory_warning=0.95)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _run(monitor, 1)
        assert len(_messages(caplog)) == 1  # GPU1 at 97% from the start
        _run(monitor, 4)
    warnings = _messages(caplog)
    assert len(warnings) == 2
    assert sorted(w.split()[0] for w in warnings) == ["GPU0", "GPU1"]
    gpu0 = next(w for w in warnings if w.startswith("GPU0"))
    assert "76.5 of 80.0 GB" in gpu0
    assert "Failed to get convolution algorithm" in gpu0
    assert "--train_batch_size" in gpu0


def test_no_memory_warning_when_it_is_turned_off(caplog):
    monitor = GpuMonitor(FakeNVML([FakeGpu(memory_used_gb=[80.0])]), memory_warning=None)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _run(monitor, 3)
    assert _messages(caplog) == []


def test_nvml_not_installed_is_one_line_and_no_thread_failure(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with caplog.at_level(logging.INFO, logger=LOGGER):
        summary = GpuMonitor(interval=0.01).start().stop()
    assert not summary.monitored
    assert "nvidia-ml-py is not installed" in summary.note
    lines = _messages(caplog, logging.INFO)
    assert len(lines) == 1
    assert lines[0].startswith("no GPU is monitored: nvidia-ml-py")


def test_no_driver_is_one_line(caplog):
    nvml = FakeNVML(init_error=NVMLError("Driver Not Loaded"))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        summary = GpuMonitor(nvml, interval=0.01).start().stop()
    assert not summary.monitored
    assert "Driver Not Loaded" in summary.note
    assert _messages(caplog, logging.INFO) == [
        "no GPU is monitored: NVML could not start (NVMLError: Driver Not Loaded); "
        "no NVIDIA driver here?"
    ]


def test_the_real_pynvml_on_a_machine_without_gpu_says_so_once(caplog):
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is in the dev and gpu extras")
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        count = 0
    if count:
        pytest.skip("this machine has an NVIDIA GPU")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        summary = GpuMonitor(interval=0.01).start().stop()
    assert not summary.monitored
    assert summary.note
    assert len(_messages(caplog, logging.INFO)) == 1
    assert _messages(caplog, logging.WARNING) == []


def test_a_vanishing_gpu_stops_the_monitor_with_one_line(caplog):
    nvml = FakeNVML([FakeGpu(), FakeGpu()], fail_after=6)  # 3 samples of 2 GPUs, then lost
    monitor = GpuMonitor(nvml, interval=0.005)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        monitor.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "stopped" not in monitor.summary().note:
            time.sleep(0.01)
        calls = nvml.readings
        time.sleep(0.05)
        summary = monitor.stop()
    assert nvml.readings == calls == 6  # nothing more was asked of NVML
    assert summary.monitored
    assert [g.samples for g in summary.gpus] == [3, 3]
    (line,) = _messages(caplog)
    assert line.startswith("GPU monitor stopped after 3 sample(s): NVMLError_GpuIsLost")
    assert "training goes on" in line
    assert nvml.threads == {"gpu-monitor"}  # NVML was read on the monitor's thread only
    assert nvml.shutdowns == 1


@pytest.mark.parametrize(
    "breakage",
    ["nvmlDeviceGetCount", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo"],
)
def test_anything_raised_inside_the_monitor_stays_inside(breakage, caplog):
    nvml = FakeNVML()

    def broken(*args):
        raise ZeroDivisionError("not NVML's kind of error")

    setattr(nvml, breakage, broken)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        monitor = GpuMonitor(nvml, interval=0.005).start()
        time.sleep(0.05)
        summary = monitor.stop()
    assert "ZeroDivisionError" in summary.note
    assert monitor.line() == ""
    assert monitor.new_scalars() == {}
    lines = [r for r in caplog.records if r.name == LOGGER and "ZeroDivisionError" in r.message]
    assert len(lines) == 1


def test_cuda_visible_devices_selects_and_renumbers_the_gpus():
    gpus = [FakeGpu(name=f"card{i}", uuid=f"GPU-{i}aaa", utilization=[10.0 * i]) for i in range(4)]
    monitor = GpuMonitor(FakeNVML(gpus), visible="2,GPU-0aaa,7,1")  # 7 ends the list
    _run(monitor, 1)
    summary = monitor.summary()
    assert [(g.gpu, g.name, g.nvml_index) for g in summary.gpus] == [
        ("GPU0", "card2", 2),
        ("GPU1", "card0", 0),
    ]
    assert monitor.line().startswith("GPU0 20% ")
    hidden = GpuMonitor(FakeNVML(gpus), visible="")
    assert not hidden.open()
    assert "CUDA_VISIBLE_DEVICES hides every GPU" in hidden.summary().note


def test_monitor_off_takes_no_sample():
    nvml = FakeNVML()
    summary = GpuMonitor(nvml, interval=0).start().stop()
    assert nvml.initialised == 0
    assert not summary.monitored
    assert "--gpu_monitor_interval 0" in summary.note


def test_require_gpu_fails_fast_when_nvml_and_tensorflow_disagree(caplog):
    tf_gpu = ["/physical_device:GPU:0"]
    no_driver = FakeNVML(init_error=NVMLError("Driver Not Loaded"))
    with pytest.raises(DeviceError, match="TensorFlow sees 1 GPU.*Driver Not Loaded.*nvidia-smi"):
        check_gpu_agreement(tf_gpu, True, no_driver)
    with pytest.raises(DeviceError, match="NVML sees no GPU"):
        check_gpu_agreement(tf_gpu, True, FakeNVML(gpus=[]))
    two = FakeNVML([FakeGpu(), FakeGpu(name="Tesla T4")])
    with pytest.raises(DeviceError, match=r"NVML sees 2 GPU.*Tesla T4.*TensorFlow sees none.*gpu"):
        check_gpu_agreement([], True, two)
    # agreement, or no --require_gpu: no failure; GPUs TensorFlow cannot use are a warning
    check_gpu_agreement(tf_gpu, True, FakeNVML())
    check_gpu_agreement(tf_gpu, False, no_driver)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_gpu_agreement([], False, two)
    assert "would train on the CPU" in _messages(caplog)[0]


def test_require_gpu_without_nvidia_ml_py_does_not_guess(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    check_gpu_agreement(["/physical_device:GPU:0"], True, None)


def test_attempts_are_recorded_beside_the_checkpoints(tmp_path):
    monitor = GpuMonitor(FakeNVML())
    _run(monitor, 2)
    record_attempt(tmp_path, monitor.summary(), (0, 40))
    record_attempt(tmp_path, GpuMonitor(interval=0).summary(), (40, 80))
    first, second = read_usage(tmp_path)
    assert first["steps"] == [0, 40]
    assert first["gpus"][0]["samples"] == 2
    assert second["steps"] == [40, 80]
    assert not second["monitored"]
    (tmp_path / "gpu_usage.json").write_text("{not json")
    assert read_usage(tmp_path) == []
    (tmp_path / "gpu_usage.json").write_text(json.dumps([1, 2]))
    assert read_usage(tmp_path) == []
