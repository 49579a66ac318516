"""The DeepSpeech 0.9.3 acoustic model in Keras 3.

features [batch, time, 26] -> context windows (19 x 26 = 494) -> [feature normalisation,
with --feature_norm] -> 3 x dense n_hidden
(ReLU clipped at 20, dropout) -> unidirectional LSTM n_hidden -> dense n_hidden (clipped
ReLU, dropout) -> linear alphabet+1 logits (the last class is the CTC blank).

Layer names are fixed (layer_1 ... layer_6, lstm) because checkpoints key weights by
them. On a GPU the LSTM is Keras's, with its cuDNN-compatible settings (tanh/sigmoid,
no recurrent dropout, not unrolled) so it takes the cuDNN kernel; on a CPU it is
`ProjectedLSTM`, the same maths and weight layout, faster there. Either way the
forget-gate bias starts at 0, as DeepSpeech's `forget_bias=0` cuDNN-compatible cell.

Given a seed, every initializer and dropout layer gets its own seed derived from it
and the layer's name, so the initial weights and dropout masks are a function of the
seed alone. Keras's unseeded defaults draw from Python's process-wide `random`, which
any library thread may draw from too (the websockets keepalive ping of Prefect's event
client does, every 20 s): two models built after the same `set_random_seed` could then
start from different weights.
"""

from __future__ import annotations

import zlib

import keras
import numpy as np
import tensorflow as tf

from deepspeech_core.config import FeatureConfig, ModelConfig
from deepspeech_core.features.mfcc import context_windows


@keras.saving.register_keras_serializable(package="deepspeech_core")
class ContextWindows(keras.layers.Layer):
    """Joins each MFCC frame with n_context frames either side (zero-padded)."""

    def __init__(self, n_context: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_context = n_context

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return context_windows(inputs, self.n_context)

    def compute_output_shape(self, input_shape):
        batch, time, n_input = input_shape
        return (batch, time, (2 * self.n_context + 1) * n_input)

    def get_config(self) -> dict:
        return {**super().get_config(), "n_context": self.n_context}


@keras.saving.register_keras_serializable(package="deepspeech_core")
class FeatureNormalization(keras.layers.Layer):
    """(x - mean) / std per MFCC coefficient, applied to context windows.

    It sits after ContextWindows, so the zero frames that pad an utterance's ends are
    normalised like any frame: every streaming graph (our TFLite, DeepSpeech's
    output_graph.*) and every client (libdeepspeech pads with zero MFCCs) then sees
    exactly what training saw. The statistics are non-trainable weights, so checkpoints
    and exports carry them; they start as the identity (mean 0, std 1) until
    `set_feature_statistics` gives them the training features' values.
    """

    def __init__(self, n_input: int, width: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_input, self.width = n_input, width

    def build(self, input_shape) -> None:
        self.mean = self.add_weight(
            name="mean", shape=(self.n_input,), initializer="zeros", trainable=False
        )
        self.std = self.add_weight(
            name="std", shape=(self.n_input,), initializer="ones", trainable=False
        )

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        # x * scale + offset, not (x - mean) / std: the TensorFlow client has no Sub kernel,
        # and the streaming graphs compute it the same way (`normalize_windows`).
        scale = tf.tile(1.0 / self.std, [self.width])
        offset = tf.tile(-self.mean / self.std, [self.width])
        return inputs * tf.cast(scale, inputs.dtype) + tf.cast(offset, inputs.dtype)

    def window_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) over a whole context window, as float32 arrays (eager)."""
        mean = np.asarray(self.mean.numpy(), np.float32)
        std = np.asarray(self.std.numpy(), np.float32)
        return np.tile(1.0 / std, self.width), np.tile(-mean / std, self.width)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "n_input": self.n_input, "width": self.width}


FEATURE_NORM = "feature_norm"  # the FeatureNormalization layer's name


def feature_norm_layer(model: keras.Model) -> FeatureNormalization | None:
    """The model's FeatureNormalization layer, or None (a model trained without one)."""
    return next((layer for layer in model.layers if layer.name == FEATURE_NORM), None)


def set_feature_statistics(model: keras.Model, mean: np.ndarray, std: np.ndarray) -> None:
    """Give the model's normalisation layer the training features' statistics."""
    layer = feature_norm_layer(model)
    if layer is None:
        raise ValueError("the model has no feature normalisation layer (--feature_norm is off)")
    layer.mean.assign(np.asarray(mean, np.float32))
    layer.std.assign(np.asarray(std, np.float32))


def feature_statistics(model: keras.Model) -> dict[str, list[float]] | None:
    """{'mean': [...], 'std': [...]} the model normalises its features with, or None."""
    layer = feature_norm_layer(model)
    if layer is None:
        return None
    return {
        "mean": [float(v) for v in layer.mean.numpy()],
        "std": [float(v) for v in layer.std.numpy()],
    }


def normalize_windows(model: keras.Model, windows: tf.Tensor) -> tf.Tensor:
    """Flattened context windows [n, width*n_input] normalised as the model does.

    The statistics are read eagerly (`tf.init_scope`) and enter the traced graph as
    constants, so exported graphs hold one Mul and one Add (kernels every client has).
    """
    layer = feature_norm_layer(model)
    if layer is None:
        return windows
    with tf.init_scope():
        scale, offset = layer.window_affine()
    return windows * tf.constant(scale) + tf.constant(offset)


class _LSTMWeights(keras.layers.Layer):
    """The weights of an LSTM, laid out and named exactly as keras.layers.LSTM's cell.

    Keeping `lstm/lstm_cell/{kernel,recurrent_kernel,bias}` means a checkpoint written
    by the CPU layer loads into Keras's LSTM (cuDNN on a GPU) and back.
    """

    def __init__(self, units: int, seed: int | None = None, **kwargs) -> None:
        super().__init__(name="lstm_cell", **kwargs)
        self.units = units
        self.seed = seed

    def build(self, input_shape) -> None:
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], 4 * self.units),
            initializer=keras.initializers.GlorotUniform(layer_seed(self.seed, "lstm/kernel")),
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(self.units, 4 * self.units),
            initializer=keras.initializers.Orthogonal(seed=layer_seed(self.seed, "lstm/recurrent")),
        )
        self.bias = self.add_weight(name="bias", shape=(4 * self.units,), initializer="zeros")


