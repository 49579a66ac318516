"""Helpers shared by the test modules (fixtures live in conftest.py, which tests do not import)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd-cv" / "en"


def sigkill_when(proc, ready, timeout: float, what: str, group: bool = False) -> None:
    """Poll `ready()` while `proc` runs; SIGKILL it (its process group) once it is true."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, f"{what} finished before it could be killed"
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def newest_checkpoint_step(workdir: Path) -> int:
    """Step of the newest periodic checkpoint of any training under `workdir` (-1: none)."""
    import contextlib
    import re

    steps = [-1]
    for state in _checkpoint_states(Path(workdir) / "checkpoints"):
        with contextlib.suppress(OSError):  # being replaced right now
            found = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state.read_text())
            steps += [int(found.group(1))] if found else []
    return max(steps)


def _checkpoint_states(root: Path) -> list[Path]:
    """Every train/checkpoint under `root`, walked while a training writes there: its
    temporary folders (ckpt-N_temp) vanish mid-walk, which a walk must shrug off."""
    found = []
    for folder, subfolders, files in os.walk(root, onerror=lambda _: None):
        if Path(folder).name == "train" and "checkpoint" in files:
            found.append(Path(folder) / "checkpoint")
        subfolders[:] = [d for d in subfolders if not d.endswith("_temp")]
    return found


def tiny_config(workdir: Path, corpus: Path, n_hidden: int = 32, **training):
    from deepspeech_core.config import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "workdir": str(workdir),
            "corpus": {"corpus": str(corpus), "import_workers": 1},
            "model": {"n_hidden": n_hidden, "dropout_rate": 0.05},
            "training": {
                "epochs": 2,
                "train_batch_size": 8,
                "dev_batch_size": 8,
                "seed": 7,
                "checkpoint_steps": 3,
                **training,
            },
            "evaluation": {"test_batch_size": 8, "report_count": 1, "beam_width": 1},
        }
    ).resolved()


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under `directory`: tag -> [(step, value)]."""
    import tensorflow as tf

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(directory).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(events)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else None
                number = value.simple_value if number is None else number
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def transcribe_cli(export_dir: Path, wavs: list, beam_width: int) -> list[str]:
    """What `deepspeech-flow transcribe --model EXPORT --beam_width N --json` says of each wav."""
    import json

    from typer.testing import CliRunner

    from deepspeech_flow.cli import app

    args = ["transcribe", "--model", str(export_dir), "--beam_width", str(beam_width), "--json"]
    result = CliRunner().invoke(app, [*args, *map(str, wavs)])
    assert result.exit_code == 0, result.output
    return [json.loads(line)["text"] for line in result.output.splitlines()]
