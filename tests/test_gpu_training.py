"""The GPU monitor inside real (tiny) trainings, with a fake NVML injected (issue 17)."""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from deepspeech_core.model.checkpoints import load_model
from deepspeech_core.train.devices import DeviceError
from deepspeech_core.train.gpu_monitor import read_usage
from deepspeech_core.train.loop import train
from tests.fake_nvml import FakeGpu, FakeNVML
from tests.helpers import tiny_config

MONITOR_LOGGER = "deepspeech_core.train.gpu_monitor"


@pytest.fixture(autouse=True)
def _all_gpus_visible(monkeypatch):
    """The fake GPUs are all visible whatever CUDA_VISIBLE_DEVICES the machine sets."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


FAST = {"gpu_monitor_interval": 0.002, "gpu_idle_window": 0.05}


@pytest.fixture(scope="module")
def tiny_features(tiny_cv, tmp_path_factory):
    """The tiny corpus validated and featurised once for this module's trainings."""
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.cache import build_feature_cache

    cfg = tiny_config(tmp_path_factory.mktemp("gpu-work"), tiny_cv)
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
    return cfg, build_feature_cache(corpus, cfg.features, cfg.workdir)


def _train(tiny_features, tmp_path, name: str, nvml=None, progress=None, **training):
    cfg, features = tiny_features
    settings = {"epochs": 1, "deterministic": True, **training}
    training_cfg = cfg.training.model_copy(update=settings)
    out = tmp_path / name
    manifest = train(
        features,
        cfg.model,
        cfg.features,
        training_cfg,
        out / "checkpoints",
        on_progress=progress,
        tensorboard_dir=out / "tensorboard",
        nvml=nvml,
    )
    weights = load_model(out / "checkpoints", "last")[0].get_weights()
    return manifest, weights, out


def _tensorboard_tags(directory) -> set[str]:
    tags = set()
    for events in directory.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags |= {v.tag for v in event.summary.value}
    return tags


@pytest.fixture(scope="module")
def weights_without_monitor(tiny_features, tmp_path_factory):
    return _train(tiny_features, tmp_path_factory.mktemp("off"), "off", gpu_monitor_interval=0)[1]


def test_monitor_shows_in_the_run_and_leaves_the_weights_bit_equal(
    tiny_features, weights_without_monitor, tmp_path, caplog
):
    from deepspeech_core.config import ExportConfig
    from deepspeech_core.export.export_model import export_model

    seen = []
    busy = FakeGpu(utilization=[97.0], memory_used_gb=[31.2])
    idle_and_full = FakeGpu(
        name="Tesla T4", utilization=[3.0], memory_used_gb=[14.9], memory_total_gb=15.0
    )
    nvml = FakeNVML([busy, idle_and_full])
    with caplog.at_level(logging.INFO):
        manifest, on, out = _train(tiny_features, tmp_path, "on", nvml, seen.append, **FAST)
    # the results do not depend on the monitor
    off = weights_without_monitor
    assert len(on) == len(off)
    assert all(np.array_equal(a, b) for a, b in zip(on, off, strict=True))
    # the progress callback (the progress artifact) and the log line carry the latest sample
    now = "GPU0 97% 31.2/80 GB, GPU1 3% 14.9/15 GB"
    assert seen[-1].gpu == now
    last = [r.getMessage() for r in caplog.records if "step %d/%d" in r.msg][-1]
    assert last.endswith(now)
    # summary in the manifest and beside the checkpoints
    gpu0, gpu1 = manifest.gpu.gpus
    assert gpu0.mean_utilization == gpu0.p10_utilization == 97.0
    assert gpu0.peak_memory_gb == 31.2
    assert gpu1.mean_utilization == 3.0
    assert gpu1.name == "Tesla T4"
    (attempt,) = read_usage(out / "checkpoints")
    assert attempt["steps"] == [0, manifest.steps]
    assert attempt["gpus"][0]["samples"] >= 1
    # the idle and nearly full GPU1 is warned about, once each; GPU0 is not
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.name == MONITOR_LOGGER and r.levelno == logging.WARNING and "NVML sees" not in r.msg
    ]
    assert warned == manifest.gpu.warnings
    assert len(warned) == 2
    assert any("mostly idle" in w and "GPU1 3%" in w and "GPU0" not in w for w in warned)
    assert any(w.startswith("GPU1 memory is close to full") for w in warned)
    # TensorBoard scalars per GPU, NVML read on the monitor's thread only
    tags = _tensorboard_tags(out / "tensorboard")
    assert {"gpu0/utilization_percent", "gpu1/memory_used_gb", "gpu1/power_w"} <= tags
    assert nvml.threads == {"gpu-monitor"}
    # the exported model's metadata.json holds the training's GPU summary
    export = export_model(out / "checkpoints", out / "export", ExportConfig(export_tflite=False))
    (meta,) = json.loads(export.metadata.read_text())["training_gpu"]
    assert meta["monitored"]
    assert meta["gpus"][1]["name"] == "Tesla T4"
    assert meta["gpus"][0]["mean_utilization"] == 97.0
    assert len(meta["warnings"]) == 2