def lstm_cell(z: tf.Tensor, c: tf.Tensor):
    """One LSTM step: new (h, c) and the gates from z = x @ kernel + h @ recurrent + bias.

    Keras's gate order (i, f, c, o) and maths with forget bias 0, as DeepSpeech's
    cuDNN-compatible cell. Training (`lstm_recurrence`) and every exported streaming
    graph (`stream_lstm`) take their step from here.
    """
    i, f, g, o = tf.split(z, 4, axis=-1)
    i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
    c = f * c + i * g
    return o * tf.tanh(c), c, (i, f, g, o)


@tf.custom_gradient
def lstm_recurrence(projected: tf.Tensor, recurrent: tf.Tensor):
    """Hidden states [time, batch, H] of an LSTM given its input projection.

    `projected` is x @ kernel + bias for every frame [time, batch, 4H] (gates i, f, c, o
    as Keras orders them); `recurrent` is the [H, 4H] recurrent kernel. The hand-written
    gradient keeps the per-frame work to one [batch, 4H] x [4H, H] matmul and computes
    the recurrent kernel's gradient as one large matmul over all frames after the loop,
    instead of an outer product per frame as automatic differentiation of the loop does.
    """
    batch = tf.shape(projected)[1]
    units = tf.shape(recurrent)[0]
    zeros = tf.zeros([batch, units], projected.dtype)

    def forward(carry, z_t):
        h, c = carry[0], carry[1]
        h, c, (i, f, g, o) = lstm_cell(z_t + tf.matmul(h, recurrent), c)
        return h, c, i, f, g, o

    hs, cs, i_s, f_s, g_s, o_s = tf.scan(forward, projected, initializer=(zeros,) * 6)

    def grad(d_hidden: tf.Tensor):
        recurrent_t = tf.transpose(recurrent)  # once, not per frame
        h_prev = tf.concat([zeros[tf.newaxis], hs[:-1]], axis=0)
        c_prev = tf.concat([zeros[tf.newaxis], cs[:-1]], axis=0)
        tanh_c = tf.tanh(cs)

        def backward(carry, frame):
            dh_recurrent, dc_next, _ = carry
            dh_out, i, f, g, o, c_before, tanh_c_t = frame
            dh = dh_out + dh_recurrent
            dc = dc_next + dh * o * (1 - tanh_c_t * tanh_c_t)
            dz = tf.concat(
                [
                    dc * g * i * (1 - i),
                    dc * c_before * f * (1 - f),
                    dc * i * (1 - g * g),
                    dh * tanh_c_t * o * (1 - o),
                ],
                axis=-1,
            )
            return tf.matmul(dz, recurrent_t), dc * f, dz

        _, _, d_projected = tf.scan(
            backward,
            (d_hidden, i_s, f_s, g_s, o_s, c_prev, tanh_c),
            initializer=(zeros, zeros, tf.zeros([batch, 4 * units], projected.dtype)),
            reverse=True,
        )
        d_recurrent = tf.einsum("tbh,tbk->hk", h_prev, d_projected)
        return d_projected, d_recurrent

    return hs, grad


