"""Feature normalisation: statistics from the training features, stored with the model
and applied identically by training, evaluation, the SavedModel, our streaming TFLite
and the DeepSpeech client graphs (libdeepspeech 0.9.3 itself runs them)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile
import tensorflow as tf

from deepspeech_core.config import EvaluationConfig, ExportConfig
from deepspeech_core.evaluate.evaluation import evaluate
from deepspeech_core.export.deepspeech_client import (
    ClientUnavailableError,
    fetch_library,
    run_client,
)
from deepspeech_core.export.deepspeech_graphs import PB_FILE, TFLITE_FILE
from deepspeech_core.export.export_model import export_model, verification_clips
from deepspeech_core.features.batches import SplitIndex
from deepspeech_core.features.normalization import training_statistics
from deepspeech_core.model.checkpoints import ModelSpec, load_model, save_inference_checkpoint
from deepspeech_core.model.network import feature_statistics, set_feature_statistics
from deepspeech_core.train.loop import train


def _train(trained, checkpoint_dir, features=None, **training):
    """A 16-unit model with --feature_norm on the `trained` fixture's feature cache."""
    cfg, _, cache, _ = trained
    model_cfg = cfg.model.model_copy(update={"n_hidden": 16, "feature_norm": True})
    training_cfg = cfg.training.model_copy(update={"epochs": 1, **training})
    return train(features or cache, model_cfg, cfg.features, training_cfg, checkpoint_dir)


def _index(features, split: str) -> SplitIndex:
    from deepspeech_core.data.alphabet import Alphabet

    return SplitIndex.load(features.indexes[split], Alphabet.load(features.alphabet_path))


def test_statistics_come_from_training_and_survive_resume_and_warm_start(trained, tmp_path):
    cache = trained[2]
    want_mean, want_std = training_statistics(_index(cache, "train"))
    frames = np.concatenate([_index(cache, "train").features(i) for i in range(3)])
    assert want_mean.shape == (frames.shape[1],) and np.all(want_std > 0)

    first = _train(trained, tmp_path / "a")
    model, _, _ = load_model(first.checkpoint_dir)
    stats = feature_statistics(model)
    np.testing.assert_allclose(stats["mean"], want_mean, rtol=1e-6)
    np.testing.assert_allclose(stats["std"], want_std, rtol=1e-6)

    # Resume on another split's features: the checkpoint's statistics stay.
    other = cache.model_copy(update={"indexes": {**cache.indexes, "train": cache.indexes["dev"]}})
    assert not np.allclose(training_statistics(_index(cache, "dev"))[0], want_mean)
    resumed = _train(trained, tmp_path / "a", features=other, epochs=2)
    assert resumed.resumed_from_step == first.steps and resumed.epochs == 2
    model, _, _ = load_model(resumed.checkpoint_dir)
    np.testing.assert_allclose(feature_statistics(model)["mean"], want_mean, rtol=1e-6)

    # Warm start: the copied layers keep the statistics they were trained with.
    source, spec, _ = load_model(first.checkpoint_dir)
    set_feature_statistics(source, np.full_like(want_mean, 3.0), np.full_like(want_std, 7.0))
    save_inference_checkpoint(source, spec, tmp_path / "source")
    warm = _train(trained, tmp_path / "warm", load_checkpoint_dir=tmp_path / "source")
    model, _, _ = load_model(warm.checkpoint_dir)
    assert feature_statistics(model) == {"mean": [3.0] * 26, "std": [7.0] * 26}

    # A normalising source cannot seed a model that would feed it raw features.
    cfg = trained[0]
    from deepspeech_core.model.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="--feature_norm"):
        train(
            cache,
            cfg.model.model_copy(update={"n_hidden": 16}),
            cfg.features,
            cfg.training.model_copy(update={"epochs": 1, "load_checkpoint_dir": tmp_path / "a"}),
            tmp_path / "raw",
        )


def _normalised_twin(model, spec, mean: np.ndarray, std: np.ndarray):
    """A --feature_norm model that computes exactly what `model` computes.

    layer_1 absorbs the normalisation (W' = diag(std) W, b' = b + mean W, both tiled over
    the context window), so the twin says what the trained model says; any path that
    skipped or misapplied the normalisation would say something else.
    """
    twin_spec = ModelSpec(
        spec.alphabet, spec.features, spec.model.model_copy(update={"feature_norm": True})
    )
    twin = twin_spec.build()
    for layer in model.layers:
        if layer.weights:
            twin.get_layer(layer.name).set_weights(layer.get_weights())
    width = 2 * spec.features.n_context + 1
    kernel, bias = model.get_layer("layer_1").get_weights()
    twin.get_layer("layer_1").set_weights(
        [kernel * np.tile(std, width)[:, None], bias + np.tile(mean, width) @ kernel]
    )
    set_feature_statistics(twin, mean, std)
    return twin, twin_spec


