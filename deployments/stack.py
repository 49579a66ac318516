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
processes `up` started: each one was started as the leader of its own process group and
is recorded with its start time, so a pid the system has since given to another program
is left alone. The worker's flow runs (their own process groups) are stopped with it and
marked Cancelled.

Standard library only, so that `down` works whatever state the venv is in; the Prefect
CLI does the Prefect work. Linux (/proc).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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


# --- processes -------------------------------------------------------------------------


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (children first level first)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        below = [c for p in frontier for c in children.get(p, [])]
        found += below
        frontier = below
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _alive(pid: int, ticks: int) -> bool:
    return _start_ticks(pid) == ticks


def _signal_tree(pids: list[tuple[int, int]], sig: int) -> None:
    """Signal each (pid, start) still alive: its whole group when it leads one."""
    for pid, ticks in pids:
        if not _alive(pid, ticks):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)


def stop_process(pid: int, ticks: int, grace: float = 30.0) -> bool:
    """SIGTERM `pid`'s group and every descendant's, SIGKILL what outlives `grace`."""
    if not _alive(pid, ticks):
        return False
    tree = [(pid, ticks)] + [(p, t) for p in descendants(pid) if (t := _start_ticks(p))]
    _signal_tree(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p, t) for p, t in tree):
        time.sleep(0.2)
    _signal_tree(tree, signal.SIGKILL)
    return True


