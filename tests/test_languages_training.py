"""Training in other scripts: a Russian model learns; a Mandarin model in bytes output
mode writes only valid UTF-8 and runs end to end (greedy and beam evaluation,
SavedModel/TFLite export, transcribe, DeepSpeech's client).

The corpora are one word per clip spoken by espeak-ng from a five-word vocabulary, so
a small character model gets past CTC's all-blank phase in a few hundred steps. A
bytes-mode model needs about ten times as many (each Han character is three labels to
spell in order; docs/PERFORMANCE.md has the measurements), more than make test's
budget: whether it learns is bench/languages.py's.
"""

from __future__ import annotations

import json
import shutil

import pytest
import tensorflow as tf

from deepspeech_core.config import DecoderConfig, ExportConfig
from deepspeech_core.data.alphabet import Alphabet, UTF8Alphabet
from deepspeech_core.data.audio_files import read_audio
from deepspeech_core.evaluate.decoders import GreedyDecoder, make_decoder
from deepspeech_core.evaluate.error_rates import corpus_error_rates
from deepspeech_core.evaluate.evaluation import decode_split, evaluate
from deepspeech_core.export.deepspeech_client import ClientUnavailableError, fetch_library
from deepspeech_core.export.export_model import export_model, verification_clips
from deepspeech_core.export.transcriber import Transcriber
from deepspeech_core.features.batches import SplitIndex
from deepspeech_core.model.checkpoints import load_model
from tests.helpers import tiny_config

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are needed to speak the corpus (make setup installs them)",
)


def _train(tmp_path_factory, language: str, count: int, epochs: int, **corpus):
    from deepspeech_core.data.language_corpora import make_language_corpus
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.train.loop import train

    cv = make_language_corpus(
        tmp_path_factory.mktemp(language),
        language,
        count=count,
        seed=5,
        dev=2,
        test=4,
        words=1,
        distinct=False,
        vocabulary=5,
    )
    cfg = tiny_config(
        tmp_path_factory.mktemp(f"{language}-work"),
        cv,
        n_hidden=128,
        epochs=epochs,
        learning_rate=0.003,
        train_batch_size=4,
    )
    for key, value in corpus.items():
        setattr(cfg.corpus, key, value)
    manifest = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
    features = build_feature_cache(manifest, cfg.features, cfg.workdir)
    trained = train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
    return cfg, manifest, features, trained


@pytest.fixture(scope="module")
def russian(tmp_path_factory):
    return _train(tmp_path_factory, "ru", count=40, epochs=RU_EPOCHS)


@pytest.fixture(scope="module")
def mandarin_bytes(tmp_path_factory):
    return _train(tmp_path_factory, "cmn", count=16, epochs=2, bytes_output_mode=True)


RU_EPOCHS = 35


def test_a_cyrillic_model_learns(russian):
    cfg, _, features, trained = russian
    model, spec, _ = load_model(trained.checkpoint_dir, "best")
    assert set("один") <= set(spec.alphabet.characters)
    index = SplitIndex.load(features.indexes["test"], spec.alphabet)
    decoder = GreedyDecoder(spec.alphabet)
    _, texts = decode_split(model, decoder, index, 8, cfg.features.n_input)
    _, untrained = decode_split(spec.build(), decoder, index, 8, cfg.features.n_input)
    cer = corpus_error_rates(index.transcripts, texts)[1]
    cer_untrained = corpus_error_rates(index.transcripts, untrained)[1]
    assert any(texts), texts
    assert cer < 0.9, (cer, cer_untrained, texts)
    assert cer < 0.5 * cer_untrained, (cer, cer_untrained, texts)


def test_bytes_output_mode_decoders_write_only_valid_utf8(mandarin_bytes):
    """Greedy and beam search of a barely trained and an untrained bytes-mode network
    (which put any byte after any other): every text is valid UTF-8, no U+FFFD."""
    cfg, _, features, trained = mandarin_bytes
    model, spec, _ = load_model(trained.checkpoint_dir, "best")
    index = SplitIndex.load(features.indexes["test"], spec.alphabet)
    for network in (model, spec.build()):
        for decoder in (GreedyDecoder(spec.alphabet), make_decoder(spec.alphabet, BEAM_16)):
            _, texts = decode_split(network, decoder, index, 8, cfg.features.n_input)
            for text in texts:
                assert "\ufffd" not in text and text.encode("utf-8").decode("utf-8") == text
    assert any(texts), "the untrained network writes bytes (else the check is empty)"


