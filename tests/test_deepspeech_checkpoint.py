"""DeepSpeech 0.9.x TF1 checkpoints in: same logits as DeepSpeech's own graph.

The checkpoints are written the way DeepSpeech saved them (tf.compat.v1 graph mode, a
`Saver`, its variable names and shapes, Adam slots, best_dev_checkpoint) with random
values; the reference forward pass is written from DeepSpeech 0.9.3's train.py
(`create_overlapping_windows`, `dense`, `rnn_impl_lstmblockfusedcell` = BlockLSTM).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from deepspeech_core.config import FeatureConfig, ModelConfig
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.data.audio_files import read_audio
from deepspeech_core.features.mfcc import audio_to_mfccs
from deepspeech_core.model.checkpoints import (
    CheckpointError,
    ModelSpec,
    load_model,
    transfer_weights,
)
from deepspeech_core.model.deepspeech_checkpoint import (
    CUDNN_COMPATIBLE_CELL,
    FUSED_CELL,
    OPAQUE_KERNEL,
    is_deepspeech_checkpoint,
)

ENGLISH = Alphabet(" abcdefghijklmnopqrstuvwxyz'")  # DeepSpeech's data/alphabet.txt
N_HIDDEN = 24
N_INPUT, N_CONTEXT = 26, 9
RELU_CLIP = 20.0


def deepspeech_variables(rng, n_classes: int, lstm_scope: str) -> dict[str, np.ndarray]:
    """Random values for every variable DeepSpeech's create_model makes (float32)."""
    width = (2 * N_CONTEXT + 1) * N_INPUT

    def draw(*shape):
        return rng.normal(0, 0.3, shape).astype(np.float32)

    values = {}
    for name, (n_in, n_out) in {
        "layer_1": (width, N_HIDDEN),
        "layer_2": (N_HIDDEN, N_HIDDEN),
        "layer_3": (N_HIDDEN, N_HIDDEN),
        "layer_5": (N_HIDDEN, N_HIDDEN),
        "layer_6": (N_HIDDEN, n_classes),
    }.items():
        values[f"{name}/weights"], values[f"{name}/bias"] = draw(n_in, n_out), draw(n_out)
    if lstm_scope == OPAQUE_KERNEL:
        values[OPAQUE_KERNEL] = draw(8 * N_HIDDEN * N_HIDDEN + 8 * N_HIDDEN)
    else:
        values[f"{lstm_scope}/kernel"] = draw(2 * N_HIDDEN, 4 * N_HIDDEN)
        values[f"{lstm_scope}/bias"] = draw(4 * N_HIDDEN)
    return values


def write_tf1_checkpoint(directory: Path, values: dict[str, np.ndarray], alphabet=ENGLISH):
    """Save `values` as DeepSpeech did: graph-mode variables, Adam slots, a Saver."""
    directory.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        for name, value in values.items():
            scope, _, leaf = name.rpartition("/")
            with tf.compat.v1.variable_scope(scope):
                tf.compat.v1.get_variable(leaf, initializer=tf.constant(value))
            # Adam's moment slots, which transfer learning does not carry over.
            tf.compat.v1.Variable(np.ones_like(value), name=f"{name}/Adam")
            tf.compat.v1.Variable(np.ones_like(value), name=f"{name}/Adam_1")
        tf.compat.v1.Variable(0.001, name="learning_rate")
        tf.compat.v1.Variable(np.int64(1234), name="global_step")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(
                session,
                str(directory / "best_dev"),
                global_step=1234,
                latest_filename="best_dev_checkpoint",
            )
    if alphabet is not None:
        alphabet.save(directory / "alphabet.txt")
    return directory


def deepspeech_forward(values, mfccs: np.ndarray, forget_bias: float, lstm_scope: str):
    """DeepSpeech 0.9.3's create_model (inference: no dropout), batch of one, time-major."""
    width = 2 * N_CONTEXT + 1
    eye = np.eye(width * N_INPUT).reshape(width, N_INPUT, width * N_INPUT)
    x = tf.nn.conv1d(mfccs[np.newaxis], tf.constant(eye, tf.float32), stride=1, padding="SAME")
    x = tf.reshape(tf.transpose(tf.reshape(x, [1, -1, width, N_INPUT]), [1, 0, 2, 3]), [-1, 494])

    def dense(name, inputs, relu=True):
        out = tf.nn.bias_add(tf.matmul(inputs, values[f"{name}/weights"]), values[f"{name}/bias"])
        return tf.minimum(tf.nn.relu(out), RELU_CLIP) if relu else out

    layer_3 = dense("layer_3", dense("layer_2", dense("layer_1", x)))
    steps = layer_3.shape[0]
    zeros = tf.zeros([1, N_HIDDEN])
    lstm = tf.raw_ops.BlockLSTM(  # LSTMBlockFusedCell's op
        seq_len_max=tf.constant(steps, tf.int64),
        x=tf.reshape(layer_3, [steps, 1, N_HIDDEN]),
        cs_prev=zeros,
        h_prev=zeros,
        w=values[f"{lstm_scope}/kernel"],
        wci=tf.zeros([N_HIDDEN]),
        wcf=tf.zeros([N_HIDDEN]),
        wco=tf.zeros([N_HIDDEN]),
        b=values[f"{lstm_scope}/bias"],
        forget_bias=forget_bias,
        cell_clip=-1.0,
        use_peephole=False,
    )
    output = tf.reshape(lstm.h, [-1, N_HIDDEN])
    return dense("layer_6", dense("layer_5", output), relu=False).numpy()


