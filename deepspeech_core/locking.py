"""One owner per directory: a lock file naming its owner.

Two trainings writing one checkpoint directory would interleave checkpoints and corrupt
each other's resume point; two pipeline runs on one work directory would race for the
same export version. The lock holds the owner's pid, host and start time; a lock
left by a process that is gone (on this host) is stale and taken over, so a crash never
blocks the next run.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockedError(RuntimeError):
    """Another live process holds the directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def _try_create(path: Path, owner: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    return True


def _live_holder(path: Path) -> dict | None:
    """The owner recorded in lock file `path` if it may still be running, else None."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not holder:
        return None
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
        return None  # stale: a crashed run's lock, taken over by the next one
    return holder


def workdir_holder(workdir: Path) -> dict | None:
    """Who holds WORKDIR/run.lock ({pid, host, started}), or None when it is free.

    Lets a command say "busy" before it starts anything (the lock itself is taken by the
    flow); a lock left by a dead process on this host counts as free.
    """
    return _live_holder(Path(workdir) / "run.lock")


def training_lock(checkpoint_dir: Path):
    """Hold CHECKPOINT_DIR/train.lock for the duration of the block."""
    return directory_lock(
        checkpoint_dir, "train.lock", "training", "train into another --checkpoint_dir"
    )


def workdir_lock(workdir: Path):
    """Hold WORKDIR/run.lock: one pipeline run per work directory at a time."""
    return directory_lock(workdir, "run.lock", "train-cv run", "use another --workdir")


@contextmanager
def directory_lock(directory: Path, name: str, what: str, instead: str) -> Iterator[Path]:
    """Hold DIRECTORY/NAME for the duration of the block (a stale lock is taken over)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    owner = _owner()
    for _ in range(3):
        if _try_create(path, owner):
            break
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            holder = {}
        same_host = holder.get("host") == owner["host"]
        if holder and (not same_host or _alive(int(holder.get("pid", -1)))):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
            raise LockedError(
                f"{directory} is in use by another {what} (pid {holder.get('pid')} on "
                f"{holder.get('host')}, since {started}). Wait for it to finish, stop it, or "
                f"{instead}. If that process is gone for good, delete {path}."
            )
        path.unlink(missing_ok=True)  # stale: its owner is dead; take it over
    else:
        raise LockedError(f"could not take {path}: another process keeps recreating it")
    try:
        yield path
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == owner["pid"]:
                path.unlink()
        except (OSError, ValueError):
            pass
