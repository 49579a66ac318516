"""Ctrl-C, `docker stop` and SIGKILL of a real training: a checkpoint, a bounded exit, no orphans.

The command runs as a terminal or Docker would run it: a process of its own with the
default signal dispositions, without PREFECT_API_URL (so it starts its own temporary
Prefect server). SIGINT goes to its whole process group (what Ctrl-C does), SIGTERM to
the command alone (what `docker stop` does), SIGKILL to the command alone. One
training is stopped each of the three ways and then finished; its final weights must
equal those of a training that was never interrupted.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

from deepspeech_core import stopping
from deepspeech_flow.cli import app
from flows.train_cv import train_cv  # noqa: F401 - Prefect's logging set up outside CliRunner
from tests.helpers import newest_checkpoint_step

REPO = Path(__file__).resolve().parents[1]
# Docker's default grace between SIGTERM and SIGKILL: a tiny model must stop well within it.
STOP_BOUND_SECONDS = 10.0
SEED = 20  # picks the moments the signals are sent
NOT_STATE = ("save_counter/", "_CHECKPOINTABLE_OBJECT_GRAPH")

TRAIN = [
    "--n_hidden",
    "32",
    "--epochs",
    "10",
    "--train_batch_size",
    "4",
    "--dev_batch_size",
    "8",
    "--checkpoint_steps",
    "1000",  # only epoch ends and stops write checkpoints
    "--seed",
    "7",
    "--deterministic",
]
EPOCHS, STEPS = 10, 10 * 8  # 32 training clips, 4 per batch


def _command(corpus: Path, workdir: Path) -> list[str]:
    return ["train", "--corpus", str(corpus), "--workdir", str(workdir), *TRAIN]


def _start(corpus: Path, workdir: Path, home: Path, log: Path) -> subprocess.Popen:
    """The CLI as a terminal starts it: own process group, default dispositions."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(home), "PYTHONPATH": str(REPO)}
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deepspeech_flow.cli", *_command(corpus, workdir)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_checkpoint(proc: subprocess.Popen, workdir: Path, step: int, log: Path) -> None:
    deadline = time.monotonic() + 300
    while newest_checkpoint_step(workdir) < step:
        if proc.poll() is not None:
            raise AssertionError("training ended before it could be stopped:\n" + log.read_text())
        assert time.monotonic() < deadline, f"no checkpoint of step {step} within 300 s"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen, sig: int, group: bool, log: Path):
    """Send `sig`; return (exit code, seconds from signal to exit, output, started procs)."""
    started = psutil.Process(proc.pid).children(recursive=True)
    assert any("uvicorn" in " ".join(p.cmdline()) for p in started), "no temporary server"
    sent = time.monotonic()
    if group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    return proc.returncode, time.monotonic() - sent, log.read_text(), started


def _assert_nothing_left(started: list[psutil.Process], how: str) -> None:
    """Every process the command started ends with it (the server within its own stop)."""
    gone, alive = psutil.wait_procs(started, timeout=15)
    assert not alive, f"still running after {how}: {[p.cmdline() for p in alive]}"


def _final_weights(workdir: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    (train_dir,) = (workdir / "checkpoints").glob("*/train")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(train_dir)))
    # Everything but the bookkeeping of the saves themselves (how many, the object graph).
    names = [n for n in reader.get_variable_to_shape_map() if not n.startswith(NOT_STATE)]
    return {name: reader.get_tensor(name) for name in names}


