"""The terminal experience: progress bars, one-line errors, early checks, retries, flags."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import deepspeech_flow.cli as cli
from deepspeech_core import progress
from deepspeech_core.error_kinds import ErrorKind
from deepspeech_core.features.augmentation import OnSignal, augment_clip, parse_augmentation
from deepspeech_core.workdir.locking import workdir_lock
from deepspeech_flow.config_loading import FLAG_FIELDS
from deepspeech_flow.progress_display import StageBars

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _recording_console() -> Console:
    return Console(record=True, file=io.StringIO(), force_terminal=True, width=160)


def test_training_bar_shows_epoch_loss_dev_loss_speed_and_both_etas():
    console, clock = _recording_console(), FakeClock()
    bars = StageBars(console, clock=clock)
    with bars.bars, progress.listening(bars):
        for step in range(1, 16):  # 3 epochs of 10 steps; one step per second
            clock.now += 1.0
            progress.report(
                "train",
                30,
                step,
                unit="steps",
                audio_seconds=8.0,
                epoch=(step - 1) // 10,
                epochs=3,
                steps_per_epoch=10,
                loss=0.5,
                dev_loss=0.7 if step > 10 else float("nan"),
            )
    text = console.export_text()
    assert "15/30" in text
    assert "epoch 2/3" in text
    assert "loss 0.500" in text
    assert "dev 0.700" in text
    assert "8 audio-s/s" in text  # 8 audio-seconds per one-second step
    # 14 steps in 14 s since the first report: 5 steps left in the epoch, 15 in the run
    assert "ETA epoch 0:05" in text
    assert "run 0:15" in text


def test_clip_bars_show_throughput_and_eta_and_nothing_without_a_listener():
    console, clock = _recording_console(), FakeClock()
    bars = StageBars(console, clock=clock)
    with bars.bars, progress.listening(bars):
        progress.report("import", 100, 0)
        for done in range(10, 60, 10):
            clock.now += 2.0
            progress.report("import", 100, done, audio_seconds=30.0)
        progress.report("features", 40, 0)
        clock.now += 1.0
        progress.report("features", 0, advance=20, audio_seconds=50.0)
    text = console.export_text()
    assert "import audio" in text
    assert "50/100" in text
    assert "5.0/s" in text
    assert "15 audio-s/s" in text
    assert "ETA 0:10" in text
    assert "features" in text
    assert "20/40" in text
    assert "ETA 0:01" in text
    progress.report("import", 1, 1)  # nobody listens: a no-op


def _run_cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, args)
    return result.exit_code, result.output


@pytest.fixture
def no_flow(monkeypatch):
    """Fail the test if a command gets as far as starting the flow (and Prefect)."""
    import flows.train_cv

    def started(**kwargs):
        raise AssertionError("the flow started although the arguments were wrong")

    monkeypatch.setattr(flows.train_cv, "train_cv", started)


def _one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


def test_missing_corpus_is_one_line_before_prefect(tmp_path, no_flow):
    code, out = _run_cli(["run", "--corpus", str(tmp_path / "nonexistent" / "en")])
    assert code == ErrorKind.DATA
    assert "does not exist" in _one_line_error(out)
    (tmp_path / "cv").mkdir()
    code, out = _run_cli(["train", "--corpus", str(tmp_path / "cv")])
    assert code == ErrorKind.DATA
    assert "no clips/ folder" in _one_line_error(out)


def test_unreadable_csv_and_missing_columns(tmp_path, no_flow):
    bad = tmp_path / "train.csv"
    bad.write_text("path,sentence\nx.wav,hello\n")
    code, out = _run_cli(["train", "--train_files", str(bad)])
    assert code == ErrorKind.DATA
    assert "wav_filename" in _one_line_error(out)
    assert str(bad) in out


def test_busy_workdir_is_one_line_with_the_holder(tmp_path, tiny_csv, no_flow):
    workdir = tmp_path / "w"
    workdir.mkdir()
    with workdir_lock(workdir):  # a run in progress there (held by this process)
        code, out = _run_cli(["run", "--train_files", str(tiny_csv), "--workdir", str(workdir)])
    assert code == ErrorKind.BUSY
    line = _one_line_error(out)
    assert f"pid {os.getpid()}" in line
    assert "use another --workdir" in line


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    csv = tmp_path / "t.csv"
    csv.write_text("wav_filename,wav_filesize,transcript\na.wav,10,hello\n")
    return csv


@pytest.mark.parametrize(
    "content, expected",
    [
        ("model:\n  n_hidden: [1,\n", "not valid YAML at line"),
        (None, "does not exist"),
        ("- a\n- b\n", "expected a mapping"),
        ("model:\n  n_hiden: 3\n", "model.n_hiden: Extra inputs are not permitted"),
    ],
)
def test_config_file_errors_are_one_line(tmp_path, tiny_csv, no_flow, content, expected):
    path = tmp_path / "settings.yaml"
    if content is not None:
        path.write_text(content)
    code, out = _run_cli(["train", "--train_files", str(tiny_csv), "--config", str(path)])
    assert code == ErrorKind.CONFIG
    assert expected in _one_line_error(out)


def test_bad_flag_values_are_one_line(tiny_csv, no_flow):
    code, out = _run_cli(["train", "--train_files", str(tiny_csv), "--augment", "warp[p=1]"])
    assert code == ErrorKind.CONFIG
    assert "unknown augmentation" in _one_line_error(out)
    code, out = _run_cli(["train", "--train_files", str(tiny_csv), "--epochs", "-1"])
    assert code == ErrorKind.CONFIG
    assert "training.epochs" in _one_line_error(out)
    assert "-1" in out


def test_debug_shows_the_exception(tmp_path, no_flow):
    missing = str(tmp_path / "nonexistent")
    for args in (["--debug", "run", "--corpus", missing], ["run", "--corpus", missing, "--debug"]):
        result = CliRunner().invoke(cli.app, args)
        assert type(result.exception).__name__ == "DataError"
    code, _ = _run_cli(["run", "--corpus", missing])  # --debug does not stick
    assert code == ErrorKind.DATA


PROBE = """
import sys
sys.argv = ["deepspeech-flow", "run", "--corpus", "/nonexistent/en"]
import deepspeech_flow.cli as cli
try:
    cli.app()
