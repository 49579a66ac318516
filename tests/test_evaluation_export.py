import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from deepspeech_core.evaluation import evaluate
from deepspeech_core.export import ExportedModel, export_model


@pytest.fixture(scope="module")
def evaluated(trained):
    cfg, corpus, features, _ = trained
    evaluation = evaluate(features, cfg.checkpoint_dir, cfg.evaluation, cfg.workdir / "reports")
    return cfg, corpus, features, evaluation


def test_reports_are_well_formed(evaluated):
    cfg, corpus, _, evaluation = evaluated
    report = json.loads(evaluation.report_path.read_text())
    assert set(report) >= {"wer", "cer", "loss", "samples"}
    assert report["samples"] == corpus.counts["test"] == evaluation.samples
    assert 0 <= report["cer"] and report["loss"] > 0
    samples = json.loads(evaluation.test_output_path.read_text())
    assert len(samples) == corpus.counts["test"]
    assert set(samples[0]) >= {"wav_filename", "src", "res", "loss", "cer", "wer"}
    test_csv = pd.read_csv(corpus.splits["test"], keep_default_na=False)
    assert sorted(s["src"] for s in samples) == sorted(test_csv.transcript)


def test_export_transcribes_like_evaluation(evaluated, tmp_path):
    cfg, _, _, evaluation = evaluated
    manifest = export_model(cfg.checkpoint_dir, tmp_path / "export", evaluation)
    metadata = json.loads(manifest.metadata.read_text())
    assert metadata["sample_rate"] == 16000 and metadata["n_hidden"] == 32
    assert metadata["test_wer"] == evaluation.wer
    assert metadata["versions"]["tensorflow"]
    assert manifest.alphabet.read_text().startswith("#")
    exported = ExportedModel(manifest.export_dir)
    for sample in json.loads(evaluation.test_output_path.read_text()):
        assert exported.transcribe_file(sample["wav_filename"]) == sample["res"]


def test_saved_model_loads_without_project_code(evaluated, tmp_path):
    import subprocess
    import sys

    cfg, _, _, evaluation = evaluated
    manifest = export_model(cfg.checkpoint_dir, tmp_path / "export", evaluation)
    code = (
        "import sys, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]);"
        "out = m.serve(tf.zeros([16000])); print(out['logits'].shape)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(manifest.saved_model)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip().endswith(f"(49, {len(metadata_alphabet(manifest)) + 1})")


def metadata_alphabet(manifest) -> str:
    return json.loads(manifest.metadata.read_text())["alphabet"]


def test_export_replaces_previous_atomically(evaluated, tmp_path):
    cfg, _, _, evaluation = evaluated
    target = tmp_path / "export"
    export_model(cfg.checkpoint_dir, target, evaluation)
    (target / "marker").write_text("old")
    export_model(cfg.checkpoint_dir, target, evaluation)
    assert not (target / "marker").exists() and (target / "saved_model").is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["export"], "no staging dirs left behind"


def test_transcribe_command(evaluated, tiny_cv, tmp_path):
    from deepspeech_flow.cli import app

    cfg, _, _, evaluation = evaluated
    manifest = export_model(cfg.checkpoint_dir, tmp_path / "export", evaluation)
    sample = json.loads(evaluation.test_output_path.read_text())[0]
    mp3 = sorted((tiny_cv / "clips").glob("*.mp3"))[0]  # 48 kHz mp3: resampled on the fly
    args = [
        "transcribe",
        "--model",
        str(manifest.export_dir),
        sample["wav_filename"],
        str(mp3),
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert lines[0]["text"] == sample["res"] and lines[1]["file"] == str(mp3)
    bad = CliRunner().invoke(app, ["transcribe", "--model", str(tmp_path / "nothing"), "x.wav"])
    assert bad.exit_code != 0 and "saved_model" in bad.output