@pytest.mark.usefixtures("prefect_harness")
def test_sigint_sigterm_sigkill_stop_cleanly_and_resume_bit_exact(tiny_cv, tmp_path):
    rng = random.Random(SEED)
    workdir, home = tmp_path / "stopped", tmp_path / "prefect-home"
    stops = []
    for sig, group in ((signal.SIGINT, True), (signal.SIGTERM, False)):
        log = tmp_path / f"{sig}.log"
        proc = _start(tiny_cv, workdir, home, log)
        # A seeded moment after the next epoch-end checkpoint: somewhere in an epoch.
        _wait_for_checkpoint(proc, workdir, newest_checkpoint_step(workdir) + 8, log)
        time.sleep(rng.uniform(0.0, 1.0))
        code, seconds, output, started = _stop(proc, sig, group, log)
        name = signal.Signals(sig).name
        assert code in (128 + sig, -sig), f"{name}: exit {code}\n{output}"
        assert seconds < STOP_BOUND_SECONDS, f"{name}: {seconds:.1f} s to exit\n{output}"
        found = re.search(rf"{name}: stopped training at step (\d+) \(checkpoint written\)", output)
        assert found, output
        step = int(found.group(1))
        assert newest_checkpoint_step(workdir) == step, "the stop's checkpoint is the newest"
        assert "run the same command again" in output
        _assert_nothing_left(started, name)
        stops.append((name, step, round(seconds, 2)))
    assert stops[1][1] > stops[0][1], f"the second run resumed and went on: {stops}"

    log = tmp_path / "kill.log"
    proc = _start(tiny_cv, workdir, home, log)
    _wait_for_checkpoint(proc, workdir, newest_checkpoint_step(workdir) + 8, log)
    code, _, output, started = _stop(proc, signal.SIGKILL, False, log)
    assert code == -signal.SIGKILL
    _assert_nothing_left(started, "SIGKILL")

    # The same command again finishes the training; compare with one never interrupted.
    for where in (workdir, tmp_path / "uninterrupted"):
        result = CliRunner().invoke(app, _command(tiny_cv, where))
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert f"step {STEPS}, epochs {EPOCHS}" in result.output
    resumed, reference = _final_weights(workdir), _final_weights(tmp_path / "uninterrupted")
    assert resumed.keys() == reference.keys()
    assert any("lstm" in k for k in reference)
    different = [k for k in reference if not np.array_equal(resumed[k], reference[k])]
    assert not different, f"after stops at {stops}, these differ: {different}"
    print("stops (signal, step, seconds to exit):", stops)


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    """The first SIGINT only asks for a stop; the second takes the default action at once."""
    script = (
        "import time\n"
        "from deepspeech_core import stopping\n"
        "with stopping.stop_on_signals():\n"
        "    print('ready', flush=True)\n"
        "    while True:\n"
        "        time.sleep(60)  # a long op that never reaches a safe point\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None, "the first Ctrl-C must not end the process"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=5) == -signal.SIGINT
    assert time.monotonic() - sent < 2.0
    assert "SIGINT received" in proc.stderr.read()


def test_stop_request_is_raised_only_where_checked():
    """Handlers record the request; `check` raises it with the step; handlers are restored."""
    before = signal.getsignal(signal.SIGTERM)
    with stopping.stop_on_signals() as installed:
        assert installed
        stopping.check("nothing requested yet")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs between bytecodes
        assert stopping.requested() == signal.SIGTERM
        with pytest.raises(stopping.StopRequested, match="SIGTERM: stopped training at step 12"):
            stopping.check("training", step=12)
    assert signal.getsignal(signal.SIGTERM) is before
    stopping.clear()


def test_pool_workers_end_with_the_command_that_started_them(tmp_path):
    """Workers started like the import pool's die with a SIGKILLed parent (no orphans)."""
    script = (
        "import multiprocessing, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from deepspeech_core import stopping\n"
        "ctx = multiprocessing.get_context('forkserver')\n"
        "pool = ProcessPoolExecutor(\n"
        "    2, mp_context=ctx, initializer=stopping.pool_worker_init, initargs=(os.getpid(),)\n"
        ")\n"
        "print(' '.join({str(pool.submit(os.getpid).result()) for _ in range(4)}), flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    workers = [psutil.Process(int(p)) for p in proc.stdout.readline().split()]
    started = psutil.Process(proc.pid).children(recursive=True)
    assert workers
    assert all(w in started for w in workers)
    for worker in workers:  # what Ctrl-C sends them: they leave the stop to the parent
        worker.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert all(w.is_running() for w in workers), "a worker died of Ctrl-C"
    proc.kill()
    proc.wait()
    _assert_nothing_left(started, "SIGKILL of the pool's owner")