@pytest.fixture(scope="module")
def real_mfccs(tiny_cv) -> np.ndarray:
    clip = sorted((tiny_cv / "clips").iterdir())[0]
    audio = read_audio(clip, 16000)
    return audio_to_mfccs(audio.samples.astype(np.float32) / 32768.0, FeatureConfig()).numpy()


@pytest.mark.parametrize(
    ("lstm_scope", "forget_bias"), [(CUDNN_COMPATIBLE_CELL, 0.0), (FUSED_CELL, 1.0)]
)
def test_deepspeech_checkpoint_gives_deepspeech_logits(
    tmp_path, real_mfccs, lstm_scope, forget_bias
):
    values = deepspeech_variables(np.random.default_rng(5), ENGLISH.n_classes, lstm_scope)
    directory = write_tf1_checkpoint(tmp_path / "deepspeech-0.9.3-checkpoint", values)
    assert is_deepspeech_checkpoint(directory)
    expected = deepspeech_forward(values, real_mfccs, forget_bias, lstm_scope)

    model, spec, prefix = load_model(directory)  # evaluate/export read it as they are
    assert prefix.name == "best_dev-1234"
    assert spec.alphabet == ENGLISH
    assert spec.model.n_hidden == N_HIDDEN
    ours = model(real_mfccs[np.newaxis], training=False).numpy()[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 1.0, "a forward pass that does something"

    # --load_checkpoint_dir: the same alphabet loads every layer into a new training.
    target_spec = ModelSpec(ENGLISH, FeatureConfig(), ModelConfig(n_hidden=N_HIDDEN))
    target = target_spec.build()
    copied = transfer_weights(target, target_spec, directory, drop_source_layers=0)
    assert copied == ["layer_1", "layer_2", "layer_3", "lstm", "layer_5", "layer_6"]
    np.testing.assert_allclose(
        target(real_mfccs[np.newaxis], training=False).numpy()[0], expected, rtol=1e-4, atol=1e-4
    )


def test_new_alphabet_needs_drop_source_layers_and_keeps_the_rest(tmp_path, real_mfccs):
    values = deepspeech_variables(
        np.random.default_rng(6), ENGLISH.n_classes, CUDNN_COMPATIBLE_CELL
    )
    directory = write_tf1_checkpoint(tmp_path / "ckpt", values)
    indonesian = Alphabet(" abcdefghijklmnopqrstuvwxyzé")  # same size, other letters
    german = Alphabet(" abcdefghijklmnopqrstuvwxyzäöüß")
    for alphabet in (indonesian, german):
        spec = ModelSpec(alphabet, FeatureConfig(), ModelConfig(n_hidden=N_HIDDEN))
        with pytest.raises(CheckpointError, match="--drop_source_layers 1"):
            transfer_weights(spec.build(), spec, directory, drop_source_layers=0)

    spec = ModelSpec(german, FeatureConfig(), ModelConfig(n_hidden=N_HIDDEN))
    target = spec.build()
    fresh_output = [w.copy() for w in target.get_layer("layer_6").get_weights()]
    copied = transfer_weights(target, spec, directory, drop_source_layers=1)
    assert copied == ["layer_1", "layer_2", "layer_3", "lstm", "layer_5"]
    np.testing.assert_array_equal(
        target.get_layer("layer_1").get_weights()[0], values["layer_1/weights"]
    )
    np.testing.assert_array_equal(
        target.get_layer("layer_5").get_weights()[1], values["layer_5/bias"]
    )
    for kept, fresh in zip(target.get_layer("layer_6").get_weights(), fresh_output, strict=True):
        np.testing.assert_array_equal(kept, fresh)


def test_checkpoint_without_alphabet_takes_the_given_one_when_it_fits(tmp_path):
    values = deepspeech_variables(
        np.random.default_rng(7), ENGLISH.n_classes, CUDNN_COMPATIBLE_CELL
    )
    directory = write_tf1_checkpoint(tmp_path / "ckpt", values, alphabet=None)
    spec = ModelSpec(ENGLISH, FeatureConfig(), ModelConfig(n_hidden=N_HIDDEN))
    assert transfer_weights(spec.build(), spec, directory, 0)[-1] == "layer_6"
    with pytest.raises(CheckpointError, match="no alphabet.txt"):
        load_model(directory)
    wrong = ModelSpec(Alphabet("ab "), FeatureConfig(), ModelConfig(n_hidden=N_HIDDEN))
    with pytest.raises(CheckpointError, match="--alphabet_config_path"):
        transfer_weights(wrong.build(), wrong, directory, 1)


def test_opaque_cudnn_checkpoint_is_refused_with_how_to_convert(tmp_path):
    values = deepspeech_variables(np.random.default_rng(8), ENGLISH.n_classes, OPAQUE_KERNEL)
    directory = write_tf1_checkpoint(tmp_path / "cudnn", values)
    with pytest.raises(CheckpointError, match="--load_cudnn") as info:
        load_model(directory)
    assert "cudnn_compatible_lstm_cell" in str(info.value)


def test_fine_tuning_validates_against_the_checkpoint_alphabet(tmp_path):
    from deepspeech_core.config import PipelineConfig
    from deepspeech_core.train.trainings import alphabet_for

    directory = tmp_path / "deepspeech-0.9.3-checkpoint"
    directory.mkdir()
    ENGLISH.save(directory / "alphabet.txt")
    cfg = PipelineConfig.model_validate(
        {"workdir": str(tmp_path / "w"), "training": {"load_checkpoint_dir": str(directory)}}
    )
    assert alphabet_for(cfg) == directory / "alphabet.txt"
    transfer = cfg.model_copy(
        update={"training": cfg.training.model_copy(update={"drop_source_layers": 1})}
    )
    assert alphabet_for(transfer) is None, "a new language derives its own alphabet"


def test_evaluate_reads_a_deepspeech_checkpoint_and_training_never_writes_into_it(
    tmp_path, tiny_cv
):
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.evaluate.evaluation import evaluate
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.train.loop import train
    from deepspeech_core.train.trainings import has_trained_model
    from tests.helpers import tiny_config

    values = deepspeech_variables(np.random.default_rng(9), ENGLISH.n_classes, FUSED_CELL)
    directory = write_tf1_checkpoint(tmp_path / "deepspeech-0.9.3-checkpoint", values)
    before = sorted(p.name for p in directory.iterdir())
    assert has_trained_model(directory)
    cfg = tiny_config(tmp_path / "work", tiny_cv)
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir, directory / "alphabet.txt")
    features = build_feature_cache(corpus, cfg.features, cfg.workdir)
    report = evaluate(features, directory, cfg.evaluation, tmp_path / "reports")
    assert report.samples > 0
    assert str(report.checkpoint).endswith("best_dev-1234")
    with pytest.raises(CheckpointError, match="--load_checkpoint_dir"):
        train(features, cfg.model, cfg.features, cfg.training, directory)
    assert sorted(p.name for p in directory.iterdir()) == before, "nothing written into it"


