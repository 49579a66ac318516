"""Exports that DeepSpeech 0.9.3's own client library (libdeepspeech) loads and runs.

The proof is the real library from the deepspeech-tflite and deepspeech 0.9.3 wheels
(`make test` fetches them), driven through its C API in a child process so that a
crash of the client fails a test instead of killing pytest.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest
import soundfile
import tensorflow as tf
from typer.testing import CliRunner

from deepspeech_core.config import ExportConfig
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.export.deepspeech_client import (
    ClientError,
    ClientUnavailableError,
    fetch_library,
    run_client,
)
from deepspeech_core.export.deepspeech_graphs import (
    GRAPH_VERSION,
    PB_FILE,
    QUANT_FILE,
    TFLITE_FILE,
    DeepSpeechExportError,
    DeepSpeechGraph,
    DeepSpeechMetadata,
    alphabet_labels,
    check_deepspeech_file,
    convert_deepspeech_pb,
    deserialize_alphabet,
    read_deepspeech_metadata,
    serialize_alphabet,
)
from deepspeech_core.export.export_model import export_model, verification_clips
from deepspeech_core.model.checkpoints import load_model
from tests.helpers import transcribe_cli

BUILD = {TFLITE_FILE: "tflite", QUANT_FILE: "tflite", PB_FILE: "tensorflow"}


def test_alphabet_is_serialised_as_deepspeech_does():
    """Alphabet::Serialize: uint16 count, then uint16 key, uint16 length, bytes per label."""
    labels = alphabet_labels(Alphabet([" ", "a", "é"]))
    data = serialize_alphabet(labels)
    assert data == (
        struct.pack("<H", 3)
        + struct.pack("<HH", 0, 1) + b" "
        + struct.pack("<HH", 1, 1) + b"a"
        + struct.pack("<HH", 2, 2) + "é".encode()
    )  # fmt: skip
    assert deserialize_alphabet(data) == labels
    # a bytes-output-mode alphabet (255 byte labels) goes through the same function
    byte_labels = [bytes([i]) for i in range(1, 256)]
    assert deserialize_alphabet(serialize_alphabet(byte_labels)) == byte_labels
    with pytest.raises(DeepSpeechExportError, match="ends inside"):
        deserialize_alphabet(data[:-1])


@pytest.fixture(scope="module")
def clients():
    """Both libdeepspeech 0.9.3 builds, fetched once into the cache (make test does it)."""
    try:
        return {build: fetch_library(build) for build in ("tflite", "tensorflow")}
    except ClientUnavailableError as exc:
        pytest.skip(f"libdeepspeech 0.9.3 is not available: {exc}")


@pytest.fixture(scope="module")
def exported(speaking_model, tmp_path_factory):
    """A full export of the model trained on speech, and its test clips (16-bit wavs)."""
    cfg, corpus, features, _ = speaking_model
    root = tmp_path_factory.mktemp("ds-export")
    manifest = export_model(
        cfg.checkpoint_dir, root, ExportConfig(), corpus=corpus,
        verify_clips=verification_clips(features),
    )  # fmt: skip
    test = pd.read_csv(corpus.splits["test"], keep_default_na=False)
    return manifest, list(test.wav_filename)


def test_every_export_holds_checked_client_models(exported):
    manifest, _ = exported
    version = manifest.export_dir
    assert set(manifest.deepspeech) == {TFLITE_FILE, QUANT_FILE, PB_FILE}
    metadata = json.loads((version / "metadata.json").read_text())
    card = (version / "MODEL_CARD.md").read_text()
    for name, record in manifest.deepspeech.items():
        assert (version / name).stat().st_size == record.size_bytes
        assert metadata["deepspeech"][name]["graph_version"] == GRAPH_VERSION
        assert record.error <= record.tolerance
        assert f"`{name}`" in card
        values, _ = read_deepspeech_metadata(version / name)
        assert values["metadata_beam_width"] == 500
        assert values["metadata_sample_rate"] == 16000
        assert deserialize_alphabet(values["metadata_alphabet"]) == [
            c.encode() for c in metadata["alphabet"]
        ]
    assert manifest.deepspeech[QUANT_FILE].size_bytes < manifest.deepspeech[TFLITE_FILE].size_bytes


@pytest.mark.parametrize("name", [TFLITE_FILE, QUANT_FILE, PB_FILE])
def test_both_client_builds_load_their_file(clients, exported, name):
    manifest, _ = exported
    run = run_client(BUILD[name], manifest.export_dir / name)
    assert run.version == "0.9.3"
    assert run.sample_rate == 16000
    assert run.beam_width == 500


@pytest.fixture(scope="module")
def wrong(speaking_model, tmp_path_factory):
    """output_graph.pb files whose metadata do not fit the model (version 5, other alphabet)."""
    cfg = speaking_model[0]
    model, spec, _ = load_model(cfg.checkpoint_dir, "best")
    right = DeepSpeechMetadata.for_model(spec)
    root = tmp_path_factory.mktemp("ds-wrong")
    variants = {
        "version": right.model_copy(update={"version": GRAPH_VERSION - 1}),
        "alphabet": right.model_copy(update={"alphabet": right.alphabet[::-1]}),
        "short_alphabet": right.model_copy(update={"alphabet": right.alphabet[:-1]}),
    }
    for what, metadata in variants.items():
        graph = DeepSpeechGraph(model, spec, metadata)
        (root / f"{what}.pb").write_bytes(convert_deepspeech_pb(graph))
    return root, right, spec


def test_wrong_version_or_alphabet_is_refused_by_our_check(wrong):
    root, right, spec = wrong
    n_hidden = spec.model.n_hidden
    with pytest.raises(DeepSpeechExportError, match=r"graph version 5, but .* need 6"):
        check_deepspeech_file(root / "version.pb", right, n_hidden)
    with pytest.raises(DeepSpeechExportError, match="the model was trained on"):
        check_deepspeech_file(root / "alphabet.pb", right, n_hidden)
    with pytest.raises(DeepSpeechExportError, match="logits have .* classes"):
        check_deepspeech_file(root / "short_alphabet.pb", right, n_hidden)


def test_the_client_refuses_what_our_check_refuses(clients, wrong):
    """Our check is not stricter than needed: the client refuses these files as well."""
    root, _, _ = wrong
    with pytest.raises(ClientError, match="Incompatible model"):
        run_client("tensorflow", root / "version.pb")
    with pytest.raises(ClientError, match="Invalid alphabet"):
        run_client("tensorflow", root / "short_alphabet.pb")


def test_tensorflow_client_transcribes_as_transcribe_does(clients, exported):
    """On real test clips the TensorFlow build's client on output_graph.pb says what
    `deepspeech-flow transcribe --beam_width 500` says (both CTC prefix beam searches
    without a language model) for >= 95% of clips. They agree because the graph computes
    our features and our network on the same frames: the client's last frame, the MFCCs
    of the audio left after the last full window zero-padded to a window, is one our
    features make too (`frames.feature_frames`), in training and in `transcribe`."""
    manifest, wavs = exported
    run = run_client("tensorflow", manifest.export_dir / PB_FILE, wavs, beam_width=500)
    assert len(run.records) == len(wavs) >= 10
    assert any(r["text"] for r in run.records), "the model trained on speech says nothing"
    ours = transcribe_cli(manifest.export_dir, wavs, 500)
    same = sum(a == r["text"] for a, r in zip(ours, run.records, strict=True))
    assert same >= 0.95 * len(wavs), f"{same}/{len(wavs)} clips agree"
    _assert_streaming_ends_as_a_whole_clip(PB_FILE, manifest, wavs, run)


def test_tflite_client_transcribes_as_our_model_on_its_frames(clients, exported):
    """The TFLite build's client on output_graph.tflite says what our model and
    `transcribe`'s decoder (width 500, no LM) say on the client's frames, for >= 95% of
    clips. Its last frame differs from ours: it leaves the previous window's samples in
    the tail of that window instead of zeros (copy_vector_to_tensor), which no graph can
    tell apart; on these clips `transcribe` itself agrees on 10 of 12 (docs/PERFORMANCE.md)."""
    from deepspeech_core.config import DecoderConfig
    from deepspeech_core.export.transcriber import Transcriber
    from deepspeech_core.features.mfcc import MfccExtractor

    manifest, wavs = exported
    run = run_client("tflite", manifest.export_dir / TFLITE_FILE, wavs, beam_width=500)
    assert len(run.records) == len(wavs) >= 10
    assert any(r["text"] for r in run.records), "the model trained on speech says nothing"
    ours = Transcriber(manifest.export_dir, decoder=DecoderConfig(beam_width=500))
    mfccs = MfccExtractor(ours.features)
    same = 0
    for wav, record in zip(wavs, run.records, strict=True):
        pcm16, _ = soundfile.read(wav, dtype="int16")
        features = _tflite_client_frames(pcm16, mfccs)[np.newaxis]
        logits = ours._saved.features(tf.constant(features))["logits"].numpy()
        same += ours.decoder.decode(logits) == record["text"]
    assert same >= 0.95 * len(wavs), f"{same}/{len(wavs)} clips agree"
    _assert_streaming_ends_as_a_whole_clip(TFLITE_FILE, manifest, wavs, run)


def _tflite_client_frames(pcm16: np.ndarray, mfccs) -> np.ndarray:
    """The MFCC frames the TFLite build of libdeepspeech computes for a whole clip: ours,
    but the last window's tail holds the previous window's samples, not zeros."""
    window, step = 512, 320
    full = 1 + (len(pcm16) - window) // step
    rest = pcm16[full * step :]
    previous = (full - 1) * step
    tail = pcm16[previous + len(rest) : previous + window]
    return np.concatenate([mfccs(pcm16)[:-1], mfccs(np.concatenate([rest, tail]))[:1]])


def _assert_streaming_ends_as_a_whole_clip(name: str, manifest, wavs: list, run) -> None:
    """Streaming in 20 ms chunks ends with the same text as DS_SpeechToText."""
    streamed = run_client(BUILD[name], manifest.export_dir / name, wavs[:3], 500, stream_ms=20)
    for record, whole in zip(streamed.records, run.records[:3], strict=True):
        assert record["stream"] == record["text"] == whole["text"]
        chunks = -(-round(record["audio_seconds"] * 16000) // 320)  # 20 ms = 320 samples
        assert len(record["intermediate"]) == chunks // 25  # a decode every 0.5 s


def test_transcribe_backend_deepspeech_runs_the_client(clients, exported):
    from deepspeech_flow.cli import app

    manifest, wavs = exported
    run = run_client("tflite", manifest.export_dir / TFLITE_FILE, wavs[:2], beam_width=500)
    args = ["transcribe", "--model", str(manifest.export_dir), "--backend", "deepspeech"]
    result = CliRunner().invoke(app, [*args, "--beam_width", "500", "--json", *wavs[:2]])
    assert result.exit_code == 0, result.output
    got = [json.loads(line)["text"] for line in result.output.splitlines()]
    assert got == [r["text"] for r in run.records]


def test_client_backends_keep_the_files_beam_width_unless_given(tmp_path, monkeypatch):
    """`transcribe --backend deepspeech` without --beam_width decodes with the width the
    file carries (metadata_beam_width, 500), as an app that sets none; with it, that one."""
    from deepspeech_core.config import FeatureConfig
    from deepspeech_core.export import transcriber
    from deepspeech_core.export.deepspeech_client import ClientRun
    from deepspeech_flow.cli import app

    metadata = {"features": FeatureConfig().model_dump(mode="json"), "alphabet": list(" ab")}
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    (tmp_path / TFLITE_FILE).write_bytes(b"not read: the client is replaced below")
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, np.zeros(16000, np.int16), 16000)
    widths = []

    def client(build, model, wavs, beam_width=None, scorer=None, **_):
        widths.append(beam_width)
        header = {"version": "0.9.3", "sample_rate": 16000, "beam_width": beam_width or 500}
        return ClientRun(header, [{"file": str(wavs[0]), "text": "ab"}])

    monkeypatch.setattr(transcriber, "run_client", client)
    args = ["transcribe", "--model", str(tmp_path), "--backend", "deepspeech", str(wav)]
    for extra in ([], ["--beam_width", "7"]):
        result = CliRunner().invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith("\tab")
    assert widths == [None, 7]
