"""Which failed task runs Prefect retries: only those a new attempt could fix.

A bad corpus, a bad setting, a missing GPU under --require_gpu or an incompatible
checkpoint fails every attempt the same way; retrying it only repeats the traceback.
A crash, a killed worker or an out-of-memory error may pass on the next attempt, which
resumes from the newest checkpoint, so those are retried.
"""

from __future__ import annotations

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from deepspeech_core.error_kinds import retry_can_fix


def failed_exception(state: State) -> BaseException | None:
    """The exception a failed state carries, if it can be read back."""
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result: treat it as unexpected
        return None
    return result if isinstance(result, BaseException) else None


def retry_unless_expected(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect's retry_condition_fn: retry everything but expected errors."""
    return retry_can_fix(failed_exception(state))
