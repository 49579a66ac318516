"""The deployment end to end: a real Prefect server, the deployments, a process worker.

`deployments/stack.py` (what `make serve` runs) starts a server on a free port with its
own SQLite database under a temporary work directory, deploys deployments/prefect.yaml
and starts a worker. The tests submit train-cv as `prefect deployment run` does, and
SIGKILL a run's process to watch the crash-recovery trigger restart it. Nothing here
touches the session's `prefect_harness` server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import LogSort

from deployments.recovery import parse_run_id
from deployments.stack import (
    POOL,
    Stack,
    command_line,
    connect_instructions,
    descendants,
    free_port,
)
from tests.helpers import newest_checkpoint_step, tiny_config

pytestmark = pytest.mark.slow

STAGE_TASKS = {"validate-corpus", "train-model", "evaluate-model", "export-model"}
STAGE_ARTIFACTS = {
    "corpus-validation",
    "feature-cache",
    "training-progress",
    "training-loss",
    "evaluation",
    "export",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_cv) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("deployment") / "work",
        corpus=tiny_cv,
        port=free_port(),
        ui=False,
        max_restarts=1,
        worker_env={"PREFECT_WORKER_QUERY_SECONDS": "1"},
    )
    started: list[tuple[int, str]] = []
    try:
        s.up()
        yield s
    finally:
        for name in ("server", "worker"):
            if pid := s.running(name):
                started += [(p, command_line(p)) for p in [pid, *descendants(pid)]]
        s.down()
        left = [(p, cmd) for p, cmd in started if command_line(p) == cmd and cmd]
        assert not left, f"still running after Stack.down(): {left}"
        assert s.status() == {"server": None, "worker": None}


def client(stack: Stack) -> SyncPrefectClient:
    """A client of the stack's server, whatever server Prefect's settings name."""
    return SyncPrefectClient(stack.api_url, auth_string=stack.auth_string)


def wait_for(what: str, get: Callable, ok: Callable, timeout: float, stack: Stack):
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}; last: {value!r}\n"
                f"worker log:\n{stack._log_tail('worker', 40)}"
            )
        time.sleep(0.5)


def wait_final(c, stack: Stack, run_id: UUID, timeout: float = 300):
    return wait_for(
        f"flow run {run_id} to finish",
        lambda: c.read_flow_run(run_id),
        lambda r: r.state is not None and r.state.is_final(),
        timeout,
        stack,
    )


def run_log(c, run_ids: list[UUID]) -> str:
    logs = c.read_logs(
        LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)), sort=LogSort.TIMESTAMP_ASC
    )
    return "\n".join(entry.message for entry in logs)


def wait_log(c, stack: Stack, run_id: UUID, pattern: str) -> re.Match:
    """The first match of `pattern` in the run's log (logs arrive shortly after the state)."""
    return wait_for(
        f"{pattern!r} in the log of {run_id}",
        lambda: re.search(pattern, run_log(c, [run_id])),
        lambda found: found is not None,
        30,
        stack,
    )


def sigkill_at_step(c, stack: Stack, run_id: UUID, workdir: Path, step: int) -> None:
    """SIGKILL the run's process group once training has checkpointed `step`."""

    def pid_once_checkpointed() -> int | None:
        if newest_checkpoint_step(workdir) >= step:
            return stack.flow_runs().get(str(run_id))
        return None

    pid = wait_for(
        f"run {run_id} to checkpoint step {step}",
        pid_once_checkpointed,
        lambda pid: pid is not None or c.read_flow_run(run_id).state.is_final(),
        240,
        stack,
    )
    if pid is None:
        state = c.read_flow_run(run_id).state
        raise AssertionError(
            f"run {run_id} ended {state!r} before it could be killed:\n" + run_log(c, [run_id])
        )
    os.killpg(pid, signal.SIGKILL)
    crashed = wait_for(
        f"run {run_id} to be Crashed",
        lambda: c.read_flow_run(run_id),
        lambda r: r.state.is_final(),
        120,
        stack,
    )
    assert crashed.state.is_crashed(), crashed.state


def train_cv_runs(c, tag: str):
    return c.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))


