"""Shared fixtures: a tiny spoken corpus, a tiny trained model, one Prefect harness."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from deepspeech_flow.settings import apply_defaults

apply_defaults()

# Test modules import helpers from tests.helpers (ruff bans importing tests.conftest);
# the fixtures below use these.
from tests.helpers import tiny_config  # noqa: E402

# `make test` runs the suite on two pytest-xdist workers (`--dist loadfile`): each module
# goes to one worker whole, so a module-scoped fixture is built once. The modules that
# use the costly `speaking_model` (about a minute of training) go to one worker together,
# so it is trained once per session as before; and the modules that take minutes start
# first, so neither worker is left with one of them at the end.
SPEAKING_MODEL_GROUP = "speaking_model"
LONGEST_FIRST = (
    "tests/test_deployment.py",
    SPEAKING_MODEL_GROUP,
    "tests/test_stopping.py",
    "tests/test_scorer_client.py",
    "tests/test_flow.py",
)
TESTS = Path(__file__).resolve().parent


def pytest_xdist_make_scheduler(config, log):
    """The scheduler for `--dist loadfile`: whole modules, grouped and ordered as above.

    (xdist's `loadgroup` marks do not reach its scheduler under pytest 9, whose node ids
    ignore the suffix xdist adds, so the grouping is done here.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    sharing = {
        f"tests/{path.name}"
        for path in TESTS.glob("test_*.py")
        if "speaking_model" in path.read_text(encoding="utf-8")
    }

    class ModuleGroups(LoadFileScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SPEAKING_MODEL_GROUP if module in sharing else module

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:
                for scope in reversed(LONGEST_FIRST):
                    if scope in self.workqueue:
                        self.workqueue.move_to_end(scope, last=False)
                self.ordered = True
            super()._assign_work_unit(node)

    return ModuleGroups(config, log)


@pytest.fixture(scope="session")
def tiny_cv(tmp_path_factory) -> Path:
    """A 40-clip Common Voice-style release spoken by espeak-ng (read-only by convention)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip(
            "espeak-ng and sox are needed to make the test corpus (make setup installs them)"
        )
    from deepspeech_core.data.demo_corpus import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("cv"), count=40, seed=3)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_cv):
    """Validate, featurise and train a tiny model once for the evaluation/export tests."""
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.train.loop import train

    cfg = tiny_config(tmp_path_factory.mktemp("work"), tiny_cv)
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
    features = build_feature_cache(corpus, cfg.features, cfg.workdir)
    model = train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
    return cfg, corpus, features, model


@pytest.fixture(scope="session")
def speaking_model(tmp_path_factory):
    """A 120-clip corpus and a model that has learnt to say something (greedy WER ~0.8).

    The tiny `trained` model mostly outputs blanks; tests that compare transcripts or
    show that a language model helps need one whose output is partly right.
    """
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to make the test corpus (make setup)")
    from deepspeech_core.data.demo_corpus import make_demo_corpus
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.train.loop import train

    cv = make_demo_corpus(tmp_path_factory.mktemp("cv120"), count=120, seed=3)
    cfg = tiny_config(
        tmp_path_factory.mktemp("speaking"), cv, n_hidden=128, epochs=25, learning_rate=0.002
    )
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
    features = build_feature_cache(corpus, cfg.features, cfg.workdir)
    model = train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
    return cfg, corpus, features, model


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for the whole session (startup is slow)."""
    from prefect.testing.utilities import prefect_test_harness

    timeout = int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
    with prefect_test_harness(server_startup_timeout=timeout):
        yield
