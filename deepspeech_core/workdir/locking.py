"""One owner per directory: a lock the kernel holds for the owner's lifetime.

Two trainings writing one checkpoint directory would interleave checkpoints and corrupt
each other's resume point; two pipeline runs on one work directory (or two exports into
one export directory) would race for the same files. So each holds an exclusive
`flock` on an open lock file (`run.lock`, `train.lock`, `export.lock`) for as long as it
works there.

Why a kernel lock rather than a pid in a file: the kernel drops the lock when the owning
process dies, however it dies (SIGKILL, the OOM killer, a container stopped), so a
crash never blocks the next run, and nothing has to guess from a pid and a hostname
whether the owner still lives. Guessing fails exactly where the playbook runs: in a
container the CLI is pid 1 of its own pid namespace, so a restarted container's new
process has the dead one's pid, and a new container has a new hostname. The pid, host
and start time are still written into the file, but only to name the owner in the
error a second starter gets. Taking the lock is one atomic system call, so of several
processes starting together exactly one runs.

The lock file stays while its owner works and is emptied and removed when it finishes;
a starter that locked a file just removed by its finishing owner notices (the path no
longer names the file it locked) and tries again, so removal cannot let two in.

Network filesystems. On Linux, NFS (v4, or v3 with the lock manager running) turns
`flock` into a byte-range lock the server arbitrates, so hosts sharing a work directory
exclude each other; a crashed host's lock is dropped when its NFS lease expires (about
90 s on NFSv4), not at once. An NFS mount with `nolock` or `local_lock=flock|all` makes
the lock local to each host, so two hosts could both run: give each host its own
work directory (and checkpoint and export directory) there. Filesystems without locks
(some FUSE mounts) make every start fail with an error saying so rather than run
unprotected.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_LOCK = "run.lock"
TRAIN_LOCK = "train.lock"
EXPORT_LOCK = "export.lock"

# A file being locked by a new owner is empty for a moment (between `flock` and the
# write of its details); a competitor that finds it so looks again this long before it
# reports an unknown owner. One that finds an owner looks again for a shorter while: a
# `holder()` look holds a shared lock for an instant, which must not refuse a start.
_SETTLE_SECONDS = 2.0
_RECHECK_SECONDS = 0.3


OnWait = Callable[[dict], None]


class LockedError(RuntimeError):
    """Another live process holds the directory."""


class LockUnsupportedError(RuntimeError):
    """The filesystem does not implement file locks."""


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def _read_holder(fd: int) -> dict:
    """The details the holder wrote into the lock file ({} while it has written none)."""
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    """Does `path` still name the file open as `fd` (not removed or replaced since)?"""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _flock(fd: int, operation: int, path: Path) -> bool:
    """`flock` without blocking: True when taken, False when someone else holds it."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise LockUnsupportedError(
                f"cannot lock {path}: its filesystem does not support file locks "
                f"({os.strerror(exc.errno)}). Put this directory on a local filesystem "
                "(or an NFS mount with locking)."
            ) from exc
        raise
    return True


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that has not said who it is yet"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {started}"


def _acquire(
    path: Path, what: str, instead: str, wait: float = 0.0, on_wait: OnWait | None = None
) -> int:
    """An open descriptor of `path` holding its exclusive lock.

    LockedError if another process holds it for longer than `wait` seconds; `on_wait`
    is told once who is being waited for.
    """
    started = time.monotonic()
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            if _flock(fd, fcntl.LOCK_EX, path):
                if _same_file(fd, path):
                    return fd
                os.close(fd)  # its owner removed it as we locked it: lock the new one
                continue
            holder = _read_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        waited = time.monotonic() - started
        if holder and waited < wait:
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(0.2)
            continue
        if waited > max(wait, _RECHECK_SECONDS if holder else _SETTLE_SECONDS):
            raise LockedError(
                f"{path.parent} is in use by another {what} ({_describe(holder)}). Wait for "
                f"it to finish, stop it, or {instead}. The lock is the kernel's: it goes "
                "away by itself when that process ends, however it ends."
            )
        time.sleep(0.05)


def _release(fd: int, path: Path) -> None:
    """Empty and remove the lock file, then drop the lock (closing its descriptor)."""
    try:
        os.ftruncate(fd, 0)
        if _same_file(fd, path):
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def directory_lock(
    directory: Path,
    name: str,
    what: str,
    instead: str,
    wait: float = 0.0,
    on_wait: OnWait | None = None,
) -> Iterator[Path]:
    """Hold DIRECTORY/NAME exclusively for the duration of the block.

    With `wait`, a lock held by another process is waited for up to that many seconds
    (`on_wait(holder details)` is called once when waiting starts). Not re-entrant: a
    second `directory_lock` on the same file fails even in the same process, as it would
    in another one.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fd = _acquire(path, what, instead, wait, on_wait)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_owner()) + "\n").encode(), 0)
        yield path
    finally:
        _release(fd, path)


def holder(directory: Path, name: str) -> dict | None:
    """The details of the process holding DIRECTORY/NAME, or None when no one holds it.

    Looks without taking the lock for itself: a shared lock that fails means an owner;
    one that succeeds is dropped at once, and a starter that meets it in that instant
    tries again for a moment (_RECHECK_SECONDS), so looking never refuses a run.
    """
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if _flock(fd, fcntl.LOCK_SH, path):
            return None
        deadline = time.monotonic() + _SETTLE_SECONDS
        while not (found := _read_holder(fd)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found or {"pid": None, "host": None, "started": None}
    finally:
        os.close(fd)  # also drops the shared lock, if it was taken


def training_lock(checkpoint_dir: Path):
    """Hold CHECKPOINT_DIR/train.lock for the duration of the block."""
    return directory_lock(
        checkpoint_dir, TRAIN_LOCK, "training", "train into another --checkpoint_dir"
    )


def workdir_lock(workdir: Path):
    """Hold WORKDIR/run.lock: one pipeline run per work directory at a time."""
    return directory_lock(workdir, RUN_LOCK, "train-cv run", "use another --workdir")


def workdir_holder(workdir: Path) -> dict | None:
    """Who runs in WORKDIR now (pid, host, started), or None: for an early "busy" check."""
    return holder(workdir, RUN_LOCK)


def export_lock(export_dir: Path, wait: float = 0.0, on_wait: OnWait | None = None):
    """Hold EXPORT_DIR/export.lock: one export or promotion per export directory at a time.

    Exports and promotions are short next to a training, so callers usually `wait`:
    two runs sharing an --export_dir then export one after the other.
    """
    return directory_lock(
        export_dir, EXPORT_LOCK, "export", "give another --export_dir", wait, on_wait
    )


def describe_holder(holder: dict) -> str:
    """`pid N on HOST, since TIME`: the lock owner, for messages."""
    return _describe(holder)
