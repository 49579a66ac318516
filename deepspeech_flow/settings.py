"""Process-wide defaults set before Prefect or TensorFlow is imported.

Prefect's ephemeral server can take longer to start on a small machine than its
default timeout allows (docs/PERFORMANCE.md, "Prefect server start"), analytics would
try the network, and TensorFlow's C++ info logs drown the pipeline's own. Users' own
settings always win (setdefault).
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