def test_training_starts_from_a_deepspeech_checkpoint(tmp_path, tiny_cv):
    """--load_checkpoint_dir with DeepSpeech's checkpoint: every layer, a fresh Adam."""
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.train.loop import train
    from tests.helpers import tiny_config

    values = deepspeech_variables(np.random.default_rng(10), ENGLISH.n_classes, FUSED_CELL)
    directory = write_tf1_checkpoint(tmp_path / "deepspeech-0.9.3-checkpoint", values)
    cfg = tiny_config(
        tmp_path / "work",
        tiny_cv,
        n_hidden=N_HIDDEN,
        epochs=1,
        learning_rate=1e-12,  # keeps the loaded weights (to float precision)
        load_checkpoint_dir=str(directory),
    )
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir, directory / "alphabet.txt")
    features = build_feature_cache(corpus, cfg.features, cfg.workdir)
    manifest = train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
    assert manifest.initialized_from == directory
    model, spec, _ = load_model(cfg.checkpoint_dir, "last")
    assert spec.alphabet == ENGLISH
    np.testing.assert_allclose(
        model.get_layer("layer_2").get_weights()[0], values["layer_2/weights"], atol=1e-6
    )
    kernel = model.get_layer("lstm").get_weights()[1]  # recurrent kernel, gates reordered
    i, j, f, o = np.split(values[f"{FUSED_CELL}/kernel"][N_HIDDEN:], 4, axis=1)
    np.testing.assert_allclose(kernel, np.concatenate([i, f, j, o], axis=1), atol=1e-6)
