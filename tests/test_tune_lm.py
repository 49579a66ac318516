"""tune-lm: lm_optimizer.py's search as a Prefect flow; its pair reaches evaluate and build-lm."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from deepspeech_core.evaluate import lm_tuning
from deepspeech_core.evaluate.arpa_lm import write_arpa
from deepspeech_core.evaluate.kenlm_tools import KenLMToolError, find_tool
from deepspeech_core.evaluate.scorer_package import read_scorer
from deepspeech_flow.cli import app
from flows.tune_lm import tune_lm_flow  # imported (Prefect logging set up) outside CliRunner

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def test_tune_lm_finds_writes_and_hands_on_the_best_pair(speaking_model, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    source, corpus, _, _ = speaking_model
    train_text = pd.read_csv(corpus.splits["train"], keep_default_na=False).transcript
    arpa = write_arpa(train_text, tmp_path / "train.arpa", order=3)
    workdir = tmp_path / "work"
    evaluation = source.evaluation.model_copy(update={"beam_width": 32, "scorer_path": arpa})
    training = source.training.model_copy(update={"checkpoint_dir": source.checkpoint_dir})
    cfg = source.model_copy(
        update={"workdir": workdir, "evaluation": evaluation, "training": training}
    )

    result = tune_lm_flow(config=cfg, n_trials=8, lm_alpha_max=3.0, lm_beta_max=3.0)
    assert len(result.trials) == 8
    assert result.split == "dev"
    assert result.clips > 0
    assert result.wer == min(t.wer for t in result.trials)
    assert {(t.lm_alpha, t.lm_beta) for t in result.trials} >= {(result.lm_alpha, result.lm_beta)}
    assert all(0 <= t.lm_alpha <= 3 and 0 <= t.lm_beta <= 3 for t in result.trials)
    assert len({t.wer for t in result.trials}) > 1, "the weights change the decoding"
    saved = json.loads((workdir / "reports" / "lm_tuning.json").read_text())
    assert (saved["lm_alpha"], saved["lm_beta"]) == (result.lm_alpha, result.lm_beta)

    # The next evaluation with the same scorer (and no --lm_alpha/--lm_beta) uses them...
    from prefect import flow

    from tasks.evaluate import evaluate_model_task

    features = lm_tuning_features(workdir)
    evaluated = flow(evaluate_model_task.fn)(cfg.resolved(), features, source.checkpoint_dir)
    report = json.loads(evaluated.report_path.read_text())
    assert (report["lm_alpha"], report["lm_beta"]) == (result.lm_alpha, result.lm_beta)
    # ...given flags win, and another scorer is not affected.
    given = cfg.evaluation.model_copy(update={"lm_alpha": 0.1})
    assert lm_tuning.with_tuned_weights(given, workdir).lm_alpha == 0.1
    other = tmp_path / "other.arpa"
    write_arpa(["zero one"], other, order=1)
    other_cfg = cfg.evaluation.model_copy(update={"scorer_path": other})
    assert lm_tuning.with_tuned_weights(other_cfg, workdir).lm_alpha is None

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["lm-tuning"])),
        )
    assert any(f"{result.lm_alpha:.4f}" in str(a.data) for a in found)

    # build-lm --scorer --workdir writes the tuned pair into the package header.
    try:
        find_tool("build_binary")
    except KenLMToolError as exc:
        pytest.skip(f"the rest needs KenLM's build_binary: {exc}")
    scorer = tmp_path / "tuned.scorer"
    out = CliRunner().invoke(
        app,
        ["build-lm", str(corpus.splits["train"]), "--scorer", str(scorer)]
        + ["--workdir", str(workdir)],
    )
    assert out.exit_code == 0, out.output + repr(out.exception)
    package = read_scorer(scorer)
    assert (package.alpha, package.beta) == pytest.approx((result.lm_alpha, result.lm_beta))
    assert "tune-lm" in out.output


def lm_tuning_features(workdir):
    from deepspeech_core.manifests import FeatureCacheManifest

    (manifest,) = (workdir / "features").glob("*/manifest.json")
    return FeatureCacheManifest.model_validate_json(manifest.read_text())
