"""The local deployment stack: a Prefect server, the work pool, the deployments, a worker.

    python deployments/stack.py up --workdir W --corpus C   # `make serve`
    python deployments/stack.py down --workdir W            # `make stop`
    python deployments/stack.py status --workdir W

Everything the stack keeps lives under `W/prefect`: the server's SQLite database
(PREFECT_HOME), pid files (`run/`), logs (`logs/`) and `auth_string` (0600), the
stack's own PREFECT_SERVER_API_AUTH_STRING: a server on 127.0.0.1 is still open to every
local account, so its API answers only requests carrying that string (the worker, its
flow runs and the Prefect CLI get it as PREFECT_API_AUTH_STRING; the UI asks for it).
`up` is idempotent (a running server or worker is kept); `down` stops exactly the
processes `up` started, and the worker's flow runs with them, marked Cancelled.

Prefect does the Prefect work: `prefect server start` serves, `prefect server status
--wait` says when it answers, `prefect worker start --type process` creates the work
pool if needed, `prefect deploy` deploys, and API calls go through Prefect's client;
psutil walks process trees and tells a process from a later one given the same pid.
What stays here is what Prefect 3.9's CLI cannot do for a stack that must be stopped
exactly and safely (checked against `prefect server start --help` and its source):

- `prefect server start --background` leaves the server's stdout/stderr on pipes whose
  reader exits at once (no log to read when it fails; every log line is a broken-pipe
  write), keeps it in the starting command's process group (a Ctrl-C during `make
  serve` or a hangup of that terminal stops it), and writes a bare pid to
  PREFECT_HOME/server.pid that `prefect server stop` SIGTERMs unchecked: a pid the
  system has since given to another program would get the signal. So the server is
  started in the foreground mode, in a session of its own, logging to a file.
- A process worker has no stop command, and nothing stops its flow runs (each in a
  process group of its own) or records them as stopped.

Each process is recorded with its start time; a pid the system has since reused is
left alone. Linux.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
POOL = "deepspeech-flow"
RECOVERY_DEPLOYMENT = "restart-crashed-train-cv/restart-crashed-train-cv"
# Started in this order, stopped in the reverse one.
SERVICES = ("server", "worker")
INHERITED_NOT = {
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_API_AUTH_STRING",
    "PREFECT_PROFILE",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
}


class StackError(RuntimeError):
    pass


# --- processes (psutil) ----------------------------------------------------------------


def _process(pid: int, started: float | None = None) -> psutil.Process | None:
    """The living process `pid`, if it is still the one that started at `started`."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # it has exited already
            return None
        if started is not None and abs(proc.create_time() - started) > 0.01:
            return None
        return proc
    except psutil.Error:
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below `pid`."""
    proc = _process(pid)
    if proc is None:
        return []
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in proc.children(recursive=True)]
    return []


def command_line(pid: int) -> str:
    proc = _process(pid)
    if proc is None:
        return ""
    with contextlib.suppress(psutil.Error):
        return " ".join(proc.cmdline())
    return ""


def _signal_tree(tree: list[psutil.Process], sig: int) -> None:
    """Signal each process still running: its whole group when it leads one.

    psutil's `is_running` compares start times, so a reused pid is never signalled.
    """
    for proc in tree:
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if not proc.is_running():
                continue
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)


def stop_process(pid: int, started: float, grace: float = 30.0) -> bool:
    """SIGTERM `pid`'s group and every descendant's, SIGKILL what outlives `grace`."""
    proc = _process(pid, started)
    if proc is None:
        return False
    tree = [proc]
    with contextlib.suppress(psutil.Error):
        tree += proc.children(recursive=True)
    _signal_tree(tree, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=grace)
    _signal_tree(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)
    return True


def _record_start(record: dict) -> float | None:
    """A pid file's start time as psutil gives it (older pid files hold clock ticks)."""
    if "create_time" in record:
        return float(record["create_time"])
    if "start" in record:  # /proc/PID/stat's start ticks, written by earlier versions
        return psutil.boot_time() + int(record["start"]) / os.sysconf("SC_CLK_TCK")
    return None