BEAM_16 = DecoderConfig(beam_width=16)


def test_mandarin_bytes_mode_trains_evaluates_exports_and_transcribes(mandarin_bytes, tmp_path):
    cfg, corpus, features, trained = mandarin_bytes
    model, spec, _ = load_model(trained.checkpoint_dir, "best")
    assert isinstance(spec.alphabet, UTF8Alphabet)
    assert model.output_shape[-1] == 256
    evaluation = evaluate(features, trained.checkpoint_dir, cfg.evaluation, tmp_path / "greedy")
    samples = json.loads(evaluation.test_output_path.read_text())
    assert all("\ufffd" not in s["res"] for s in samples)  # valid UTF-8 only
    beam = cfg.evaluation.model_copy(update={"beam_width": 16})
    assert evaluate(features, trained.checkpoint_dir, beam, tmp_path / "beam").decoder == "beam"

    exported = export_model(
        trained.checkpoint_dir,
        tmp_path / "export",
        ExportConfig(),
        evaluation,
        corpus,
        verification_clips(features),
    )
    metadata = json.loads(exported.metadata.read_text())
    assert metadata["bytes_output_mode"] is True
    assert metadata["alphabet"] == ""
    assert isinstance(Alphabet.load(exported.alphabet), UTF8Alphabet)
    assert "UTF-8 bytes" in exported.model_card.read_text()
    assert set(exported.tflite) == {"model.tflite", "model.quant.tflite"}
    for backend in ("saved_model", "tflite"):
        transcriber = Transcriber(tmp_path / "export", backend)
        got = [transcriber.transcribe_file(s["wav_filename"]) for s in samples]
        assert got == [s["res"] for s in samples], backend
    saved = tf.saved_model.load(str(exported.saved_model))
    for sample in samples:
        pcm = read_audio(sample["wav_filename"], 16000).samples
        raw = saved.serve_pcm16(tf.constant(pcm, tf.int16))["transcript"].numpy()
        # the graph writes the bytes themselves, valid UTF-8 spelling evaluation's text
        assert raw.decode("utf-8") == sample["res"]

    # DeepSpeech's client runs the bytes-mode export (its alphabet: the 255 byte labels)
    assert set(metadata["deepspeech"]) == {
        "output_graph.tflite",
        "output_graph.quant.tflite",
        "output_graph.pb",
    }
    try:
        fetch_library("tflite")
    except ClientUnavailableError as exc:
        pytest.skip(f"libdeepspeech 0.9.3 is not available: {exc}")
    client = Transcriber(tmp_path / "export", "deepspeech")
    texts = [client.transcribe_file(s["wav_filename"]) for s in samples]
    assert len(texts) == len(samples)
    assert all(isinstance(t, str) for t in texts)


def test_transfer_from_a_character_model_into_bytes_output_mode(russian, mandarin_bytes, tmp_path):
    """--load_checkpoint_dir with --drop_source_layers 1: a new output layer of 256 bytes."""
    import numpy as np

    from deepspeech_core.model.checkpoints import CheckpointError
    from deepspeech_core.train.loop import train

    source_cfg = russian[0]
    cfg, _, features, _ = mandarin_bytes
    no_drop = cfg.training.model_copy(
        update={
            "epochs": 0,
            "load_checkpoint_dir": source_cfg.checkpoint_dir,
            "drop_source_layers": 0,
        }
    )
    with pytest.raises(CheckpointError, match="drop_source_layers"):
        train(features, cfg.model, cfg.features, no_drop, tmp_path / "refused")
    drop_one = no_drop.model_copy(update={"drop_source_layers": 1})
    train(features, cfg.model, cfg.features, drop_one, tmp_path / "transfer")
    target, spec, _ = load_model(tmp_path / "transfer", "last")
    source, _, _ = load_model(source_cfg.checkpoint_dir, "best")
    assert isinstance(spec.alphabet, UTF8Alphabet)
    assert target.output_shape[-1] == 256
    for a, b in zip(
        target.get_layer("lstm").get_weights(), source.get_layer("lstm").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)