finally:
    print("loaded:", [m for m in ("prefect", "tensorflow", "pandas") if m in sys.modules])
"""


def test_the_real_command_answers_before_importing_prefect_or_tensorflow(tmp_path):
    """About a second on an idle 2-core machine: neither Prefect nor TensorFlow is loaded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    elapsed = time.monotonic() - started
    assert done.returncode == ErrorKind.DATA, done.stderr
    expected = "error: --corpus /nonexistent/en does not exist (or is not a folder)"
    assert done.stderr.strip() == expected
    assert "loaded: []" in done.stdout
    assert elapsed < 15, elapsed  # Prefect's server alone takes 10-16 s to start here


def _bool_fields() -> list[str]:
    return [f for f in FLAG_FIELDS if cli._field_help(*FLAG_FIELDS[f])[0] is bool]


@pytest.mark.parametrize("flag", _bool_fields())
def test_every_boolean_flag_in_every_spelling(monkeypatch, flag):
    calls = []
    monkeypatch.setattr(cli, "_run_flow", lambda cfg, *a: calls.append(cfg))
    section, field = FLAG_FIELDS[flag]
    dashed = flag.replace("_", "-")
    spellings = {
        True: {f"--{flag}", f"--{dashed}"},
        False: {f"--no_{flag}", f"--no-{flag}", f"--no-{dashed}", f"--no_{dashed}"},
    }
    for value, flags in spellings.items():
        for spelled in flags:
            code, out = _run_cli(["train", spelled])
            assert code == 0, f"{spelled}: {out}"
            assert getattr(getattr(calls[-1], section), field) is value, spelled


def test_deepspeech_augment_examples_work_with_their_semantics():
    # DeepSpeech's own example: add noise to the signal
    on_signal = parse_augmentation("add[p=0.1,domain=signal,stddev=0~0.5]")
    assert isinstance(on_signal, OnSignal)
    assert on_signal.sample_domain
    rng = np.random.default_rng(1)
    audio = np.zeros(1600)
    noisy = on_signal.apply_audio(audio, 16000, rng, 0.0)
    assert noisy.shape == audio.shape
    assert np.abs(noisy).max() > 0
    x = np.ones((40, 26), np.float32)
    # draws from 0±0.5 are often negative: DeepSpeech treats them as their magnitude
    for spec in ("add[p=1,stddev=0~0.5]", "multiply[p=1,stddev=0~0.5]"):
        aug = [parse_augmentation(spec)]
        for _ in range(30):
            out = augment_clip(x, aug, rng, 0.5, 20.0, 1)
            assert np.isfinite(out).all()
    # a mask size drawn below 1 masks one frame/band, never "all but the last n"
    for spec in ("time_mask[p=1,n=1,size=-40]", "frequency_mask[p=1,n=1,size=-3]"):
        out = augment_clip(x, [parse_augmentation(spec)], rng, 0.5, 20.0, 1)
        assert (out == 0).sum() in (26, 40), spec
    feats = parse_augmentation("time_mask[domain=spectrogram,size=40]")
    assert not feats.sample_domain
    with pytest.raises(ValueError, match="has no domain parameter"):
        parse_augmentation("pitch[domain=signal]")


