"""Directory locks the kernel releases (issue 11, point 1): run.lock, train.lock, export.lock.

The holders are real processes, killed with SIGKILL; the container case runs them as pid
1 of fresh pid and UTS namespaces (what `docker run` does), when `unshare` can make them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepspeech_core.workdir.locking import (
    LockedError,
    export_lock,
    training_lock,
    workdir_holder,
    workdir_lock,
)

REPO = Path(__file__).resolve().parents[1]
LOCKS = {"workdir_lock": "run.lock", "training_lock": "train.lock"}
TAKE = {"workdir_lock": workdir_lock, "training_lock": training_lock, "export_lock": export_lock}

# Takes LOCK on DIR, prints its pid and host, holds it SECONDS, exits 0 (3 when refused).
HOLD = """
import json, os, socket, sys, time
from pathlib import Path
from deepspeech_core.workdir import locking
lock = getattr(locking, sys.argv[1])
try:
    with lock(Path(sys.argv[2])):
        print(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), flush=True)
        time.sleep(float(sys.argv[3]))
except locking.LockedError as exc:
    print(exc, flush=True)
    sys.exit(3)
"""

# Says it is ready, waits for GO to appear, then tries LOCK; prints ran/refused.
RACE = """
import sys, time
from pathlib import Path
from deepspeech_core.workdir import locking
lock = getattr(locking, sys.argv[1])
Path(sys.argv[3]).touch()
while not Path(sys.argv[4]).exists():
    time.sleep(0.0005)
try:
    with lock(Path(sys.argv[2])):
        print("ran", flush=True)
        time.sleep(1.0)
except locking.LockedError:
    print("refused", flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _in_namespace(hostname: str, argv: list[str]) -> list[str]:
    """`argv` as pid 1 of new pid, UTS and mount namespaces, with its own hostname."""
    script = f'hostname {hostname} && exec "$@"'
    return [*_unshare_prefix(), "sh", "-c", script, "sh", *argv]


def _unshare_prefix() -> list[str]:
    return ["unshare", "--pid", "--uts", "--fork", "--mount-proc"]


def _unshare_usable() -> str | None:
    """None when `unshare` can create the namespaces here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        [*_unshare_prefix(), "sh", "-c", "hostname probe && test $$ = 1"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"unshare cannot create pid+UTS namespaces here: {probe.stderr.strip()}"
    return None


def _start_holder(argv: list[str]) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, env=_env(), start_new_session=True
    )
    line = proc.stdout.readline()
    assert line, f"the holder exited ({proc.wait()}) before taking the lock"
    return proc, json.loads(line)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: unshare and its pid 1
    proc.wait()


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_a_container_restarted_after_a_kill_takes_the_lock(tmp_path, lock):
    """The holder is pid 1 on host c1 and is SIGKILLed; the next pid 1 (same or new host) runs.

    Before: `... in use by another train-cv run (pid 1 on c1)`, forever.
    """
    if (why := _unshare_usable()) is not None:
        pytest.skip(why)
    holder, seen = _start_holder(_in_namespace("c1", _python(HOLD, lock, str(tmp_path), "600")))
    try:
        assert seen == {"pid": 1, "host": "c1"}
        with pytest.raises(LockedError, match="pid 1 on c1"):
            with TAKE[lock](tmp_path):
                pass
    finally:
        _kill(holder)
    left = json.loads((tmp_path / LOCKS[lock]).read_text())
    assert (left["pid"], left["host"]) == (1, "c1"), "SIGKILL leaves the file with its details"
    for host in ("c1", "c2"):  # the same container started again; a new container
        again = subprocess.run(
            _in_namespace(host, _python(HOLD, lock, str(tmp_path), "0")),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert json.loads(again.stdout) == {"pid": 1, "host": host}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_a_killed_holder_releases_the_lock(tmp_path, lock):
    holder, seen = _start_holder(_python(HOLD, lock, str(tmp_path), "600"))
    try:
        with pytest.raises(LockedError, match=f"pid {seen['pid']} on {socket.gethostname()}"):
            with TAKE[lock](tmp_path):
                pass
    finally:
        _kill(holder)
    with TAKE[lock](tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists(), "a finished owner removes its lock file"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_a_lock_file_naming_this_very_pid_does_not_block(tmp_path, lock):
    """A dead owner whose pid the new process was given (pid reuse, pid 1 in containers)."""
    (tmp_path / LOCKS[lock]).write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 0})
    )
    with TAKE[lock](tmp_path) as path:
        assert json.loads(path.read_text())["started"] > 0


@pytest.mark.parametrize("lock", [*sorted(LOCKS), "export_lock"])
def test_of_racing_starters_exactly_one_runs(tmp_path, lock):
    """Four processes start at the same instant on a lock file left by a dead owner."""
    lock_name = {**LOCKS, "export_lock": "export.lock"}[lock]
    (tmp_path / lock_name).write_text(
        json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "started": 0})
    )
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            _python(RACE, lock, str(tmp_path), str(tmp_path / f"ready{i}"), str(go)),
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)):
        assert time.monotonic() < deadline, "the starters did not get ready"
        time.sleep(0.01)
    go.touch()
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["ran", "refused", "refused", "refused"]


def test_the_same_process_cannot_take_a_lock_twice(tmp_path):
    with export_lock(tmp_path):
        with pytest.raises(LockedError, match=f"another export \\(pid {os.getpid()}"):
            with export_lock(tmp_path):
                pass
    with export_lock(tmp_path):
        pass


def test_workdir_holder_names_the_running_process_without_taking_the_lock(tmp_path):
    assert workdir_holder(tmp_path) is None
    holder, seen = _start_holder(_python(HOLD, "workdir_lock", str(tmp_path), "600"))
    try:
        found = workdir_holder(tmp_path)
        assert found is not None
        assert (found["pid"], found["host"]) == (seen["pid"], seen["host"])
        assert found["started"] <= time.time()
    finally:
        _kill(holder)
    assert workdir_holder(tmp_path) is None, "a dead holder holds nothing"
    with workdir_lock(tmp_path):
        assert workdir_holder(tmp_path)["pid"] == os.getpid()
    assert workdir_holder(tmp_path) is None


def test_looking_at_the_holder_never_refuses_a_start(tmp_path):
    """A `workdir_holder` look holds a shared lock for an instant; a start then waits it out."""
    looker = subprocess.Popen(
        _python(
            "import sys, time\n"
            "from pathlib import Path\n"
            "from deepspeech_core.workdir.locking import workdir_holder\n"
            "end = time.monotonic() + 30\n"
            "while time.monotonic() < end: workdir_holder(Path(sys.argv[1]))\n",
            str(tmp_path),
        ),
        env=_env(),
    )
    try:
        time.sleep(0.3)
        for _ in range(100):
            with workdir_lock(tmp_path):
                pass
    finally:
        looker.kill()
        looker.wait()
