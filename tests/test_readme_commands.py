"""The README's main commands, run as written on a tiny corpus (sizes made tiny).

The commands are read from the README itself, so a README edit that breaks one fails
here. Placeholders (`cv-corpus-6.1/en`, `clip.wav`, ...) are mapped to the tiny corpus,
and the model is made tiny by adding flags (flags given later win).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepspeech_core import progress
from deepspeech_core.error_kinds import ErrorKind
from deepspeech_core.evaluate.kenlm_tools import KenLMToolError, find_tool
from deepspeech_flow.cli import app
from flows.train_cv import train_cv  # noqa: F401 - Prefect logging set up outside CliRunner

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = ["--n_hidden", "32", "--epochs", "1", "--train_batch_size", "8", "--dev_batch_size", "8"]
TINY += ["--test_batch_size", "8", "--beam_width", "16", "--no_export_tflite"]


def readme_command(prefix: str) -> list[str]:
    """The README's first `deepspeech-flow <prefix>...` command line, as arguments."""
    for line in README.read_text().replace("\\\n", " ").splitlines():
        match = re.search(r"deepspeech-flow (" + re.escape(prefix) + r"[^#`]*)", line)
        if match:
            return shlex.split(match.group(1))
    raise AssertionError(f"the README has no `deepspeech-flow {prefix}` command any more")


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}\n{result.output}\n{result.exception!r}"
    return result.output


def _check_progress_reports(events: list[progress.StageProgress]) -> None:
    """Every stage reported; counts add up; training's last report has the new dev loss."""

    def of(stage: str) -> list[progress.StageProgress]:
        return [e for e in events if e.stage == stage]

    assert {e.stage for e in events} == set(progress.STAGES)
    assert of("import")[-1].done == of("import")[-1].total > 0
    clips = of("features")[-1].total
    assert sum(e.advance for e in of("features")) == clips == of("features")[-1].done > 0
    steps = [e.done for e in of("train")]
    assert steps == sorted(steps)
    assert steps[-1] == of("train")[-1].total
    history_file = next(Path("deepspeech-data/checkpoints").rglob("history.json"))
    history = json.loads(history_file.read_text())
    assert of("train")[-1].info["dev_loss"] == pytest.approx(history["dev_loss"][-1])
    assert of("evaluate")[-1].done == of("evaluate")[-1].total > 0
    assert of("export")[-1].done == 3
    assert of("export")[-1].info["step"] == "v1"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, tiny_cv):
    """A working folder where the README's paths exist: cv-corpus-6.1/en, clip.wav, ..."""
    monkeypatch.chdir(tmp_path)
    for name in ("cv-corpus-6.1/en", "cv/en"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).symlink_to(tiny_cv)
    shutil.copy(next(tiny_cv.glob("clips/*.mp3")), "other.mp3")
    Path("more-text.txt").write_text("one two three\nfour five six\n")
    return tmp_path


def test_readme_commands_work_as_written(in_tmp, prefect_harness):
    run = readme_command("run --corpus")
    assert run[:3] == ["run", "--corpus", "cv-corpus-6.1/en"]
    events: list[progress.StageProgress] = []
    with progress.listening(events.append):  # what the terminal's progress bars are fed
        out = _invoke(run + TINY)
    assert "exported:" in out
    assert "now current" in out
    _check_progress_reports(events)
    workdir = in_tmp / "deepspeech-data"
    assert (workdir / "export" / "current").is_symlink()

    shutil.copy(next((workdir / "corpus" / "clips").glob("*.wav")), "clip.wav")
    out = _invoke(readme_command("transcribe --model deepspeech-data"))
    assert "clip.wav\t" in out
    assert "other.mp3\t" in out

    out = _invoke(readme_command("status"))
    assert "corpus:" in out
    assert "train " in out
    assert "trainings:" in out
    assert "current ->" in out
    assert "v1" in out
    assert "completed" in out
    status = json.loads(_invoke([*readme_command("status"), "--json"]))
    assert status["trainings"][0]["step"] > 0
    assert status["exports"][0]["current"]
    assert status["last_run"]["outcome"] == "completed"
    assert set(status["last_run"]["stage_seconds"]) >= {"validate", "features", "train"}

    out = _invoke(readme_command("promote"))
    assert "-> v1" in out

    out = _invoke(readme_command("build-lm"))
    assert Path("lm.arpa").is_file()
    assert "3-gram" in out
    evaluate = readme_command("evaluate --corpus") + ["--beam_width", "16"]
    try:
        find_tool("build_binary")  # `make test` compiles it (`make kenlm`)
    except KenLMToolError:  # a bare pytest run without KenLM's tools: the ARPA instead
        evaluate = [("lm.arpa" if a == "lm.scorer" else a) for a in evaluate]
    else:
        _invoke(readme_command("build-lm deepspeech-data/corpus/train.csv --scorer"))
        assert Path("lm.scorer").is_file()
    out = _invoke(evaluate)
    assert "test WER" in out

    # an expected error inside the flow: one line, its exit code, recorded as the last run
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        result = CliRunner().invoke(app, ["train", "--corpus", "cv/en", "--require_gpu", *TINY])
        assert result.exit_code == ErrorKind.DEVICE, result.output
        assert result.output.startswith("error: --require_gpu")
        assert "Traceback" not in result.output
        status = json.loads(_invoke(["status", "--json"]))
        assert status["last_run"]["outcome"].startswith("failed: DeviceError")