@keras.saving.register_keras_serializable(package="deepspeech_core")
class ProjectedLSTM(keras.layers.Layer):
    """Keras's LSTM maths (gates i, f, c, o; forget bias 0) made fast on a CPU.

    Keras's CPU LSTM multiplies the inputs by the kernel one frame at a time. Here the
    input projection of all frames is one large matmul before the recurrence, the time
    loop only does the small recurrent matmul, and the backward pass is hand-written
    (`lstm_recurrence`) so the recurrent kernel's gradient is one large matmul too.
    """

    def __init__(self, units: int, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.seed = seed
        self.cell = _LSTMWeights(units, seed, dtype=self.dtype_policy)

    def build(self, input_shape) -> None:
        self.cell.build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        kernel = tf.cast(self.cell.kernel, self.compute_dtype)
        recurrent = tf.cast(self.cell.recurrent_kernel, self.compute_dtype)
        bias = tf.cast(self.cell.bias, self.compute_dtype)
        projected = tf.einsum("btd,dk->tbk", inputs, kernel) + bias  # [time, batch, 4H]
        return tf.transpose(lstm_recurrence(projected, recurrent), [1, 0, 2])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "seed": self.seed}


def layer_seed(seed: int | None, name: str) -> int | None:
    """A seed of its own for the weight or layer `name`, derived from the model's seed.

    None (no seed) keeps Keras's default: a draw from Python's global `random`.
    """
    if seed is None:
        return None
    return zlib.crc32(f"{seed}/{name}".encode()) % (2**31 - 1) + 1


def _lstm(units: int, impl: str, dtype, seed: int | None) -> keras.layers.Layer:
    """cuDNN-eligible keras LSTM on a GPU (or when asked), the projected LSTM on a CPU."""
    if impl == "auto":
        impl = "keras" if tf.config.list_logical_devices("GPU") else "projected"
    if impl == "keras":
        return keras.layers.LSTM(
            units,
            return_sequences=True,
            unit_forget_bias=False,
            kernel_initializer=keras.initializers.GlorotUniform(layer_seed(seed, "lstm/kernel")),
            recurrent_initializer=keras.initializers.Orthogonal(
                seed=layer_seed(seed, "lstm/recurrent")
            ),
            seed=layer_seed(seed, "lstm/dropout"),
            name="lstm",
            dtype=dtype,
        )
    return ProjectedLSTM(units, seed=seed, name="lstm", dtype=dtype)


def _dense_block(
    x, name: str, units: int, cfg: ModelConfig, dropout_rate: float, dtype, seed: int | None
):
    """DeepSpeech's `dense()`: matmul+bias, clipped ReLU, optional layer norm, dropout.

    The dropout layer exists even at rate 0, so checkpoints keep one layout.
    """
    kernel = keras.initializers.GlorotUniform(layer_seed(seed, f"{name}/kernel"))
    x = keras.layers.Dense(units, kernel_initializer=kernel, name=name, dtype=dtype)(x)
    x = keras.layers.ReLU(max_value=cfg.relu_clip, name=f"{name}_relu", dtype=dtype)(x)
    if cfg.layer_norm:
        x = keras.layers.LayerNormalization(name=f"{name}_norm", dtype=dtype)(x)
    dropout_seed = layer_seed(seed, f"{name}_dropout")
    return keras.layers.Dropout(
        dropout_rate, seed=dropout_seed, name=f"{name}_dropout", dtype=dtype
    )(x)


