"""Closing the books of a flow run whose process is gone: one helper for both callers.

A flow run's process reports its own task runs and subflow runs. When that process is
killed (a crash) or stopped with the stack (`make stop`), whatever it was running stays
Pending/Running on the server forever, and a Running flow run holds the deployment's
concurrency slot. `recovery.py` marks a crashed run's leftovers Crashed; `stack.py down`
marks the runs it stopped Cancelled (deliberate, so the crash trigger leaves them alone).

Imports only Prefect (recovery.py's flow runs take seconds, not a TensorFlow import).
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import State, StateType

UNFINISHED = [StateType.PENDING, StateType.RUNNING]


def close_unfinished_children(client: SyncPrefectClient, run_id: UUID, state: State) -> int:
    """Set `state` on the flow run's task and subflow runs still Pending/Running; how many.

    Forced: the server would refuse most transitions out of Running without the process
    that owns the run.
    """
    tasks = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
        task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))
        ),
    )
    subflows = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED)),
        )
    )
    for task_run in tasks:
        client.set_task_run_state(task_run.id, state.model_copy(), force=True)
    for subflow in subflows:
        client.set_flow_run_state(subflow.id, state.model_copy(), force=True)
    return len(tasks) + len(subflows)
