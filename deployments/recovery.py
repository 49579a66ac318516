"""Crash recovery for the train-cv deployment: a crashed run is started again, a few times.

Prefect retries a flow run that *fails* (an exception) when asked to, but a run whose
process vanished (SIGKILL, OOM killer, a lost node) ends Crashed and stays there. The
`restart-crashed-train-cv` deployment (deployments/prefect.yaml) has a deployment
trigger on `prefect.flow-run.Crashed` events of `train-cv` runs; each one runs this
flow, which submits a new run of the same deployment with the crashed run's exact
parameters and job variables. Training resumes from the newest checkpoint in the work
directory, and the earlier stages come back from their fingerprints.

The number of automatic restarts is carried in the runs' tags: a restart is tagged
`restart:<n>` and `restart-of:<id of the first run>`, so a chain of crashes stops after
`max_restarts` restarts, whatever kills it (a run that crashes before it even starts
counts too). The manual path is always open: `prefect flow-run retry <id>`.

This module imports only Prefect: a restart decision takes seconds, not a TensorFlow
import.
"""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import flow_run
from prefect.states import Crashed

from deployments.run_states import close_unfinished_children

RESTART_TAG = "restart:"
ORIGIN_TAG = "restart-of:"
# Tags the server adds by itself, which a restart must not pretend to have.
NOT_COPIED = ("auto-scheduled",)


def restarts_so_far(tags: list[str]) -> int:
    """How many automatic restarts preceded the run carrying `tags` (0 for a first run)."""
    counts = [int(t[len(RESTART_TAG) :]) for t in tags if t.startswith(RESTART_TAG)]
    return max(counts, default=0)


def first_run_of(tags: list[str], run_id: UUID) -> str:
    """The id of the run that started the chain `run_id` belongs to."""
    origin = [t[len(ORIGIN_TAG) :] for t in tags if t.startswith(ORIGIN_TAG)]
    return origin[0] if origin else str(run_id)


def restart_tags(tags: list[str], run_id: UUID) -> list[str]:
    """The crashed run's own tags, plus this restart's number and the chain's first run."""
    kept = [t for t in tags if not t.startswith((RESTART_TAG, ORIGIN_TAG)) and t not in NOT_COPIED]
    return [
        *kept,
        f"{RESTART_TAG}{restarts_so_far(tags) + 1}",
        f"{ORIGIN_TAG}{first_run_of(tags, run_id)}",
    ]


def parse_run_id(crashed_run: str) -> UUID:
    """A flow run id, given bare or as the event's resource id `prefect.flow-run.<id>`."""
    return UUID(crashed_run.rsplit(".", 1)[-1])


def crash_leftovers(client: SyncPrefectClient, run: FlowRun) -> int:
    """Mark the crashed run's task and subflow runs that still show as running Crashed.

    The killed process could not report them, so the UI would show them running forever.
    """
    message = f"its flow run {run.name} ({run.id}) crashed"
    return close_unfinished_children(client, run.id, Crashed(message=message))


def _run_name() -> str:
    return "restart-" + str(parse_run_id(flow_run.parameters["crashed_run"]))[:8]


@flow(
    name="restart-crashed-train-cv",
    flow_run_name=_run_name,
    log_prints=True,
    retries=2,
    retry_delay_seconds=10,
)
def restart_crashed_run(crashed_run: str, max_restarts: int = 3) -> str | None:
    """Start the crashed run's deployment again with its parameters; None when capped.

    `crashed_run` is the flow run id (the trigger passes `{{ event.resource.id }}`).
    Returns the id of the new run.
    """
    log = get_run_logger()
    run_id = parse_run_id(crashed_run)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if run.state is None or not run.state.is_crashed():
            # Retried by hand in the meantime, or not a crash at all.
            log.info("flow run %s (%s) is %s now: nothing to do", run.name, run_id, run.state_name)
            return None
        if run.deployment_id is None:
            log.warning("flow run %s (%s) has no deployment: not restarting it", run.name, run_id)
            return None
        if tidied := crash_leftovers(client, run):
            log.info("marked %d task/subflow run(s) of %s Crashed", tidied, run.name)
        done = restarts_so_far(run.tags)
        if done >= max_restarts:
            log.warning(
                "flow run %s (%s) crashed after %d automatic restart(s) (max_restarts=%d): "
                "not restarting it; continue it by hand with `prefect flow-run retry %s`",
                run.name,
                run_id,
                done,
                max_restarts,
                run_id,
            )
            return None
        new = client.create_flow_run_from_deployment(
            run.deployment_id,
            parameters=run.parameters,
            job_variables=run.job_variables or None,
            tags=restart_tags(run.tags, run_id),
            # A retry of this recovery run must not start a second restart of one crash.
            idempotency_key=f"restart-of-{run_id}-attempt-{run.run_count}",
        )
    log.info(
        "flow run %s (%s) crashed (%s); started %s (%s), automatic restart %d of at most %d",
        run.name,
        run_id,
        run.state.message or "no message",
        new.name,
        new.id,
        done + 1,
        max_restarts,
    )
    return str(new.id)
