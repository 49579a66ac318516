"""How a run stopped by a signal ends in Prefect.

A stop is deliberate (Ctrl-C; a cancellation from the UI or `prefect flow-run cancel`,
which Prefect's worker delivers as SIGTERM to a run it has marked Cancelling): the run
ends Cancelled and the crash-recovery automation leaves it alone. A SIGTERM nobody
asked Prefect for (`docker stop`, a spot-instance preemption, a node drain) hands the
signal on to Prefect once the checkpoint is written, as if it had arrived then: the
run ends Crashed, the process exits by SIGTERM, and deployments/recovery.py restarts
the run, which resumes from that checkpoint.
"""

from __future__ import annotations

import contextlib
import signal

from prefect.client.orchestration import get_client
from prefect.exceptions import TerminationSignal
from prefect.logging.handlers import APILogWorker
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from deepspeech_core.stopping import StopRequested


def _being_cancelled() -> bool:
    """Whether this flow run was asked to cancel (its state is Cancelling)."""
    run_id = flow_run.get_id()
    if run_id is None:
        return False
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        return state is not None and state.is_cancelling()
    return False


def stopped_run_state(stop: StopRequested) -> State:
    """Cancelled for a deliberate stop; raises TerminationSignal (-> Crashed) otherwise."""
    print(stop.message)
    if stop.signum == signal.SIGTERM and not _being_cancelled():
        # The process ends by the signal: send the run's logs (the step) to the UI first.
        APILogWorker.drain_all(timeout=5)
        raise TerminationSignal(signal=signal.SIGTERM) from stop
    return Cancelled(message=stop.message)