def test_a_monitor_that_raises_never_fails_the_training(
    tiny_features, weights_without_monitor, tmp_path, caplog
):
    off = weights_without_monitor
    nvml = FakeNVML(fail_after=2, error=RuntimeError("NVML went away"))
    with caplog.at_level(logging.INFO, logger=MONITOR_LOGGER):
        manifest, on, _ = _train(tiny_features, tmp_path, "raising", nvml, **FAST)
    assert all(np.array_equal(a, b) for a, b in zip(on, off, strict=True))
    assert manifest.steps > 0
    assert "RuntimeError: NVML went away" in manifest.gpu.note
    stopped = [r for r in caplog.records if "GPU monitor stopped" in r.getMessage()]
    assert len(stopped) == 1
    assert stopped[0].levelno == logging.WARNING


def test_on_this_machine_a_run_says_once_that_no_gpu_is_monitored(tiny_features, tmp_path, caplog):
    try:
        import pynvml

        pynvml.nvmlInit()
        has_gpu = pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # not installed, or no driver: the case under test
        has_gpu = False
    if has_gpu or tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with caplog.at_level(logging.INFO):
        manifest, _, out = _train(tiny_features, tmp_path, "cpu", gpu_monitor_interval=0.002)
    lines = [r.getMessage() for r in caplog.records if "GPU" in r.getMessage()]
    said = [line for line in lines if line.startswith("no GPU is monitored: ")]
    assert len(said) == 1, lines
    assert not manifest.gpu.monitored
    assert manifest.gpu.note in said[0]
    assert read_usage(out / "checkpoints")[0]["monitored"] is False


def test_require_gpu_fails_before_training_when_nvml_sees_gpus_tensorflow_does_not(
    tiny_features, tmp_path
):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees a GPU here")
    nvml = FakeNVML([FakeGpu(name="Tesla T4")])
    with pytest.raises(DeviceError, match="NVML sees 1 GPU.*Tesla T4.*TensorFlow sees none"):
        _train(tiny_features, tmp_path, "req", nvml, require_gpu=True)
    assert not (tmp_path / "req" / "checkpoints").exists()


@pytest.mark.usefixtures("prefect_harness")
def test_the_train_task_artifacts_show_the_gpu_section(tiny_features, tmp_path, monkeypatch):
    """The Prefect UI's view: progress bar text, loss table and a GPU table (fake NVML)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        LogFilter,
        LogFilterFlowRunId,
    )

    from tasks.train import train_model_task

    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML())  # what `import pynvml` finds
    cfg, features = tiny_features
    training = cfg.training.model_copy(update={"epochs": 1, **FAST, "checkpoint_dir": tmp_path})
    config = cfg.model_copy(update={"workdir": tmp_path / "work", "training": training})

    @flow(name="gpu-artifacts")
    def one_training():
        return train_model_task(config, features)

    state = one_training(return_state=True)
    assert state.is_completed()
    assert state.result().gpu.monitored
    keys = ["training-gpu", "training-loss", "training-progress"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    by_key = {a.key: a for a in found}
    assert set(by_key) == set(keys)
    assert "GPU0 97% 31.2/80 GB" in by_key["training-progress"].description
    assert "GPU0 mean 97% p10 97% peak 31.2/80 GB" in by_key["training-loss"].description
    (row,) = json.loads(by_key["training-gpu"].data)
    assert row["gpu"] == "GPU0"
    assert row["mean_utilization_%"] == 97.0
    assert row["p10_utilization_%"] == 97.0
    assert row["peak_memory_gb"] == 31.2
    # the monitor thread's own lines reach the task run's log too
    wanted = ["GPU monitor: sampling GPU0 (NVIDIA A100-SXM4-80GB)", "GPU0 97% 31.2/80 GB"]
    deadline, text = time.monotonic() + 30, ""
    while time.monotonic() < deadline and not all(w in text for w in wanted):
        time.sleep(0.5)
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
            )
        text = "\n".join(entry.message for entry in logs)
    assert all(w in text for w in wanted), text
