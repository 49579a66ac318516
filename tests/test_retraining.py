"""Scheduled retraining: a grown corpus, warm start, champion/challenger promotion."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from deepspeech_core.config import ExportConfig
from deepspeech_core.data.demo_corpus import make_demo_corpus
from deepspeech_core.export import store
from deepspeech_core.export.export_model import export_model
from deepspeech_core.export.promotion import decide
from deepspeech_core.workdir.locking import LockedError, workdir_lock
from flows.train_cv import train_cv
from tests.helpers import tiny_config

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def grow(corpus: Path, extra: Path) -> int:
    """Append `extra`'s training clips to `corpus` (as new Common Voice clips arrive)."""
    rows = pd.read_csv(extra / "train.tsv", sep="\t", dtype=str, keep_default_na=False)
    for name in rows.path:
        shutil.copy(extra / "clips" / name, corpus / "clips" / f"new_{name}")
    rows["path"] = "new_" + rows.path
    train = pd.read_csv(corpus / "train.tsv", sep="\t", dtype=str, keep_default_na=False)
    pd.concat([train, rows]).to_csv(corpus / "train.tsv", sep="\t", index=False)
    return len(rows)


def config(workdir: Path, corpus: Path, n_hidden: int, **training):
    cfg = tiny_config(workdir, corpus, n_hidden=n_hidden, epochs=1, **training)
    return cfg.model_copy(update={"export": ExportConfig(export_tflite=False)})


def test_retraining_warm_starts_and_promotes_only_a_model_that_is_no_worse(
    speaking_model, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    source_cfg, _, _, _ = speaking_model
    cv = tmp_path / "cv"
    shutil.copytree(source_cfg.corpus.corpus, cv)  # never write next to the fixture corpus
    workdir = tmp_path / "work"
    champion = export_model(
        source_cfg.checkpoint_dir, workdir / "export", ExportConfig(export_tflite=False)
    )

    # 1. retrain_from=current (the default): the new training starts from the model in use.
    #    A learning rate of ~0 keeps its weights, so its WER equals the champion's.
    warm = train_cv(config=config(workdir, cv, 128, learning_rate=1e-9))
    assert warm.training.initialized_from == champion.export_dir / "checkpoint"
    assert warm.evaluation.wer < 1.0, "a warm start, not a 1-epoch model from scratch"
    assert warm.export.promoted
    assert warm.export.version == "v2"
    assert store.current(workdir / "export").name == "v2"

    # 2. the corpus grows; a run from scratch imports/featurises only the new clips and
    #    trains a much worse model (1 epoch): it is exported but not promoted.
    added = grow(cv, make_demo_corpus(tmp_path / "extra", count=20, seed=11))
    scratch = train_cv(config=config(workdir, cv, 32), retrain_from="scratch")
    assert scratch.corpus.imported == added
    assert scratch.features.computed == added
    assert scratch.training.initialized_from is None
    assert scratch.training.checkpoint_dir != warm.training.checkpoint_dir, "a new training"
    assert not scratch.export.promoted
    assert scratch.export.version == "v3"
    assert "worse than the current model's" in scratch.export.promotion_reason
    assert store.current(workdir / "export").name == "v2"
    assert (workdir / "export" / "v3" / "saved_model").is_dir(), "kept beside it"

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["promotion"])),
        )
    texts = [str(a.data) for a in found]
    assert any("v3: kept, **not promoted**" in t and "current (v2)" in t for t in texts)
    assert any("v2: promoted" in t for t in texts)


def test_decision_rules():
    from deepspeech_core.manifests import EvaluationManifest

    def ev(wer: float, samples: int = 10) -> EvaluationManifest:
        path = Path("x")
        return EvaluationManifest(
            wer=wer,
            cer=wer,
            loss=1.0,
            samples=samples,
            report_path=path,
            test_output_path=path,
            checkpoint=path,
        )

    assert decide(ev(0.5), None, has_current=False).promote
    assert not decide(ev(0.5), None).promote  # a current model it could not be compared with
    assert not decide(None, None).promote
    assert decide(ev(0.5), ev(0.5)).promote  # no worse
    assert not decide(ev(0.51), ev(0.5)).promote
    assert not decide(ev(0.1, samples=5), ev(0.5)).promote  # not the same test set
    assert not decide(None, ev(0.5)).promote


def test_one_run_per_work_directory(tmp_path):
    with workdir_lock(tmp_path):
        with pytest.raises(LockedError, match="another train-cv run"):
            with workdir_lock(tmp_path):
                pass
