"""`evaluate` and `export` never train; a parent `checkpoints/` directory means its newest training.

Issue 11, point 10: the README's `deepspeech-flow evaluate --test_files new.csv
--checkpoint_dir deepspeech-data/checkpoints` started a training in the parent directory
(trainings live in `checkpoints/<training data>/`) and failed with `no training split`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from deepspeech_core.error_kinds import ErrorKind
from deepspeech_core.model.checkpoints import load_model
from deepspeech_core.train.trainings import (
    NoTrainedModelError,
    checkpoint_dir_for,
    resolve_trained,
    resolve_trainings_roots,
    run_checkpoint_dir,
)
from deepspeech_flow.cli import app
from tests.helpers import tiny_config

README = Path(__file__).resolve().parents[1] / "README.md"


def _trainings(trained, root: Path, names: tuple[str, ...]) -> list[Path]:
    """Copies of the session's tiny training under `root`, each saved after the one before."""
    copies = []
    for i, name in enumerate(names):
        copy = root / name
        shutil.copytree(trained[0].checkpoint_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
        saved = time.time() - 3600 * (len(names) - i)
        for path in copy.rglob("*"):
            os.utime(path, (saved, saved))
        copies.append(copy)
    return copies


def _saved_state(training: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in sorted(training.rglob("*")) if p.is_file()}


@pytest.mark.usefixtures("prefect_harness")
def test_the_readme_evaluate_command_as_written(trained, tmp_path, monkeypatch):
    found = re.search(
        r"^(deepspeech-flow evaluate --test_files new\.csv --checkpoint_dir \S+)$",
        README.read_text(),
        re.MULTILINE,
    )
    assert found, "the README's evaluate example changed: update this test with it"
    argv = shlex.split(found.group(1))[1:]
    older, newest = _trainings(trained, tmp_path / "deepspeech-data" / "checkpoints", ("a", "b"))
    before = {d: _saved_state(d) for d in (older, newest)}
    shutil.copy(trained[1].splits["test"], tmp_path / "new.csv")  # absolute wav paths
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, argv)

    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((tmp_path / "deepspeech-data/reports/evaluation.json").read_text())
    assert report["samples"] == len(pd.read_csv(tmp_path / "new.csv"))
    assert Path(report["checkpoint"]).parent.parent == newest, "the newest training is used"
    trainings_after = sorted(p.name for p in (tmp_path / "deepspeech-data/checkpoints").iterdir())
    assert trainings_after == ["a", "b"], "evaluate must not start a training"
    assert {d: _saved_state(d) for d in (older, newest)} == before, "nor touch one"


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_evaluate_and_export_without_a_model_fail_at_once_and_train_nothing(
    command, tiny_cv, tmp_path
):
    workdir = tmp_path / "work"
    result = CliRunner().invoke(app, [command, "--corpus", str(tiny_cv), "--workdir", str(workdir)])
    # one line, the checkpoint kind's exit code (deepspeech_flow.errors), no traceback
    assert result.exit_code == ErrorKind.CHECKPOINT, result.output
    assert "error: no trained model in" in result.output
    assert "Train one first" in result.output
    assert "Traceback" not in result.output
    assert not (workdir / "checkpoints").exists()
    assert not (workdir / "corpus").exists(), "it says so before importing anything"


def test_a_parent_directory_resolves_to_its_newest_training_or_lists_them(trained, tmp_path):
    a, b = _trainings(trained, tmp_path / "checkpoints", ("a", "b"))
    assert resolve_trained(tmp_path / "checkpoints") == b
    assert resolve_trained(a) == a
    assert load_model(tmp_path / "checkpoints", "best")[2].parent.parent == b
    (b / "best" / "checkpoint").unlink()
    (b / "train" / "checkpoint").unlink()  # b has no checkpoint left: a is the newest now
    assert resolve_trained(tmp_path / "checkpoints") == a
    with pytest.raises(NoTrainedModelError, match=r"has not saved a checkpoint yet.* a \(saved"):
        resolve_trained(b)
    shutil.rmtree(a)
    with pytest.raises(NoTrainedModelError, match=r"none of its trainings has a checkpoint yet: b"):
        resolve_trained(tmp_path / "checkpoints")
    with pytest.raises(NoTrainedModelError, match="does not exist"):
        resolve_trained(tmp_path / "nowhere", "--load_checkpoint_dir")


def test_checkpoint_and_load_checkpoint_dir_accept_the_parent(trained, tmp_path):
    cfg, _, features, _ = trained
    older, newest = _trainings(trained, tmp_path / "checkpoints", ("a", "b"))
    parent = tmp_path / "checkpoints"
    given = tiny_config(tmp_path / "work", cfg.corpus.corpus).model_copy(deep=True)
    given.training.checkpoint_dir = parent
    given.training.load_checkpoint_dir = parent
    # train: the parent is the root of trainings, as WORKDIR/checkpoints is by default
    assert run_checkpoint_dir(given, features, False) == checkpoint_dir_for(parent, features)
    trains = resolve_trainings_roots(given, reuse_trained_model=False)
    assert trains.training.load_checkpoint_dir == newest
    assert trains.training.checkpoint_dir == parent
    # evaluate/export: its newest training (before validation, which takes its alphabet)
    evaluates = resolve_trainings_roots(given, reuse_trained_model=True)
    assert evaluates.training.checkpoint_dir == newest
