"""End to end: the CLI runs the train-cv flow on a Prefect server; every output exists."""

import json

import pandas as pd
import pytest
import soundfile
from typer.testing import CliRunner

from deepspeech_flow.cli import app
from flows.train_cv import train_cv  # imported (and Prefect logging set up) outside CliRunner
from tests.helpers import newest_checkpoint_step, sigkill_when, tiny_config

pytestmark = pytest.mark.usefixtures("prefect_harness")

TINY = [
    "--n_hidden",
    "32",
    "--epochs",
    "2",
    "--train-batch-size",
    "8",
    "--dev_batch_size",
    "8",
    "--test-batch-size",
    "8",
    "--checkpoint_steps",
    "3",
    "--seed",
    "7",
    "--beam_width",
    "16",
]


@pytest.fixture(scope="module")
def full_run(tiny_cv, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("flow") / "deepspeech-data"
    result = CliRunner().invoke(
        app, ["run", "--corpus", str(tiny_cv), "--workdir", str(workdir), *TINY]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    return workdir, result.output


def test_every_output_exists_and_is_well_formed(full_run):
    workdir, output = full_run
    assert "test WER" in output
    assert "exported:" in output
    corpus = workdir / "corpus"
    for split in ("train", "dev", "test"):
        df = pd.read_csv(corpus / f"{split}.csv", keep_default_na=False)
        assert list(df.columns[:3]) == ["wav_filename", "wav_filesize", "transcript"]
        assert len(df)
        info = soundfile.info(df.wav_filename.iloc[0])
        assert (info.samplerate, info.channels) == (16000, 1)
    rejected = pd.read_csv(corpus / "rejected.csv")
    assert list(rejected.columns) == ["source", "line", "wav_filename", "reason", "detail"]
    assert any((workdir / "features").rglob("*.npy"))
    (training,) = (workdir / "checkpoints").iterdir()  # one training, named by its data
    assert (training / "model.json").is_file()
    assert (training / "train" / "checkpoint").is_file()
    assert (workdir / "reports" / "loss.png").read_bytes().startswith(b"\x89PNG")
    evaluation = json.loads((workdir / "reports" / "evaluation.json").read_text())
    assert {"wer", "cer", "loss", "samples"} <= set(evaluation)
    assert evaluation["samples"] > 0
    samples = json.loads((workdir / "reports" / "test_output.json").read_text())
    assert len(samples) == evaluation["samples"]
    assert {"wav_filename", "src", "res", "loss", "cer", "wer"} <= set(samples[0])
    export = workdir / "export" / "current"
    assert export.resolve().name == "v1"
    assert (export / "saved_model" / "saved_model.pb").is_file()
    assert json.loads((export / "metadata.json").read_text())["n_hidden"] == 32
    assert (export / "alphabet.txt").is_file()
    assert (export / "model.tflite").is_file()


def test_rerun_reuses_every_stage(full_run, tiny_cv):

    workdir, _ = full_run
    cfg = tiny_config(workdir, tiny_cv)
    result = train_cv(config=cfg)
    assert result.corpus.reused
    assert result.features.computed == 0
    assert result.training.resumed_from_step == result.training.steps  # nothing left to train
    assert set(result.stage_seconds) == {"validate", "features", "train", "evaluate", "export"}
    assert result.export is None, "the current export already holds this model"
    assert [p.name for p in (workdir / "export").glob("v*")] == ["v1"]


def test_evaluate_new_clips_with_a_trained_model(full_run, tmp_path):
    from deepspeech_core.data.demo_corpus import make_demo_corpus
    from deepspeech_core.data.sentences import normalize_sentence

    workdir, _ = full_run
    fresh = make_demo_corpus(tmp_path / "fresh", count=5, seed=99)
    tsv = pd.read_csv(fresh / "validated.tsv", sep="\t", keep_default_na=False)
    csv_path = tmp_path / "new_test.csv"
    pd.DataFrame(
        {
            "wav_filename": ["fresh/en/clips/" + p for p in tsv.path],
            "wav_filesize": 0,
            "transcript": [normalize_sentence(s) for s in tsv.sentence],
        }
    ).to_csv(csv_path, index=False)
    other = tmp_path / "eval-work"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--test_files",
            str(csv_path),
            "--checkpoint_dir",
            str(next((workdir / "checkpoints").iterdir())),
            "--workdir",
            str(other),
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((other / "reports" / "evaluation.json").read_text())
    assert report["samples"] == 5
    assert len(json.loads((other / "reports" / "test_output.json").read_text())) == 5
    assert not (other / "checkpoints").exists(), "evaluate must not train a new model"


def test_evaluate_without_a_model_says_what_to_do(tmp_path, full_run):
    workdir, _ = full_run
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--test_files",
            str(workdir / "corpus" / "test.csv"),
            "--alphabet_config_path",
            str(workdir / "corpus" / "alphabet.txt"),
            "--workdir",
            str(tmp_path / "w"),
        ],
    )
    assert result.exit_code not in (0, 1)  # an expected error: its own exit code, one line
    assert "train" in result.output
    assert "Traceback" not in result.output