# --- the stack -------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    workdir: Path
    corpus: Path | None = None
    host: str = "127.0.0.1"
    port: int = 4200
    ui: bool = True
    max_restarts: int | None = None  # None: the value in prefect.yaml
    startup_timeout: float = 240.0
    # Extra environment for the worker (and so its flow runs), e.g. faster polling.
    worker_env: dict[str, str] = field(default_factory=dict)
    # The processes this object started, reaped by `down` (no zombies in a long-lived caller).
    _children: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).expanduser().resolve()
        if self.corpus is not None:
            self.corpus = Path(self.corpus).expanduser().resolve()

    @property
    def home(self) -> Path:
        return self.workdir / "prefect"

    @property
    def prefect(self) -> str:
        """The Prefect CLI of the Python running this (the project's venv)."""
        return str(Path(sys.executable).parent / "prefect")

    @property
    def database(self) -> Path:
        return self.home / "prefect.db"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def auth_file(self) -> Path:
        return self.home / "auth_string"

    @property
    def auth_string(self) -> str:
        """The stack's API auth string, made (0600, owner only) the first time it is asked."""
        path = self.auth_file
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            os.chmod(path, 0o600)  # whatever made it, only its owner may read it
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(f"deepspeech:{secrets.token_urlsafe(32)}\n")
        return path.read_text().strip()

    def pid_file(self, name: str) -> Path:
        return self.home / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def env(self) -> dict[str, str]:
        """The environment of every Prefect command of the stack: this server, this home."""
        env = {
            k: v
            for k, v in os.environ.items()
            # A profile, key or database of another server must not leak in.
            if k not in INHERITED_NOT
        }
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.database}",
            PREFECT_SERVER_API_HOST=self.host,
            PREFECT_SERVER_API_PORT=str(self.port),
            PREFECT_API_AUTH_STRING=self.auth_string,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="true" if self.ui else "false",
            PREFECT_CLI_PROMPT="false",
            TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            DEEPSPEECH_REPO=str(REPO),
            DEEPSPEECH_WORKDIR=str(self.workdir),
        )
        if self.corpus is not None:
            env["DEEPSPEECH_CORPUS"] = str(self.corpus)
        return env

    @contextlib.contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """Prefect's client of this stack's server, whatever the caller's settings name."""
        from prefect.client.orchestration import get_client
        from prefect.settings import (
            PREFECT_API_AUTH_STRING,
            PREFECT_API_KEY,
            PREFECT_API_URL,
            temporary_settings,
        )

        settings = {PREFECT_API_URL: self.api_url, PREFECT_API_AUTH_STRING: self.auth_string}
        with (
            temporary_settings(updates=settings, restore_defaults={PREFECT_API_KEY}),
            get_client(sync_client=True) as client,
        ):
            yield client

    # --- pid files ---

    def _record(self, name: str) -> dict | None:
        try:
            record = json.loads(self.pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and "pid" in record else None

    def running(self, name: str) -> int | None:
        """The pid of service `name` if the process its pid file names is still that one."""
        record = self._record(name)
        started = _record_start(record) if record else None
        if record is None or started is None:
            return None
        return record["pid"] if _process(record["pid"], started) else None

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.log_file(name).parent.mkdir(parents=True, exist_ok=True)
        self.pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(name), "ab") as log:
            proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `down` stops all of it
            )
        record = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}
        self.pid_file(name).write_text(json.dumps({**record, "cmd": args}) + "\n")
        self._children[name] = proc
        return proc

    def _log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file(name).read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def healthy(self) -> bool:
        with contextlib.suppress(Exception), self.client() as client:
            return client.api_healthcheck() is None
        return False

    # --- steps ---

    def _prefect(self, *args: str, log: str) -> None:
        """Run one Prefect CLI command against this stack; its output goes to `log`."""
        self.log_file(log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(log), "ab") as out:
            code = subprocess.call(
                [self.prefect, *args],
                cwd=REPO,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if code != 0:
            raise StackError(
                f"`prefect {' '.join(args)}` failed ({code}); "
                f"{self.log_file(log)}:\n{self._log_tail(log)}"
            )

    def _wait_until_up(self, server: subprocess.Popen) -> None:
        """`prefect server status --wait` until the server answers, unless it exits first."""
        timeout = str(int(self.startup_timeout))
        with open(self.log_file("server-status"), "ab") as out:
            status = subprocess.Popen(
                [self.prefect, "server", "status", "--wait", "--timeout", timeout],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            while status.poll() is None and server.poll() is None:
                time.sleep(0.5)
        finally:
            if status.poll() is None:
                status.terminate()
                status.wait()
        if server.poll() is not None:
            raise StackError(
                f"the Prefect server exited ({server.returncode}); "
                f"{self.log_file('server')}:\n{self._log_tail('server')}"
            )
        if status.returncode != 0:
            raise StackError(
                f"the Prefect server did not answer within {timeout} s; "
                f"{self.log_file('server')}:\n{self._log_tail('server')}"
            )

    def start_server(self) -> None:
        if self.running("server"):
            if not self.healthy():
                raise StackError(f"the server in {self.home} runs but does not answer")
            print(f"server: already running at {self.api_url}")
            return
        # Prefect refuses a port in use itself ("Port ... is already in use"), in the log.
        args = [self.prefect, "server", "start", "--host", self.host, "--port", str(self.port)]
        proc = self._spawn(
            "server", args, {**self.env(), "PREFECT_SERVER_API_AUTH_STRING": self.auth_string}
        )
        self._wait_until_up(proc)
        print(f"server: {self.api_url} (database {self.database})")

    def deploy(self) -> None:
        if self.corpus is None:
            raise StackError("deploying needs the corpus (--corpus / DEEPSPEECH_CORPUS)")
        self._prefect(
            "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE), log="deploy"
        )
        if self.max_restarts is not None:
            from prefect.client.schemas.actions import DeploymentUpdate

            with self.client() as client:
                deployment = client.read_deployment_by_name(RECOVERY_DEPLOYMENT)
                params = {**deployment.parameters, "max_restarts": self.max_restarts}
                client.update_deployment(deployment.id, DeploymentUpdate(parameters=params))
        print("deployments: train-cv/train-cv, " + RECOVERY_DEPLOYMENT)

    def start_worker(self) -> None:
        """`prefect worker start`, which creates the process work pool when it is missing."""
        if self.running("worker"):
            print("worker: already running")
            return
        name = f"{POOL}-{socket.gethostname()}-{self.port}"
        args = [self.prefect, "worker", "start", "--pool", POOL, "--type", "process"]
        proc = self._spawn("worker", [*args, "--name", name], {**self.env(), **self.worker_env})
        # Up when it has reported to the server with its name.
        deadline = time.monotonic() + self.startup_timeout
        with self.client() as client:
            while not self._worker_registered(client, name):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise StackError(
                        "the worker did not start; "
                        f"{self.log_file('worker')}:\n{self._log_tail('worker')}"
                    )
                time.sleep(0.5)
        print(f"worker: {name} on pool {POOL} (process)")

    @staticmethod
    def _worker_registered(client: SyncPrefectClient, name: str) -> bool:
        from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

        try:  # the pool appears when the worker has created it
            return any(w.name == name for w in client.read_workers_for_work_pool(POOL))
        except ObjectNotFound:
            return False
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:
                return False
            raise

    def up(self) -> None:
        self.start_server()
        self.start_worker()  # before deploying: the worker creates the work pool
        self.deploy()

    def flow_runs(self) -> dict[str, int]:
        """The flow runs the worker is executing: flow run id -> its process's pid."""
        worker = self.running("worker")
        found: dict[str, int] = {}
        for pid in descendants(worker) if worker else []:
            with contextlib.suppress(psutil.Error):
                run_id = psutil.Process(pid).environ().get("PREFECT__FLOW_RUN_ID")
                if run_id:
                    found.setdefault(run_id, pid)
        return found

    def cancel_interrupted(self, run_ids: list[str]) -> None:
        """Mark runs whose processes `down` stopped Cancelled, with what they left running.

        Nobody else would: they would show Running forever and hold the deployment's
        concurrency slot. Cancelled, not Crashed: stopping the stack is deliberate, so
        the crash-recovery trigger leaves them alone; `prefect flow-run retry` resumes one.
        """
        from uuid import UUID

        from prefect.states import Cancelled

        from deployments.run_states import close_unfinished_children

        with self.client() as client:
            for run_id in run_ids:
                message = (
                    f"stopped by `stack.py down`; resume with `prefect flow-run retry {run_id}`"
                )
                close_unfinished_children(client, UUID(run_id), Cancelled(message=message))
                client.set_flow_run_state(UUID(run_id), Cancelled(message=message), force=True)
                print(f"flow run {run_id}: Cancelled (resume: prefect flow-run retry {run_id})")

    def down(self) -> list[str]:
        stopped = []
        interrupted = list(self.flow_runs())
        for name in reversed(SERVICES):
            record = self._record(name)
            if record is None:
                continue
            if name == "server" and interrupted and self.healthy():
                try:
                    self.cancel_interrupted(interrupted)
                except Exception as exc:  # the processes are stopped whatever the API says
                    print(f"warning: could not mark {interrupted} Cancelled: {exc}")
            started = _record_start(record)
            if started is not None and stop_process(record["pid"], started):
                stopped.append(name)
            if (proc := self._children.pop(name, None)) is not None:
                proc.wait(timeout=10)
            self.pid_file(name).unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, int | None]:
        return {name: self.running(name) for name in SERVICES}


def connect_instructions(stack: Stack) -> str:
    """How to reach the stack: the API needs its auth string, in the shell and the UI."""
    ui = (
        f"UI http://{stack.host}:{stack.port} (it asks for the auth string: the contents of "
        f"{stack.auth_file})"
        if stack.ui
        else "UI off"
    )
    return (
        f"up: {ui}; logs and pid files in {stack.home}\n"
        "Point the Prefect CLI (and deepspeech-flow) at this server with:\n"
        f"  export PREFECT_API_URL={stack.api_url}\n"
        f'  export PREFECT_API_AUTH_STRING="$(cat {stack.auth_file})"\n'
        f"  {stack.prefect} deployment run train-cv/train-cv"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("DEEPSPEECH_WORKDIR", "deepspeech-data")),
        help="The pipeline's work directory; the stack keeps its state in WORKDIR/prefect.",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=os.environ.get("DEEPSPEECH_CORPUS") or None,
        help="The Common Voice locale directory train-cv trains on by default.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--no-ui", dest="ui", action="store_false")
    parser.add_argument(
        "--max-restarts", type=int, default=None, help="Automatic restarts of a crashed run."
    )
    args = parser.parse_args(argv)
    stack = Stack(args.workdir, args.corpus, args.host, args.port, args.ui, args.max_restarts)
    try:
        if args.command == "up":
            if stack.corpus is not None and not stack.corpus.is_dir():
                print(f"warning: the corpus {stack.corpus} does not exist (yet)", file=sys.stderr)
            stack.up()
            print(connect_instructions(stack))
        elif args.command == "down":
            stopped = stack.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        else:
            for name, pid in stack.status().items():
                print(f"{name}: " + (f"running (pid {pid})" if pid else "stopped"))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:  # run as a script: `deployments.run_states` by its name
        sys.path.insert(0, str(REPO))
    sys.exit(main())