def test_the_servers_api_needs_the_stacks_auth_string(stack):
    """Issue 11 point 9: another local account cannot drive the server (it runs code)."""
    assert stack.auth_file.stat().st_mode & 0o777 == 0o600
    anonymous = urllib.request.Request(
        stack.api_url + "/work_pools/filter", data=b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError, match="HTTP Error 401") as refused:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 401
    with client(stack) as c:
        assert c.read_work_pool(POOL).name == POOL
    # The printed instructions, run as a user would paste them into a fresh shell.
    exports = [line for line in connect_instructions(stack).splitlines() if "export " in line]
    assert len(exports) == 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    shell = subprocess.run(
        ["bash", "-c", "\n".join([*exports, f"{stack.prefect} work-pool inspect {POOL}"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert POOL in shell.stdout


def test_deployment_runs_every_stage(stack, tiny_cv, tmp_path):
    """`prefect deployment run train-cv/train-cv -p config=...`: a worker runs all five stages.

    The config names no corpus: the deployment's `corpus` parameter survives the
    override of `config` (Prefect merges run parameters one level deep).
    """
    workdir = tmp_path / "work"
    config = tiny_config(workdir, tiny_cv).model_dump(mode="json")
    del config["workdir"]
    config["corpus"]["corpus"] = None
    out = subprocess.run(
        [
            stack.prefect,
            "deployment",
            "run",
            "train-cv/train-cv",
            "--param",
            f"workdir={workdir}",
            "--param",
            f"config={json.dumps(config)}",
        ],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = UUID(re.search(r"UUID: ([0-9a-f-]{36})", out.stdout).group(1))

    with client(stack) as c:
        deployment = c.read_deployment_by_name("train-cv/train-cv")
        assert deployment.global_concurrency_limit.limit == 1
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 0"]
        assert deployment.parameters["corpus"] == str(tiny_cv)
        assert deployment.parameters["workdir"] == str(stack.workdir)

        run = wait_final(c, stack, run_id)
        assert run.state.is_completed(), run_log(c, [run_id])
        subflows = c.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
            )
        )
        run_ids = [run_id, *(s.id for s in subflows)]
        task_runs = c.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
        )
        names = {t.name for t in task_runs}
        assert STAGE_TASKS <= names, names
        assert any(n.startswith("featurise-shard-") for n in names), names
        assert all(t.state.is_completed() for t in task_runs)
        artifacts = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
        )
        assert STAGE_ARTIFACTS <= {a.key for a in artifacts}
    assert any(workdir.rglob("saved_model.pb")), "no exported SavedModel"


def test_a_killed_run_is_restarted_resumes_and_restarts_are_capped(stack, tiny_cv, tmp_path):
    """SIGKILL a run's process: the trigger restarts it once (max_restarts=1), it resumes."""
    workdir = tmp_path / "work"
    short = tiny_config(workdir, tiny_cv, epochs=20, train_batch_size=4, checkpoint_steps=5)
    params = {"config": short.model_dump(mode="json"), "workdir": str(workdir), "target": "train"}
    with client(stack) as c:
        deployment = c.read_deployment_by_name("train-cv/train-cv")
        first = c.create_flow_run_from_deployment(deployment.id, parameters=params)
        sigkill_at_step(c, stack, first.id, workdir, 10)
        killed_at = newest_checkpoint_step(workdir)

        # The trigger runs deployments/recovery.py, which starts the same parameters again.
        (restart,) = wait_for(
            "the automatic restart",
            lambda: train_cv_runs(c, f"restart-of:{first.id}"),
            lambda runs: len(runs) == 1,
            120,
            stack,
        )
        assert "restart:1" in restart.tags
        assert restart.parameters == first.parameters
        restart = wait_final(c, stack, restart.id)
        assert restart.state.is_completed(), run_log(c, [restart.id])
        resumed = wait_log(c, stack, restart.id, r"resuming from \S+: step (\d+)")
        assert int(resumed.group(1)) == killed_at
        trained_to = newest_checkpoint_step(workdir)
        assert trained_to > killed_at
        killed = c.read_flow_run(first.id)
        assert killed.state.is_crashed()  # the crashed run stays as it was, for the record

        # A run that already is restart 1 of 1 crashes: it is not restarted again.
        longer = tiny_config(workdir, tiny_cv, epochs=60, train_batch_size=4, checkpoint_steps=5)
        last = c.create_flow_run_from_deployment(
            deployment.id,
            parameters={**params, "config": longer.model_dump(mode="json")},
            tags=["restart:1", f"restart-of:{first.id}"],
        )
        sigkill_at_step(c, stack, last.id, workdir, trained_to + 5)
        recovery = c.read_deployment_by_name("restart-crashed-train-cv/restart-crashed-train-cv")
        recoveries = wait_for(
            "both recovery runs to finish",
            lambda: [
                r
                for r in c.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[recovery.id]))
                )
                if parse_run_id(r.parameters["crashed_run"]) in (first.id, last.id)
            ],
            lambda runs: len(runs) == 2 and all(r.state.is_final() for r in runs),
            120,
            stack,
        )
        assert all(r.state.is_completed() for r in recoveries)
        capped = next(r for r in recoveries if str(last.id) in r.parameters["crashed_run"])
        wait_log(c, stack, capped.id, r"\(max_restarts=1\): not restarting")
        chain = {r.id for r in train_cv_runs(c, f"restart-of:{first.id}")}
        assert chain == {restart.id, last.id}  # no restart:2