def test_prefect_retry_of_train_resumes_from_the_checkpoint(tiny_cv, tmp_path, monkeypatch):
    """A crash mid-training is retried by Prefect and continues, not restarts."""
    import tasks.train as train_task_module

    real_train = train_task_module.train
    attempts: list[int] = []

    def crash_once_at_step_5(*args, on_progress=None, **kwargs):
        attempts.append(len(attempts))
        if len(attempts) > 1:
            return real_train(*args, on_progress=on_progress, **kwargs)

        def progress(p):
            on_progress(p)
            if p.step == 5:
                raise RuntimeError("simulated crash at step 5")

        return real_train(*args, on_progress=progress, **kwargs)

    monkeypatch.setattr(train_task_module, "train", crash_once_at_step_5)
    cfg = tiny_config(tmp_path / "w", tiny_cv, train_retries=1)
    result = train_cv(config=cfg, target="train")
    assert len(attempts) == 2
    # epoch 0 ended at step 4 with a checkpoint; the retry continued from there.
    assert result.training.resumed_from_step == 4
    assert result.training.steps == 8
    assert result.training.epochs == 2


def test_each_stage_left_artifacts(full_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = [
        "corpus-validation",
        "corpus-summary",
        "feature-cache",
        "training-progress",
        "training-loss",
        "training-loss-curve",
        "evaluation",
        "evaluation-samples",
        "export",
        "promotion",
    ]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    assert {a.key for a in found} == set(keys)
    table = next(a for a in found if a.key == "corpus-validation")
    assert "too_short" in str(table.data)
    assert "dur_median_s" in str(table.data)
    curve = next(a for a in found if a.key == "training-loss-curve")
    assert "data:image/png;base64," in str(curve.data)


def test_feature_shards_run_on_a_dask_cluster(tiny_cv, tmp_path):
    """--task_runner dask --dask_address: shards are task runs executed by Dask workers."""
    distributed = pytest.importorskip("distributed")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    workdir = tmp_path / "dask-run"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        result = CliRunner().invoke(
            app,
            [
                "features",
                "--corpus",
                str(tiny_cv),
                "--workdir",
                str(workdir),
                "--task_runner",
                "dask",
                "--dask_address",
                cluster.scheduler_address,
                "--shard_size",
                "10",
            ],
        )
        assert result.exit_code == 0, result.output + repr(result.exception)
        prefix = cluster.scheduler.task_prefixes["featurise_shard_task"]
        assert prefix.all_durations["compute"] > 0, "Dask workers ran the shard tasks"
        assert prefix.state_counts.get("erred", 0) == 0
    shards = list((workdir / "features").glob("*/shards/*.index.csv"))
    assert len(shards) == 4  # 40 clips, 10 per shard
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="featurise-shard-"))
        )
    names = {r.name for r in runs}
    assert {f"featurise-shard-{p.name.split('.')[0]}" for p in shards} <= names


def test_killed_run_resumes_when_the_flow_is_run_again(tiny_cv, tmp_path):
    """SIGKILL the CLI mid-training; the same command again continues from the checkpoint."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    workdir = tmp_path / "killed-run"
    args = [
        "train",
        "--corpus",
        str(tiny_cv),
        "--workdir",
        str(workdir),
        "--n_hidden",
        "32",
        "--epochs",
        "40",
        "--train_batch_size",
        "4",
        "--dev_batch_size",
        "8",
        "--checkpoint_steps",
        "5",
        "--seed",
        "7",
    ]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    cli = [sys.executable, "-m", "deepspeech_flow.cli", *args]
    proc = subprocess.Popen(
        cli,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def checkpointed_step_10() -> bool:
        return newest_checkpoint_step(workdir) >= 10

    sigkill_when(proc, checkpointed_step_10, 240, "training", group=True)

    cfg = tiny_config(workdir, tiny_cv, epochs=40, train_batch_size=4, checkpoint_steps=5)
    cfg = cfg.model_copy(update={"corpus": cfg.corpus.model_copy(update={"import_workers": 0})})
    result = train_cv(config=cfg, target="train")
    assert result.corpus.reused
    assert result.features.computed == 0
    assert result.training.resumed_from_step >= 10
    assert result.training.steps == 40 * 8
    assert result.training.epochs == 40
