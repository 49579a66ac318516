"""Evaluate and export: reports per test file, versioned exports, models that match."""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from deepspeech_core.config import DecoderConfig, ExportConfig, FeatureConfig
from deepspeech_core.data.validation import validate_corpus
from deepspeech_core.evaluate.arpa_lm import write_arpa
from deepspeech_core.evaluate.error_rates import corpus_error_rates
from deepspeech_core.evaluate.evaluation import SampleResult, evaluate
from deepspeech_core.export import store
from deepspeech_core.export.export_model import export_model, verification_clips
from deepspeech_core.export.transcriber import Transcriber
from deepspeech_core.features.cache import build_feature_cache
from deepspeech_core.features.frame_counts import feature_frames
from tasks.evaluate import evaluation_markdown
from tests.helpers import sigkill_when

SAMPLE_FIELDS = list(SampleResult.__dataclass_fields__)


@pytest.fixture(scope="module")
def evaluated(speaking_model):
    cfg, corpus, features, _ = speaking_model
    evaluation = evaluate(features, cfg.checkpoint_dir, cfg.evaluation, cfg.workdir / "reports")
    return cfg, corpus, features, evaluation


@pytest.fixture(scope="module")
def exported(evaluated, tmp_path_factory):
    cfg, corpus, features, evaluation = evaluated
    root = tmp_path_factory.mktemp("export")
    cfg_export = ExportConfig(export_model_name="digits", export_author_id="qa-team")
    manifest = export_model(
        cfg.checkpoint_dir,
        root,
        cfg_export,
        evaluation,
        corpus,
        verification_clips(features),
    )
    return root, manifest


def test_reports_are_well_formed(evaluated):
    cfg, corpus, _, evaluation = evaluated
    report = json.loads(evaluation.report_path.read_text())
    assert report["samples"] == corpus.counts["test"] == evaluation.samples
    assert report["decoder"] == "greedy"
    assert report["loss"] > 0
    samples = json.loads(evaluation.test_output_path.read_text())
    assert [list(s) for s in samples] == [SAMPLE_FIELDS] * len(samples)  # DeepSpeech's fields
    test_csv = pd.read_csv(corpus.splits["test"], keep_default_na=False)
    assert sorted(s["src"] for s in samples) == sorted(test_csv.transcript)
    # corpus-level: the report's WER is jiwer over all samples, not a mean of rates
    wer, cer = corpus_error_rates([s["src"] for s in samples], [s["res"] for s in samples])
    assert (evaluation.wer, evaluation.cer) == (wer, cer)
    words = sum(s["word_length"] for s in samples)
    assert evaluation.wer == pytest.approx(sum(s["word_distance"] for s in samples) / words)
    # best, median and worst report_count (1) samples, by WER
    assert [len(v) for v in evaluation.examples.values()] == [1, 1, 1]
    best, worst = evaluation.examples["best"][0], evaluation.examples["worst"][0]
    assert best["wer"] == min(s["wer"] for s in samples)
    assert worst["wer"] == max(s["wer"] for s in samples)
    assert sum(m.samples for m in evaluation.by_duration.values()) == evaluation.samples
    markdown = evaluation_markdown(evaluation)
    assert "| duration |" in markdown
    assert next(iter(evaluation.by_duration)) in markdown


