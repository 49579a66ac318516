"""The temporary Prefect server of one `deepspeech-flow` command, and nothing left after it.

Without PREFECT_API_URL, Prefect starts a temporary server (`uvicorn` running
`prefect.server.api.server:create_app`) in the command's process group and stops it
from an atexit hook. Two things go wrong with that: Ctrl-C in a terminal reaches the
whole process group, so the server shuts down at the very moment the run needs it to
record its checkpointed stop; and a command ended by SIGKILL (or by a second Ctrl-C)
runs no atexit hook, so the server (a few hundred MB, docs/PERFORMANCE.md) is left
running, reparented to init.

So the command starts the same server itself: in a session of its own (terminal
signals do not reach it) with a parent-death signal (the kernel stops it when the
command ends, however it ends), and points Prefect at it for the length of the run.
With PREFECT_API_URL set (your own server, `make serve`, a test harness) nothing is
started.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from deepspeech_core.stopping import die_with_parent


class ServerError(RuntimeError):
    """The temporary Prefect server did not start; says why and what to do."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _spawn(port: int) -> subprocess.Popen:
    """The command Prefect's own temporary server runs, isolated and tied to us."""
    import prefect
    from prefect.settings import get_current_settings

    env = {
        **os.environ,
        # What Prefect sets for its temporary server: no UI, ephemeral mode.
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(prefect.__module_path__.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal is for the command, not for it
        preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()),
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(proc: subprocess.Popen, api_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(api_url):
        if proc.poll() is not None:
            raise ServerError(
                f"the temporary Prefect server exited ({proc.returncode}) while starting; "
                "see its output above, or start one yourself (`prefect server start`) "
                "and set PREFECT_API_URL"
            )
        if time.monotonic() > deadline:
            raise ServerError(
                f"the temporary Prefect server did not answer within {timeout:.0f} s; "
                "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a slow machine, "
                "or start one yourself (`prefect server start`) and set PREFECT_API_URL"
            )
        time.sleep(0.2)


def _drain_prefect_workers() -> None:
    """Send the run's queued logs and events while the server still answers.

    Otherwise Prefect's background workers flush them at exit into a server that is
    gone, and retry for more than a minute before the command can end.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # never started
        APILogWorker.instance().drain()
    EventsWorker.drain_all()


@contextmanager
def temporary_server() -> Iterator[str | None]:
    """Run the block against a temporary Prefect server, unless one is configured.

    Yields the server's API URL (None when PREFECT_API_URL already names a server).
    """
    from prefect.context import refresh_global_settings_context
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield None
        return
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    proc = _spawn(port)
    before = os.environ.get("PREFECT_API_URL")
    try:
        _wait_until_up(proc, api_url, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        # The environment for child processes, the global settings for Prefect's
        # background threads (log and event workers), the context for this thread.
        os.environ["PREFECT_API_URL"] = api_url
        refresh_global_settings_context()
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield api_url
        _drain_prefect_workers()
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
        refresh_global_settings_context()
        with contextlib.suppress(OSError):
            _stop(proc)
