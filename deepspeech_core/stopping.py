"""Stopping on SIGINT/SIGTERM at the next safe point instead of dying mid-step.

A signal handler that raises (Python's default KeyboardInterrupt, Prefect's
TerminationSignal) interrupts whatever bytecode runs at that moment: inside a
TensorFlow destructor it is printed as "Exception ignored" and lost, inside a step it
throws away everything since the last checkpoint. So the handlers here only *record*
the request; the training loop checks it between steps, writes a checkpoint of exactly
the step it reached and raises `StopRequested`; other stages check it between units of
work that are written atomically (stages, feature shards).

The first signal also puts SIGINT and SIGTERM back to the system's default action, so
a second Ctrl-C (or `docker stop`'s follow-up) ends the process at once, even while the
main thread sits in a long TensorFlow op; the newest periodic checkpoint still holds.

Handlers can only be installed from the main thread (`signal.signal`); elsewhere
`stop_on_signals` installs nothing and the caller's dispositions stay in force.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """A stop signal was honoured at a safe point; what had to be saved is saved.

    A BaseException, like KeyboardInterrupt: `except Exception` handlers and Prefect's
    task retries must not swallow or retry a stop the user asked for.
    """

    def __init__(self, signum: int, where: str, step: int | None = None) -> None:
        self.signum = signum
        self.where = where
        self.step = step
        super().__init__(self.message)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def message(self) -> str:
        saved = f" at step {self.step} (checkpoint written)" if self.step is not None else ""
        return (
            f"{self.signal_name}: stopped {self.where}{saved}; run the same command again "
            "to continue from there"
        )


@dataclass
class _Request:
    signum: int
    at: float  # time.monotonic() when the signal arrived


_lock = threading.Lock()
_request: _Request | None = None


def request_stop(signum: int) -> None:
    """Record a stop request (what the handlers do; also callable from code)."""
    global _request
    with _lock:
        if _request is None:
            _request = _Request(signum, time.monotonic())


def requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return _request.signum if _request is not None else None


def clear() -> None:
    """Forget a handled request (a new run in the same process starts clean)."""
    global _request
    with _lock:
        _request = None


def check(where: str, step: int | None = None) -> None:
    """Raise StopRequested if a stop was requested; call it only at a safe point."""
    if _request is not None:
        raise StopRequested(_request.signum, where, step)


def _handler(signum: int, _frame) -> None:
    request_stop(signum)
    # The next stop signal takes the system's default action: exit at once.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    log.warning(
        "%s received: finishing the current step and saving a checkpoint "
        "(press Ctrl-C again to quit at once, losing the work since the newest checkpoint)",
        signal.Signals(signum).name,
    )


@contextmanager
def stop_on_signals() -> Iterator[bool]:
    """Turn SIGINT/SIGTERM into a stop request for the duration of the block.

    Yields whether the handlers were installed (False outside the main thread). The
    previous handlers are restored on exit; a pending request is kept, so the caller
    can tell that (and why) the block stopped.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    clear()
    previous = {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS}
    try:
        yield True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:  # resolved here, not in the child: a preexec_fn must not load libraries
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (AttributeError, OSError):  # not Linux
    _prctl = None


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux).

    Run in a child process (a Popen preexec_fn, a process pool initializer): the
    temporary Prefect server and pool workers then end with the command that started
    them, even when that command is SIGKILLed and gets no chance to stop them.
    `parent`, when known, catches a parent that died before the request took effect.
    """
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


def pool_worker_init(owner: int | None = None) -> None:
    """Initializer of worker processes: Ctrl-C is the parent's to handle; end with it.

    Ctrl-C reaches the terminal's whole process group; a worker that died of it would
    only turn a clean stop into a broken pool. The parent stops handing out work.
    A worker started through a fork server (whose parent is that server, which outlives
    a SIGKILLed owner) also watches `owner`, the process that made the pool.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGTERM)
    if owner is not None and owner != os.getppid():
        threading.Thread(target=_exit_when_gone, args=(owner,), daemon=True).start()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _exit_when_gone(pid: int, every: float = 1.0) -> None:
    while _running(pid):
        time.sleep(every)
    os._exit(1)