def test_several_test_files_are_reported_one_by_one(speaking_model, tmp_path):
    """--test_files a.csv,b.csv: each file's own WER/CER, as DeepSpeech prints them."""
    cfg, corpus, _, _ = speaking_model
    test = pd.read_csv(corpus.splits["test"], keep_default_na=False)
    parts = {"a.csv": test.iloc[: len(test) // 2], "b.csv": test.iloc[len(test) // 2 :]}
    for name, part in parts.items():
        part[["wav_filename", "wav_filesize", "transcript"]].to_csv(tmp_path / name, index=False)
    split_files = cfg.corpus.model_copy(
        update={
            "corpus": None,
            "train_files": [corpus.splits["train"]],
            "dev_files": [corpus.splits["dev"]],
            "test_files": [tmp_path / "a.csv", tmp_path / "b.csv"],
        }
    )
    own = validate_corpus(
        split_files, cfg.features, tmp_path / "work", cfg.checkpoint_dir / "alphabet.txt"
    )
    features = build_feature_cache(own, cfg.features, tmp_path / "work")
    output_file = tmp_path / "out" / "test_output.json"
    evaluation = evaluate(
        features,
        cfg.checkpoint_dir,
        cfg.evaluation.model_copy(update={"test_output_file": output_file}),
        tmp_path / "reports",
    )
    assert [os.path.basename(k) for k in evaluation.per_file] == ["a.csv", "b.csv"]
    samples = json.loads(output_file.read_text())
    for source, metrics in evaluation.per_file.items():
        wavs = set(parts[os.path.basename(source)].wav_filename)
        own_samples = [s for s in samples if s["wav_filename"] in wavs]
        assert metrics.samples == len(wavs) == len(own_samples)
        refs, hyps = [s["src"] for s in own_samples], [s["res"] for s in own_samples]
        assert (metrics.wer, metrics.cer) == corpus_error_rates(refs, hyps)


def test_export_layout_metadata_and_model_card(exported, evaluated):
    root, manifest = exported
    _, corpus, _, evaluation = evaluated
    assert manifest.version == "v1"
    assert store.current(root) == manifest.export_dir
    version = manifest.export_dir
    for name in ("saved_model", "model.tflite", "model.quant.tflite", "checkpoint"):
        assert (version / name).exists(), name
    metadata = json.loads(manifest.metadata.read_text())
    assert metadata["sample_rate"] == 16000
    assert metadata["n_hidden"] == 128
    assert metadata["n_context"] == 9
    assert metadata["features"]["n_input"] == 26
    assert metadata["parameters"] > 0
    assert metadata["alphabet"]
    assert metadata["test_wer"] == evaluation.wer
    assert metadata["test_cer"] == evaluation.cer
    assert metadata["training_data"]["fingerprint"] == corpus.fingerprint
    assert metadata["training_data"]["hours"]["train"] == corpus.hours["train"]
    assert all(metadata["versions"][k] for k in ("deepspeech-flow", "tensorflow", "prefect"))
    sizes = {name: m.size_bytes for name, m in manifest.tflite.items()}
    assert sizes["model.quant.tflite"] < sizes["model.tflite"]
    assert metadata["tflite"]["model.tflite"]["size_bytes"] == sizes["model.tflite"]
    card = manifest.model_card.read_text()
    assert card.startswith("# digits 0.0.1")
    assert "Author: qa-team" in card
    assert f"{100 * evaluation.wer:.2f} %" in card
    assert "model.quant.tflite" in card


@pytest.mark.parametrize("backend", ["saved_model", "tflite"])
def test_exported_models_transcribe_like_evaluation(exported, evaluated, backend):
    """SavedModel and streaming TFLite: the evaluate stage's transcripts, clip for clip."""
    root, _ = exported
    samples = json.loads(evaluated[3].test_output_path.read_text())
    assert sum(bool(s["res"]) for s in samples) > len(samples) // 2, "model says something"
    transcriber = Transcriber(root, backend)
    for sample in samples:
        assert transcriber.transcribe_file(sample["wav_filename"]) == sample["res"]


def test_exported_model_with_beam_search_and_scorer(exported, evaluated, tmp_path):
    root, _ = exported
    cfg, corpus, features, _ = evaluated
    train_text = pd.read_csv(corpus.splits["train"], keep_default_na=False).transcript
    decoder = DecoderConfig(beam_width=64, scorer_path=write_arpa(train_text, tmp_path / "lm"))
    evaluation = evaluate(
        features,
        cfg.checkpoint_dir,
        cfg.evaluation.model_copy(update=decoder.model_dump()),
        tmp_path / "reports",
    )
    samples = json.loads(evaluation.test_output_path.read_text())
    for backend in ("saved_model", "tflite"):
        transcriber = Transcriber(root, backend, decoder)  # type: ignore[arg-type]
        got = [transcriber.transcribe_file(s["wav_filename"]) for s in samples]
        assert got == [s["res"] for s in samples], backend


def test_saved_model_loads_without_project_code(exported, tmp_path):
    root, manifest = exported
    code = textwrap.dedent(
        """
        import sys, numpy as np, tensorflow as tf
        m = tf.saved_model.load(sys.argv[1])
        pcm = (np.sin(np.arange(16000) / 7.0) * 8000).astype(np.int16)
        a = m.serve(tf.constant(pcm.astype(np.float32) / 32768.0))
        b = m.serve_pcm16(tf.constant(pcm))
        f = m.features(tf.zeros([1, 30, 26]))
        assert np.array_equal(a["logits"].numpy(), b["logits"].numpy())
        print(a["logits"].shape, f["logits"].shape, a["transcript"].dtype.name)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root / "current" / "saved_model")],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: no project code importable
    )
    assert out.returncode == 0, out.stderr[-2000:]
    n_classes = len(json.loads(manifest.metadata.read_text())["alphabet"]) + 1
    frames = feature_frames(16000, FeatureConfig())  # 49 full windows and the client's last
    assert frames == 50
    assert out.stdout.strip() == f"({frames}, {n_classes}) (30, {n_classes}) string"


def test_versions_promotion_and_interrupted_export(evaluated, tmp_path):
    cfg, corpus, features, evaluation = evaluated
    root = tmp_path / "export"
    no_tflite = ExportConfig(export_tflite=False)
    first = export_model(cfg.checkpoint_dir, root, no_tflite, evaluation)
    kept = export_model(cfg.checkpoint_dir, root, no_tflite, evaluation, promote=False)
    assert (first.version, kept.version) == ("v1", "v2")
    assert not kept.promoted
    assert store.current(root) == first.export_dir
    assert first.export_dir.stat().st_mode & 0o777 == 0o755, "readable by those who serve it"
    before = {p.name: p.stat().st_mtime_ns for p in first.export_dir.rglob("*")}

    # SIGKILL an export half way (once its staging directory has a SavedModel in it)
    script = textwrap.dedent(
        f"""
        from deepspeech_core.config import ExportConfig
        from deepspeech_core.export.export_model import export_model, verification_clips
        export_model({str(cfg.checkpoint_dir)!r}, {str(root)!r}, ExportConfig(export_tflite=False))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    sigkill_when(
        proc,
        lambda: any(root.glob(".v3.staging-*/saved_model/variables")),
        timeout=120,
        what="the export",
    )
    assert store.current(root) == first.export_dir, "current did not move"
    assert [v.name for v in store.versions(root)] == ["v1", "v2"], "no half v3"
    assert {p.name: p.stat().st_mtime_ns for p in first.export_dir.rglob("*")} == before
    assert Transcriber(root).metadata["checkpoint"] == str(evaluation.checkpoint)

    third = export_model(cfg.checkpoint_dir, root, no_tflite, evaluation)
    assert third.version == "v3"
    assert store.current(root) == third.export_dir
    assert not list(root.glob(".*staging*")), "the next export cleans what was left"

    # promotion by hand, e.g. of the unpromoted v2
    from deepspeech_flow.cli import app

    result = CliRunner().invoke(app, ["promote", "v2", "--export_dir", str(root)])
    assert result.exit_code == 0, result.output
    assert "(was v3)" in result.output
    assert store.current(root).name == "v2"
    bad = CliRunner().invoke(app, ["promote", "v9", "--export_dir", str(root)])
    assert bad.exit_code != 0
    assert store.current(root).name == "v2"


def test_transcribe_command(exported, evaluated, speaking_model, tmp_path):
    from deepspeech_flow.cli import app

    root, _ = exported
    sample = json.loads(evaluated[3].test_output_path.read_text())[0]
    mp3 = sorted((speaking_model[0].corpus.corpus / "clips").glob("*.mp3"))
    args = ["transcribe", "--model", str(root), sample["wav_filename"], str(mp3[0]), "--json"]
    for backend in ("saved_model", "tflite", "tflite_quant"):
        result = CliRunner().invoke(app, [*args, "--backend", backend, "--beam_width", "1"])
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.strip().splitlines()]
        assert lines[1]["file"] == str(mp3[0])  # a 48 kHz mp3, resampled on the fly
        if backend != "tflite_quant":
            assert lines[0]["text"] == sample["res"]
    bad = CliRunner().invoke(app, ["transcribe", "--model", str(tmp_path), "x.wav"])
    message = " ".join(re.sub(r"[│╭╮╰╯─]", " ", bad.output).split())
    assert bad.exit_code != 0
    assert "is not an exported model" in message


def test_long_file_streams_through_tflite(exported, evaluated, tmp_path):
    """A minute of audio through the streaming model: same logits as the SavedModel's."""
    import soundfile

    root, _ = exported
    samples = json.loads(evaluated[3].test_output_path.read_text())
    audio = np.concatenate(
        [soundfile.read(s["wav_filename"], dtype="int16")[0] for s in samples] * 4
    )
    assert len(audio) > 60 * 16000
    saved = Transcriber(root, "saved_model").logits(audio)
    streamed = Transcriber(root, "tflite").logits(audio)
    assert streamed.shape == saved.shape
    assert np.abs(streamed - saved).max() < 1e-3