def create_model(
    model: ModelConfig,
    features: FeatureConfig,
    n_classes: int,
    dtype_policy: str | None = None,
    lstm_impl: str = "auto",
    seed: int | None = None,
) -> keras.Model:
    """Build the acoustic model; `n_classes` is the alphabet size plus one (blank).

    `dtype_policy` ("mixed_bfloat16", "mixed_float16") computes in half precision with
    float32 variables, so checkpoints load into either; the logits stay float32 for CTC.
    `seed` fixes the initial weights and dropout masks (see the module docstring).
    """
    dt = dtype_policy
    inputs = keras.Input(shape=(None, features.n_input), name="features")
    x = ContextWindows(features.n_context, name="context_windows", dtype=dt)(inputs)
    if model.feature_norm:
        width = 2 * features.n_context + 1
        x = FeatureNormalization(features.n_input, width, name=FEATURE_NORM, dtype=dt)(x)
    for n in (1, 2, 3):
        x = _dense_block(x, f"layer_{n}", model.n_hidden, model, model.dropout_for(n), dt, seed)
    x = _lstm(model.n_hidden, lstm_impl, dt, seed)(x)
    x = _dense_block(x, "layer_5", model.n_hidden, model, model.dropout_for(5), dt, seed)
    logits = keras.layers.Dense(
        n_classes,
        kernel_initializer=keras.initializers.GlorotUniform(layer_seed(seed, "layer_6/kernel")),
        name="layer_6",
        dtype="float32",
    )(x)
    return keras.Model(inputs, logits, name="deepspeech")


def rng_variables(model: keras.Model) -> list:
    """Dropout RNG state: model variables that `model.weights` does not list.

    Checkpoints must hold these too, or a resumed run draws different dropout masks.
    """
    weight_ids = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]


# The streaming network: the same layers and weights as `create_model`, run on a window
# of frames whose context windows are already made, with the LSTM state carried in and
# out. Every exported streaming graph (our TFLite, DeepSpeech's output_graph.tflite and
# output_graph.pb) is built from `streaming_logits`, so there is one network definition.

HIDDEN_BLOCKS = ("layer_1", "layer_2", "layer_3")  # dense blocks before the LSTM


def dense_block(model: keras.Model, name: str, x: tf.Tensor) -> tf.Tensor:
    """`model`'s dense block `name` in inference mode: its Dense, ReLU and norm layers."""
    x = model.get_layer(f"{name}_relu")(model.get_layer(name)(x))
    if any(layer.name == f"{name}_norm" for layer in model.layers):
        x = model.get_layer(f"{name}_norm")(x)
    return x  # dropout is the identity at inference


def lstm_weights(model: keras.Model) -> tuple:
    """(kernel, recurrent_kernel, bias) of the LSTM; Keras's LSTM and ProjectedLSTM agree."""
    cell = model.get_layer("lstm").cell
    return cell.kernel, cell.recurrent_kernel, cell.bias


def stream_lstm(model: keras.Model, x: tf.Tensor, c: tf.Tensor, h: tf.Tensor):
    """The LSTM over frames x [n, D] from state (c, h) [1, H]: outputs [n, H], c, h.

    The input projection of all frames is one matmul and the loop over the (static)
    frames is unrolled in Python, so the graph has no control flow for a converter.
    """
    kernel, recurrent, bias = lstm_weights(model)
    projected = tf.matmul(x, kernel) + bias
    hidden = []
    for z in tf.unstack(projected, axis=0):
        h, c, _ = lstm_cell(z[tf.newaxis] + tf.matmul(h, recurrent), c)
        hidden.append(h)
    return tf.concat(hidden, axis=0), c, h


def streaming_logits(model: keras.Model, windows: tf.Tensor, c: tf.Tensor, h: tf.Tensor, lstm=None):
    """Raw logits [n, n_classes] and the new LSTM state of n frames' context windows.

    `windows` [n, (2*n_context+1)*n_input] are flattened as the ContextWindows layer
    makes them; `lstm` replaces `stream_lstm` by another kernel of the same LSTM (the
    TensorFlow client's graph uses TensorFlow's fused BlockLSTM op).
    """
    x = normalize_windows(model, windows)
    for name in HIDDEN_BLOCKS:
        x = dense_block(model, name, x)
    x, c, h = (lstm or stream_lstm)(model, x, c, h)
    x = dense_block(model, "layer_5", x)
    return model.get_layer("layer_6")(x), c, h