@pytest.fixture(scope="module")
def twin_export(speaking_model, tmp_path_factory):
    """The speaking model's normalised twin, exported with every graph (each checked)."""
    cfg, corpus, features, _ = speaking_model
    model, spec, _ = load_model(cfg.checkpoint_dir)
    mean, std = training_statistics(_index(features, "train"))
    twin, twin_spec = _normalised_twin(model, spec, mean, std)
    root = tmp_path_factory.mktemp("twin")
    save_inference_checkpoint(twin, twin_spec, root / "checkpoint")
    manifest = export_model(
        root / "checkpoint",
        root / "export",
        ExportConfig(),
        corpus=corpus,
        verify_clips=verification_clips(features),
    )
    return model, spec, manifest, cfg, features, (mean, std)


def test_every_graph_applies_the_statistics(twin_export, tmp_path):
    model, spec, manifest, cfg, features, (mean, std) = twin_export
    clip = _index(features, "test").features(0)[np.newaxis]
    plain = model(clip, training=False).numpy()
    twin, _ = _normalised_twin(model, spec, mean, std)
    np.testing.assert_allclose(twin(clip, training=False).numpy(), plain, atol=1e-3)
    # Without its statistics the twin is another model: the layer is not a no-op.
    set_feature_statistics(twin, np.zeros_like(mean), np.ones_like(std))
    assert np.abs(twin(clip, training=False).numpy() - plain).max() > 1.0

    # Export: stored in the checkpoint and metadata; SavedModel on features = Keras.
    metadata = json.loads(manifest.metadata.read_text())
    np.testing.assert_allclose(metadata["feature_norm"]["mean"], mean, rtol=1e-6)
    exported, _, _ = load_model(manifest.export_dir / "checkpoint")
    assert feature_statistics(exported) == metadata["feature_norm"]
    saved = tf.saved_model.load(str(manifest.saved_model))
    got = saved.features(tf.constant(clip, tf.float32))["logits"].numpy()
    np.testing.assert_allclose(got, plain[0], atol=1e-3)  # the signature drops the batch
    # Both streaming TFLite models and the three client graphs were streamed against the
    # Keras model before they were written (the export refuses a mismatch).
    assert set(manifest.tflite) == {"model.tflite", "model.quant.tflite"}
    checked = [*manifest.tflite.values(), *manifest.deepspeech.values()]
    assert len(checked) == 5 and all(m.error <= m.tolerance for m in checked)
    assert manifest.tflite["model.tflite"].error < 1e-4

    # Evaluation reads the same weights: the twin's report is the plain model's.
    decoder = EvaluationConfig(beam_width=1, test_batch_size=8, report_count=0)
    twin_eval = evaluate(features, manifest.export_dir / "checkpoint", decoder, tmp_path / "t")
    plain_eval = evaluate(features, cfg.checkpoint_dir, decoder, tmp_path / "p")
    assert twin_eval.wer == plain_eval.wer and abs(twin_eval.loss - plain_eval.loss) < 1e-2


@pytest.mark.parametrize("name", [TFLITE_FILE, PB_FILE])
def test_deepspeech_client_runs_the_normalisation(twin_export, name):
    """libdeepspeech 0.9.3 on the twin's graph says what the plain model says on the
    client's frames: the normalisation runs inside the client, after its MFCCs."""
    build = "tensorflow" if name == PB_FILE else "tflite"
    try:
        fetch_library(build)
    except ClientUnavailableError as exc:
        pytest.skip(f"libdeepspeech 0.9.3 is not available: {exc}")
    from deepspeech_core.evaluate.decoders import BeamSearchDecoder
    from deepspeech_core.features.mfcc import MfccExtractor

    model, spec, manifest, cfg, _, _ = twin_export
    test_csv = cfg.workdir / "corpus" / "test.csv"
    wavs = list(pd.read_csv(test_csv, keep_default_na=False).wav_filename)
    run = run_client(build, manifest.export_dir / name, wavs, beam_width=500)
    assert any(r["text"] for r in run.records), "the model trained on speech says nothing"
    mfccs, decoder = MfccExtractor(spec.features), BeamSearchDecoder(spec.alphabet, 500)
    same = 0
    for wav, record in zip(wavs, run.records, strict=True):
        pcm16, _ = soundfile.read(wav, dtype="int16")
        frames = _client_frames(pcm16, mfccs, build)[np.newaxis]
        same += decoder.decode(model(frames, training=False).numpy()[0]) == record["text"]
    assert same >= 0.9 * len(wavs)


def _client_frames(pcm16: np.ndarray, mfccs, build: str) -> np.ndarray:
    """libdeepspeech's MFCC frames of a whole clip. Its last frame, from the audio after
    the last full window, is zero-padded by the TensorFlow build (as ours is, frames.py)
    and padded with the previous window's samples by the TFLite build."""
    ours = mfccs(pcm16)
    if build == "tensorflow":
        return ours
    window, step = 512, 320
    full = 1 + (len(pcm16) - window) // step
    rest = pcm16[full * step :]
    previous = (full - 1) * step
    tail = pcm16[previous + len(rest) : previous + window]
    return np.concatenate([ours[:-1], mfccs(np.concatenate([rest, tail]))[:1]])
