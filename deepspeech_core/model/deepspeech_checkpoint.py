"""DeepSpeech 0.9.x checkpoints (TF1, name-based) as a starting point for our model.

DeepSpeech's documented way to train a new language or domain starts from Mozilla's
release checkpoint (`deepspeech-0.9.3-checkpoint/`: `best_dev-*.{index,data-*}`, the
`checkpoint`/`best_dev_checkpoint` state files, `alphabet.txt`, `flags.txt`). Its
variables are named by `train.py`'s `create_model`:

    layer_{1,2,3,5,6}/{weights,bias}        dense layers (weights [in, out])
    layer_{1,2,3,5}/LayerNorm/{gamma,beta}  with --layer_norm
    cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell/{kernel,bias}
                                            the LSTM (0.6 - 0.9: LSTMBlockFusedCell, static
                                            LSTMCell, and what CudnnLSTM saves canonically)
    lstm_fused_cell/{kernel,bias}           the LSTM of DeepSpeech <= 0.5
    cudnn_lstm/opaque_kernel                cuDNN's opaque buffer (GPU trainings)

A TF1 LSTM kernel is one [input + hidden, 4H] matrix with the gates in the order
i, j (the candidate), f, o, and the cell adds `forget_bias` to f's pre-activation (0 in
DeepSpeech >= 0.6, LSTMBlockFusedCell's default 1.0 before). Keras keeps an input
kernel [input, 4H], a recurrent kernel [H, 4H] and gates i, f, c, o with no forget bias
term, so the columns are reordered and the forget bias is folded into the bias.
Optimizer slots (`*/Adam*`) are not carried over: training starts a fresh Adam, as
DeepSpeech's transfer learning does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepspeech_core.config import FeatureConfig, ModelConfig
from deepspeech_core.data.alphabet import Alphabet

CUDNN_COMPATIBLE_CELL = "cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell"
FUSED_CELL = "lstm_fused_cell"
OPAQUE_KERNEL = "cudnn_lstm/opaque_kernel"
# LSTM variable scope -> the forget bias its cell added at run time.
LSTM_LAYOUTS: dict[str, float] = {CUDNN_COMPATIBLE_CELL: 0.0, FUSED_CELL: 1.0}
DENSE_LAYERS = ("layer_1", "layer_2", "layer_3", "layer_5", "layer_6")
# DeepSpeech's state files: --load_train best reads best_dev_checkpoint, last `checkpoint`.
STATE_FILES = ("best_dev_checkpoint", "checkpoint")


class DeepSpeechCheckpointError(ValueError):
    """A DeepSpeech checkpoint cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class DeepSpeechWeights:
    """A DeepSpeech checkpoint's weights in our Keras layout, and what they imply."""

    prefix: Path
    layers: dict[str, list[np.ndarray]]  # layer name -> Keras get_weights() order
    lstm_layout: str
    n_input: int  # (2 * n_context + 1) * n_mfcc: layer_1's input width
    n_hidden: int
    n_classes: int
    layer_norm: bool


def checkpoint_prefix(path: Path) -> Path | None:
    """The checkpoint prefix in `path` (best_dev first, as DeepSpeech), or `path` itself."""
    path = Path(path)
    if path.is_dir():
        for state in STATE_FILES:
            found = tf.train.latest_checkpoint(str(path), latest_filename=state)
            if found:
                return Path(found)
        return None
    return path if Path(f"{path}.index").is_file() else None


def is_deepspeech_checkpoint(path: Path) -> bool:
    """True when `path` holds a TF1 checkpoint with DeepSpeech's variable names."""
    prefix = checkpoint_prefix(path)
    if prefix is None:
        return False
    try:
        names = tf.train.load_checkpoint(str(prefix)).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return False
    return "layer_1/weights" in names and "layer_6/bias" in names


def lstm_to_keras(kernel: np.ndarray, bias: np.ndarray, n_input: int, forget_bias: float):
    """A TF1 LSTM cell's [in+H, 4H] kernel (gates i, j, f, o) -> Keras's three weights."""
    i, j, f, o = np.split(kernel, 4, axis=1)
    bi, bj, bf, bo = np.split(bias, 4)
    reordered = np.concatenate([i, f, j, o], axis=1)
    keras_bias = np.concatenate([bi, bf + forget_bias, bj, bo])
    return [reordered[:n_input], reordered[n_input:], keras_bias.astype(bias.dtype)]


