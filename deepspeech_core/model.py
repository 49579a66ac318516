"""The DeepSpeech 0.9.3 acoustic model in Keras 3.

features [batch, time, 26] -> context windows (19 x 26 = 494) -> 3 x dense n_hidden
(ReLU clipped at 20, dropout) -> unidirectional LSTM n_hidden -> dense n_hidden (clipped
ReLU, dropout) -> linear alphabet+1 logits (the last class is the CTC blank).

Layer names are fixed (layer_1 ... layer_6, lstm) because checkpoints key weights by
them. The LSTM keeps Keras's cuDNN-compatible settings (tanh/sigmoid, no recurrent
dropout, not unrolled) so it takes the cuDNN kernel on a GPU; its forget-gate bias
starts at 0, as DeepSpeech's `forget_bias=0` cuDNN-compatible cell.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from deepspeech_core.config import FeatureConfig, ModelConfig
from deepspeech_core.features import context_windows


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


def _dense_block(x, name: str, units: int, cfg: ModelConfig, dropout_rate: float, dtype=None):
    """DeepSpeech's `dense()`: matmul+bias, clipped ReLU, optional layer norm, dropout.

    The dropout layer exists even at rate 0, so checkpoints keep one layout.
    """
    x = keras.layers.Dense(units, kernel_initializer="glorot_uniform", name=name, dtype=dtype)(x)
    x = keras.layers.ReLU(max_value=cfg.relu_clip, name=f"{name}_relu", dtype=dtype)(x)
    if cfg.layer_norm:
        x = keras.layers.LayerNormalization(name=f"{name}_norm", dtype=dtype)(x)
    return keras.layers.Dropout(dropout_rate, name=f"{name}_dropout", dtype=dtype)(x)


def create_model(
    model: ModelConfig, features: FeatureConfig, n_classes: int, dtype_policy: str | None = None
) -> keras.Model:
    """Build the acoustic model; `n_classes` is the alphabet size plus one (blank).

    `dtype_policy` ("mixed_bfloat16", "mixed_float16") computes in half precision with
    float32 variables, so checkpoints load into either; the logits stay float32 for CTC.
    """
    dt = dtype_policy
    inputs = keras.Input(shape=(None, features.n_input), name="features")
    x = ContextWindows(features.n_context, name="context_windows", dtype=dt)(inputs)
    x = _dense_block(x, "layer_1", model.n_hidden, model, model.dropout_for(1), dt)
    x = _dense_block(x, "layer_2", model.n_hidden, model, model.dropout_for(2), dt)
    x = _dense_block(x, "layer_3", model.n_hidden, model, model.dropout_for(3), dt)
    x = keras.layers.LSTM(
        model.n_hidden, return_sequences=True, unit_forget_bias=False, name="lstm", dtype=dt
    )(x)
    x = _dense_block(x, "layer_5", model.n_hidden, model, model.dropout_for(5), dt)
    logits = keras.layers.Dense(
        n_classes, kernel_initializer="glorot_uniform", name="layer_6", dtype="float32"
    )(x)
    return keras.Model(inputs, logits, name="deepspeech")


def rng_variables(model: keras.Model) -> list:
    """Dropout RNG state: model variables that `model.weights` does not list.

    Checkpoints must hold these too, or a resumed run draws different dropout masks.
    """
    weight_ids = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]