# --- the stack -------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


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

    # --- pid files ---

    def running(self, name: str) -> int | None:
        """The pid of service `name` if the process its pid file names is still that one."""
        try:
            record = json.loads(self.pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        return record["pid"] if _alive(record["pid"], record["start"]) else None

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
        ticks = _start_ticks(proc.pid)
        record = {"pid": proc.pid, "start": ticks, "cmd": args}
        self.pid_file(name).write_text(json.dumps(record) + "\n")
        self._children[name] = proc
        return proc

    def _log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file(name).read_text().splitlines()[-lines:])
        except OSError:
            return ""

    # --- HTTP ---

    def request(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        token = base64.b64encode(self.auth_string.encode()).decode()
        req = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/health") is True
        except (OSError, ValueError):
            return False

    # --- steps ---

    def _prefect(self, *args: str, log: str) -> None:
        """Run one Prefect CLI command against this stack; its output goes to `log`."""
        env = self.env()
        with open(self.log_file(log), "ab") as out:
            code = subprocess.call(
                [self.prefect, *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if code != 0:
            raise StackError(
                f"`prefect {' '.join(args)}` failed ({code}); "
                f"{self.log_file(log)}:\n{self._log_tail(log)}"
            )

    def start_server(self) -> None:
        if self.running("server"):
            if not self.healthy():
                raise StackError(f"the server in {self.home} runs but does not answer")
            print(f"server: already running at {self.api_url}")
            return
        if _port_in_use(self.host, self.port):
            raise StackError(f"{self.host}:{self.port} is taken by another program")
        args = [self.prefect, "server", "start", "--host", self.host, "--port", str(self.port)]
        proc = self._spawn(
            "server", args, {**self.env(), "PREFECT_SERVER_API_AUTH_STRING": self.auth_string}
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self.healthy():
            if proc.poll() is not None:
                raise StackError(
                    f"the Prefect server exited ({proc.returncode}); "
                    f"{self.log_file('server')}:\n{self._log_tail('server')}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"the Prefect server did not answer within {self.startup_timeout:.0f} s; "
                    f"{self.log_file('server')}:\n{self._log_tail('server')}"
                )
            time.sleep(0.5)
        print(f"server: {self.api_url} (database {self.database})")

    def create_pool(self) -> None:
        try:
            self.request("GET", f"/work_pools/{POOL}")
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        self._prefect("work-pool", "create", POOL, "--type", "process", log="deploy")
        print(f"work pool: {POOL} (process)")

    def deploy(self) -> None:
        if self.corpus is None:
            raise StackError("deploying needs the corpus (--corpus / DEEPSPEECH_CORPUS)")
        self._prefect(
            "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE), log="deploy"
        )
        if self.max_restarts is not None:
            deployment = self.request("GET", f"/deployments/name/{RECOVERY_DEPLOYMENT}")
            params = {**deployment["parameters"], "max_restarts": self.max_restarts}
            self.request("PATCH", f"/deployments/{deployment['id']}", {"parameters": params})
        print("deployments: train-cv/train-cv, " + RECOVERY_DEPLOYMENT)

    def start_worker(self) -> None:
        if self.running("worker"):
            print("worker: already running")
            return
        name = f"{POOL}-{socket.gethostname()}-{self.port}"
        args = [
            self.prefect,
            "worker",
            "start",
            "--pool",
            POOL,
            "--type",
            "process",
            "--name",
            name,
        ]
        proc = self._spawn("worker", args, {**self.env(), **self.worker_env})
        # Up when it has reported to the server with its name.
        deadline = time.monotonic() + self.startup_timeout
        while True:
            workers = self.request("POST", f"/work_pools/{POOL}/workers/filter", {})
            if any(w["name"] == name for w in workers):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StackError(
                    "the worker did not start; "
                    f"{self.log_file('worker')}:\n{self._log_tail('worker')}"
                )
            time.sleep(0.5)
        print(f"worker: {name} on pool {POOL}")

    def up(self) -> None:
        self.start_server()
        self.create_pool()
        self.deploy()
        self.start_worker()

    def flow_runs(self) -> dict[str, int]:
        """The flow runs the worker is executing: flow run id -> its process's pid."""
        worker = self.running("worker")
        found = {}
        for pid in descendants(worker) if worker else []:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for entry in environ:
                if entry.startswith(b"PREFECT__FLOW_RUN_ID="):
                    found.setdefault(entry.split(b"=", 1)[1].decode(), pid)
        return found

    def _set_state(self, kind: str, run_id: str, state: str, message: str) -> None:
        body = {"state": {"type": state, "message": message}, "force": True}
        self.request("POST", f"/{kind}/{run_id}/set_state", body)

    def cancel_interrupted(self, run_ids: list[str]) -> None:
        """Mark runs whose processes `down` stopped Cancelled, with what they left running.

        Nobody else would: they would show Running forever and hold the deployment's
        concurrency slot. Cancelled, not Crashed: stopping the stack is deliberate, so
        the crash-recovery trigger leaves them alone; `prefect flow-run retry` resumes one.
        """
        active = {"any_": ["PENDING", "RUNNING"]}
        for run_id in run_ids:
            message = f"stopped by `stack.py down`; resume with `prefect flow-run retry {run_id}`"
            running = {"state": {"type": active}}
            tasks = self.request(
                "POST",
                "/task_runs/filter",
                {"flow_runs": {"id": {"any_": [run_id]}}, "task_runs": running},
            )
            subflows = self.request(
                "POST",
                "/flow_runs/filter",
                {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}, **running}},
            )
            for task_run in tasks:
                self._set_state("task_runs", task_run["id"], "CANCELLED", message)
            for subflow in subflows:
                self._set_state("flow_runs", subflow["id"], "CANCELLED", message)
            self._set_state("flow_runs", run_id, "CANCELLED", message)
            print(f"flow run {run_id}: Cancelled (resume: prefect flow-run retry {run_id})")

    def down(self) -> list[str]:
        stopped = []
        interrupted = list(self.flow_runs())
        for name in reversed(SERVICES):
            try:
                record = json.loads(self.pid_file(name).read_text())
            except (OSError, ValueError):
                continue
            if name == "server" and interrupted and self.healthy():
                with contextlib.suppress(OSError, ValueError):
                    self.cancel_interrupted(interrupted)
            if stop_process(record["pid"], record["start"]):
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
    sys.exit(main())