def test_expected_errors_are_not_retried_but_crashes_are(prefect_harness):
    from prefect import flow, task

    from deepspeech_core.train.devices import DeviceError
    from tasks.retry import retry_unless_expected

    attempts: list[str] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_expected)
    def fails(exc: Exception) -> None:
        attempts.append(type(exc).__name__)
        raise exc

    @flow
    def attempt(exc: Exception) -> None:
        fails(exc)

    with pytest.raises(DeviceError, match="no GPU is visible"):
        attempt(DeviceError("--require_gpu: no GPU is visible"))
    assert attempts == ["DeviceError"]
    attempts.clear()
    with pytest.raises(RuntimeError, match="worker lost"):
        attempt(RuntimeError("worker lost"))
    assert attempts == ["RuntimeError"] * 3


def test_prefect_console_log_drops_expected_errors_only():
    import logging

    from deepspeech_core.train.devices import DeviceError
    from deepspeech_flow.errors import _HideExpectedTracebacks

    def record(exc: Exception | None, message: str) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("prefect.task_runs", logging.ERROR, "", 0, message, (), info)

    keep = _HideExpectedTracebacks().filter
    assert not keep(record(DeviceError("no GPU"), "Task run failed with exception"))
    assert not keep(record(None, "Finished in state Failed('... DeviceError: no GPU')"))
    assert keep(record(RuntimeError("boom"), "Task run failed with exception"))
    assert keep(record(None, "Finished in state Failed('... RuntimeError: boom')"))


def _fake_workdir(root: Path) -> Path:
    """A work directory's files as the stages write them (no training needed)."""
    import json

    from deepspeech_core.workdir.status import record_last_run

    (root / "reports").mkdir(parents=True)
    splits = {
        "train": {"clips": 30, "hours": 1.5, "rejected": {"too_long": 2, "bad_row": 1}},
        "test": {"clips": 5, "hours": 0.25, "rejected": {}},
    }
    (root / "reports" / "validation.json").write_text(json.dumps({"splits": splits}))
    training = root / "checkpoints" / "0123456789ab"
    (training / "train").mkdir(parents=True)
    (training / "model.json").write_text("{}")
    (training / "history.json").write_text('{"train_loss": [3, 2, 1], "dev_loss": [4, 2.5, 3]}')
    (training / "train" / "checkpoint").write_text('model_checkpoint_path: "ckpt-42"\n')
    for version, wer in (("v1", 0.31), ("v2", 0.42)):
        (root / "export" / version).mkdir(parents=True)
        meta = {"test_wer": wer, "test_cer": wer / 2, "created": "2026-01-01T00:00:00+00:00"}
        (root / "export" / version / "metadata.json").write_text(json.dumps(meta))
    (root / "export" / "current").symlink_to("v1")
    outcome = "failed: CorpusError: no clips"
    record_last_run(root, "export", time.time() - 5, outcome, {"validate": 1.5})
    return root


def test_status_shows_corpus_trainings_exports_and_last_run(tmp_path):
    from deepspeech_core.workdir.locking import training_lock

    workdir = _fake_workdir(tmp_path / "w")
    training = workdir / "checkpoints" / "0123456789ab"
    with training_lock(training):  # a training running there (this process holds it)
        code, out = _run_cli(["status", "--workdir", str(workdir)])
        code_json, out_json = _run_cli(["status", "--workdir", str(workdir), "--json"])
    assert code == 0, out
    assert "(free)" in out.splitlines()[0]
    assert re.search(r"train\s+30 clips\s+1.50 h\s+rejected: bad_row 1, too_long 2", out)
    assert re.search(r"0123456789ab\s+step\s+42\s+epochs\s+3\s+best dev loss\s+2.500", out)
    assert f"in use by pid {os.getpid()}" in out
    assert re.search(r"current -> v1\s+test WER\s+0.3100", out)
    assert re.search(r"\bv2\s+test WER\s+0.4200", out)
    assert "failed: CorpusError: no clips" in out
    assert "validate 1.5 s" in out
    assert code_json == 0, out_json
    data = __import__("json").loads(out_json)
    assert [e["current"] for e in data["exports"]] == [True, False]
    assert data["trainings"][0]["held_by"]["pid"] == os.getpid()
    code, out = _run_cli(["status", "--workdir", str(tmp_path / "none")])
    assert code == 0
    assert "no such work directory" in out