def _run_until_checkpoint(c, stack: Stack, tiny_cv, workdir: Path, epochs: int) -> UUID:
    """Start a training run of the deployment; return its id once epoch 0 is checkpointed."""
    cfg = tiny_config(workdir, tiny_cv, epochs=epochs, train_batch_size=4, checkpoint_steps=1000)
    params = {"config": cfg.model_dump(mode="json"), "workdir": str(workdir), "target": "train"}
    deployment = c.read_deployment_by_name("train-cv/train-cv")
    run = c.create_flow_run_from_deployment(deployment.id, parameters=params)
    wait_for(
        f"run {run.id} to checkpoint its first epoch",
        lambda: newest_checkpoint_step(workdir) >= 8 and stack.flow_runs().get(str(run.id)),
        lambda pid: bool(pid) or c.read_flow_run(run.id).state.is_final(),
        240,
        stack,
    )
    assert not c.read_flow_run(run.id).state.is_final(), run_log(c, [run.id])
    return run.id


def test_a_cancelled_run_checkpoints_its_step_and_is_not_restarted(stack, tiny_cv, tmp_path):
    """`prefect flow-run cancel`: the worker's SIGTERM stops training at a step, saved."""
    workdir = tmp_path / "work"
    with client(stack) as c:
        run_id = _run_until_checkpoint(c, stack, tiny_cv, workdir, epochs=40)
        out = subprocess.run(
            [stack.prefect, "flow-run", "cancel", str(run_id)],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        run = wait_final(c, stack, run_id, timeout=120)
        assert run.state.is_cancelled(), (run.state, run_log(c, [run_id]))
        stopped = wait_log(c, stack, run_id, r"SIGTERM: stopped training at step (\d+)")
        assert newest_checkpoint_step(workdir) == int(stopped.group(1)) >= 8
        time.sleep(10)  # a restart would have been triggered by now
        assert train_cv_runs(c, f"restart-of:{run_id}") == []


def test_sigterm_from_outside_checkpoints_and_the_restart_resumes_there(stack, tiny_cv, tmp_path):
    """`docker stop`/preemption: the run ends Crashed after its checkpoint; the restart resumes."""
    workdir = tmp_path / "work"
    with client(stack) as c:
        run_id = _run_until_checkpoint(c, stack, tiny_cv, workdir, epochs=20)
        os.kill(stack.flow_runs()[str(run_id)], signal.SIGTERM)
        run = wait_final(c, stack, run_id, timeout=120)
        assert run.state.is_crashed(), (run.state, run_log(c, [run_id]))
        stopped = wait_log(c, stack, run_id, r"SIGTERM: stopped training at step (\d+)")
        step = int(stopped.group(1))
        assert newest_checkpoint_step(workdir) == step

        (restart,) = wait_for(
            "the automatic restart",
            lambda: train_cv_runs(c, f"restart-of:{run_id}"),
            lambda runs: len(runs) == 1,
            120,
            stack,
        )
        restart = wait_final(c, stack, restart.id)
        assert restart.state.is_completed(), run_log(c, [restart.id])
        resumed = wait_log(c, stack, restart.id, r"resuming from \S+: step (\d+)")
        assert int(resumed.group(1)) == step
