import keras
import numpy as np

from deepspeech_core.config import FeatureConfig, ModelConfig
from deepspeech_core.model.network import create_model, rng_variables


def test_full_size_parameter_count():
    model = create_model(ModelConfig(n_hidden=2048), FeatureConfig(), n_classes=29)
    assert model.count_params() == 47_224_861


def test_layout_matches_deepspeech():
    model = create_model(
        ModelConfig(n_hidden=16, relu_clip=20.0), FeatureConfig(), n_classes=29, lstm_impl="keras"
    )
    assert model.get_layer("layer_1").kernel.shape == (494, 16)
    lstm = model.get_layer("lstm")
    # cuDNN-eligible settings, so a GPU takes the fused kernel; forget bias starts at 0.
    assert lstm.activation is keras.activations.tanh
    assert lstm.recurrent_activation is keras.activations.sigmoid
    assert lstm.recurrent_dropout == 0
    assert not lstm.unroll
    assert lstm.use_bias
    np.testing.assert_array_equal(lstm.cell.bias.numpy(), 0)
    assert model.get_layer("layer_6").kernel.shape == (16, 29)
    # Every dropout layer's seed state is in the RNG state that checkpoints must hold.
    rng_ids = {id(v) for v in rng_variables(model)}
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == 4
    assert all(id(layer.seed_generator.state) in rng_ids for layer in dropouts)


def test_outputs_per_frame_and_clipped_relu():
    model = create_model(ModelConfig(n_hidden=8, dropout_rate=0), FeatureConfig(), n_classes=5)
    x = np.random.default_rng(0).normal(size=(3, 11, 26)).astype("float32") * 100
    assert tuple(model(x).shape) == (3, 11, 5)
    layer_1 = keras.Model(model.input, model.get_layer("layer_1_relu").output)
    activations = layer_1(x).numpy()
    assert activations.min() >= 0
    assert activations.max() <= 20.0
    assert (activations == 20.0).any()


def test_per_layer_dropout_overrides():
    cfg = ModelConfig(n_hidden=8, dropout_rate=0.1, dropout_rate3=0.3, dropout_rate6=0.0)
    model = create_model(cfg, FeatureConfig(), n_classes=5)
    rates = {
        n: model.get_layer(f"{n}_dropout").rate
        for n in ("layer_1", "layer_2", "layer_3", "layer_5")
    }
    assert rates == {"layer_1": 0.1, "layer_2": 0.1, "layer_3": 0.3, "layer_5": 0.0}


def test_cpu_lstm_matches_keras_lstm_and_shares_checkpoints():
    """ProjectedLSTM (CPU) and keras.layers.LSTM (cuDNN on GPU): same maths, same weights."""
    cfg = ModelConfig(n_hidden=16, dropout_rate=0)
    cudnn_path = create_model(cfg, FeatureConfig(), 5, lstm_impl="keras")
    cpu_path = create_model(cfg, FeatureConfig(), 5, lstm_impl="projected")
    assert [v.path for v in cudnn_path.weights] == [v.path for v in cpu_path.weights]
    cpu_path.set_weights(cudnn_path.get_weights())
    x = np.random.default_rng(0).normal(size=(3, 20, 26)).astype("float32")
    np.testing.assert_allclose(cpu_path(x).numpy(), cudnn_path(x).numpy(), atol=1e-5)
    grads = []
    for model in (cudnn_path, cpu_path):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        grads.append(tape.gradient(loss, model.trainable_variables))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def test_a_visible_gpu_selects_the_cudnn_lstm(monkeypatch):
    import tensorflow as tf

    from deepspeech_core.model import network as model_module

    fake_gpu = tf.config.LogicalDevice("/device:GPU:0", "GPU")
    monkeypatch.setattr(
        model_module.tf.config,
        "list_logical_devices",
        lambda kind=None: [fake_gpu] if kind == "GPU" else [],
    )
    model = create_model(ModelConfig(n_hidden=8), FeatureConfig(), n_classes=5)
    assert isinstance(model.get_layer("lstm"), keras.layers.LSTM)
    monkeypatch.undo()
    cpu = create_model(ModelConfig(n_hidden=8), FeatureConfig(), n_classes=5)
    assert type(cpu.get_layer("lstm")).__name__ == "ProjectedLSTM"


def test_optional_layer_norm():
    plain = create_model(ModelConfig(n_hidden=8), FeatureConfig(), n_classes=5)
    normed = create_model(ModelConfig(n_hidden=8, layer_norm=True), FeatureConfig(), n_classes=5)
    norms = [layer.name for layer in normed.layers if layer.name.endswith("_norm")]
    assert norms == ["layer_1_norm", "layer_2_norm", "layer_3_norm", "layer_5_norm"]
    assert normed.count_params() == plain.count_params() + 4 * 2 * 8  # gamma and beta


def test_a_seeded_model_ignores_what_others_drew_from_the_global_rng():
    """Issue 11 point 11: initial weights and dropout state are a function of the seed alone.

    In a full test run, the websockets keepalive ping of Prefect's event client (a
    background thread) draws from Python's global `random` every 20 s; unseeded Keras
    initializers draw from it too, so two models built after the same `set_random_seed`
    started from different weights whenever a ping fell in between.
    """
    import random

    def build(seed: int, lstm_impl: str = "projected") -> keras.Model:
        keras.utils.set_random_seed(1)
        random.getrandbits(32)  # what the other thread's ping does, at any moment
        return create_model(
            ModelConfig(n_hidden=8, dropout_rate=0.1),
            FeatureConfig(),
            5,
            lstm_impl=lstm_impl,
            seed=seed,
        )

    def state(model: keras.Model) -> list[np.ndarray]:  # weights, then RNG state in order
        return [np.asarray(v) for v in [*model.weights, *rng_variables(model)]]

    first, second, other = build(5), build(5), build(6)
    assert len(rng_variables(first)) == 4  # the dropout layers' seed generators
    for a, b in zip(state(first), state(second), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.get_layer("layer_2").kernel, other.get_layer("layer_2").kernel)
    kernels = [first.get_layer(f"layer_{n}").kernel.numpy() for n in (2, 3, 5)]
    assert not np.array_equal(kernels[0], kernels[1]), "each layer has a seed of its own"
    assert not np.array_equal(kernels[1], kernels[2])
    # The GPU (cuDNN) LSTM starts from the same weights as the CPU one.
    gpu = build(5, "keras")
    for a, b in zip(first.get_weights(), gpu.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