def _lstm_weights(reader, names: set[str], n_input: int) -> tuple[str, list[np.ndarray]]:
    for scope, forget_bias in LSTM_LAYOUTS.items():
        if f"{scope}/kernel" in names and f"{scope}/bias" in names:
            kernel = reader.get_tensor(f"{scope}/kernel")
            bias = reader.get_tensor(f"{scope}/bias")
            return scope, lstm_to_keras(kernel, bias, n_input, forget_bias)
    if OPAQUE_KERNEL in names:
        raise DeepSpeechCheckpointError(
            "this DeepSpeech checkpoint holds its LSTM only as cuDNN's opaque parameter "
            f"buffer ({OPAQUE_KERNEL}), whose layout depends on the cuDNN version. Convert it "
            "once with DeepSpeech 0.9.3 on a GPU machine: continue it for one epoch with "
            "`--load_cudnn --load_checkpoint_dir IN --save_checkpoint_dir OUT` (no "
            "--train_cudnn), which writes the cudnn_compatible_lstm_cell kernel and bias, then "
            "pass OUT here"
        )
    raise DeepSpeechCheckpointError(
        "no LSTM weights in this DeepSpeech checkpoint: expected "
        + " or ".join(f"{scope}/{{kernel,bias}}" for scope in LSTM_LAYOUTS)
    )


def read_weights(path: Path) -> DeepSpeechWeights:
    """Read a DeepSpeech checkpoint's weights (no optimizer slots) in Keras's layout."""
    prefix = checkpoint_prefix(path)
    if prefix is None or not is_deepspeech_checkpoint(prefix):
        raise DeepSpeechCheckpointError(
            f"{path} is not a DeepSpeech checkpoint (no checkpoint state file, or no "
            "layer_1/weights in it)"
        )
    reader = tf.train.load_checkpoint(str(prefix))
    names = set(reader.get_variable_to_shape_map())
    layers: dict[str, list[np.ndarray]] = {}
    for name in DENSE_LAYERS:
        layers[name] = [reader.get_tensor(f"{name}/weights"), reader.get_tensor(f"{name}/bias")]
        if f"{name}/LayerNorm/gamma" in names:
            layers[f"{name}_norm"] = [
                reader.get_tensor(f"{name}/LayerNorm/gamma"),
                reader.get_tensor(f"{name}/LayerNorm/beta"),
            ]
    n_input, n_hidden = layers["layer_1"][0].shape
    layout, layers["lstm"] = _lstm_weights(reader, names, layers["layer_3"][0].shape[1])
    return DeepSpeechWeights(
        prefix=prefix,
        layers=layers,
        lstm_layout=layout,
        n_input=int(n_input),
        n_hidden=int(n_hidden),
        n_classes=int(layers["layer_6"][1].shape[0]),
        layer_norm="layer_1_norm" in layers,
    )


def checkpoint_alphabet(path: Path, given: Alphabet | None, n_classes: int) -> Alphabet:
    """The alphabet the checkpoint's output layer writes: its own alphabet.txt, else `given`.

    DeepSpeech's release checkpoints carry alphabet.txt; for one that does not, the
    alphabet given with --alphabet_config_path is the one it was trained with.
    """
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    own = directory / "alphabet.txt"
    alphabet, source = (Alphabet.load(own), str(own)) if own.is_file() else (given, "given")
    if alphabet is None:
        raise DeepSpeechCheckpointError(
            f"{path} has no alphabet.txt: give the alphabet it was trained with "
            "(--alphabet_config_path, DeepSpeech's data/alphabet.txt for the English release)"
        )
    if alphabet.n_classes != n_classes:
        raise DeepSpeechCheckpointError(
            f"the {source} alphabet has {len(alphabet)} characters but the checkpoint's output "
            f"layer has {n_classes} classes ({n_classes - 1} characters + blank): give the "
            "alphabet the checkpoint was trained with (--alphabet_config_path)"
        )
    return alphabet


def model_config_for(weights: DeepSpeechWeights, base: ModelConfig) -> ModelConfig:
    """`base` with the checkpoint's dimensions (n_hidden, layer_norm)."""
    return base.model_copy(update={"n_hidden": weights.n_hidden, "layer_norm": weights.layer_norm})


def check_features(weights: DeepSpeechWeights, features: FeatureConfig, path: Path) -> None:
    width = (2 * features.n_context + 1) * features.n_input
    if width != weights.n_input:
        raise DeepSpeechCheckpointError(
            f"{path}: layer_1 takes {weights.n_input} inputs, but n_input {features.n_input} "
            f"with n_context {features.n_context} gives {width} (DeepSpeech: 26 and 9)"
        )


def set_weights(model: keras.Model, weights: DeepSpeechWeights, names: list[str]) -> None:
    """Copy the named layers' weights (and their layer norms) into `model`."""
    for name in names:
        model.get_layer(name).set_weights(weights.layers[name])
        if f"{name}_norm" in weights.layers:
            model.get_layer(f"{name}_norm").set_weights(weights.layers[f"{name}_norm"])
