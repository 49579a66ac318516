"""A DeepSpeech-style streaming TFLite model, verified against the Keras model it came from.

The graph is DeepSpeech 0.9.3's `.tflite` layout: one call takes a window of `n_steps`
frames whose context windows are already made, plus the LSTM state, and returns their
logits and the new state:

    input_node        float32 [1, n_steps, 2*n_context+1, n_input]
    previous_state_c  float32 [1, n_hidden]
    previous_state_h  float32 [1, n_hidden]
    -> logits [1, n_steps, n_classes] (raw, not softmax), new_state_c, new_state_h

A fixed window keeps every shape static, so the converter needs only built-in ops and a
device streams audio of any length in constant memory. The graph is the Keras model's
own layers (`model.streaming_logits`), its weights frozen into the flatbuffer. Every
conversion is run on real clips and compared with the Keras model before it is written:
some conversion routes silently produce a model without its weights (NaN or garbage
logits, no error).
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from deepspeech_core.manifests import TFLiteModel
from deepspeech_core.model.checkpoints import ModelSpec
from deepspeech_core.model.network import streaming_logits
from deepspeech_core.workdir.atomic_files import atomic_write_bytes

log = logging.getLogger(__name__)

N_STEPS = 16  # DeepSpeech's --n_steps: frames per call of its streaming TFLite model
SIGNATURE = "serving_default"
FP32_FILE = "model.tflite"
QUANT_FILE = "model.quant.tflite"  # dynamic-range quantised

# Tolerances on `logit_error` (max |TFLite - Keras| relative to max |Keras logit|).
# Measured on real MFCCs and random features, trained (n_hidden 32) and random models
# (n_hidden 32, 256 with and without layer norm, 2048, output layer also scaled x30 so
# logits reach 25-174): fp32 <= 2.7e-6, dynamic-range quantised 0.016-0.12 (the worst
# is n_hidden 32; 0.03 at 2048). Absolute differences do not transfer: they scale with
# the logits (fp32 up to 2.2e-4, quantised up to 12). Zero weights score exactly 1,
# random weights ~1.35, NaN weights fail the finiteness check.
FP32_TOLERANCE = 1e-4
QUANT_TOLERANCE = 0.3


class TFLiteMismatchError(ValueError):
    """A converted TFLite model does not compute what the Keras model computes."""


class StreamingGraph(tf.Module):
    """The streaming graph (`step`) of a float32 Keras model: `model.streaming_logits`.

    The model's own layers and weights (no second copy of the maths): no dropout, layer
    norm when the model has it. The weights stay variables tracked by this module: the
    converter then freezes them several times faster and in a quarter of the memory of
    the same weights as graph constants (docs/PERFORMANCE.md, "TFLite conversion"); and
    saving refuses an untracked variable loudly instead of converting a model without it.
    """

    def __init__(self, model: keras.Model, spec: ModelSpec, n_steps: int = N_STEPS) -> None:
        super().__init__(name="deepspeech_streaming")
        features, self.cfg = spec.features, spec.model
        self.n_steps, self.n_classes = n_steps, spec.alphabet.n_classes
        self.width, self.n_input = 2 * features.n_context + 1, features.n_input
        self.model = model
        self.model_variables = [v.value for v in model.weights]
        n_hidden = self.cfg.n_hidden
        self.state_specs = [
            tf.TensorSpec([1, n_hidden], tf.float32, "previous_state_c"),
            tf.TensorSpec([1, n_hidden], tf.float32, "previous_state_h"),
        ]
        self.input_spec = tf.TensorSpec(
            [1, n_steps, self.width, self.n_input], tf.float32, "input_node"
        )
        self.step = tf.function(self._step, input_signature=[self.input_spec, *self.state_specs])

    def logits(self, input_node, previous_state_c, previous_state_h, lstm=None):
        """Raw logits [n_steps, n_classes] and the new state, from model.streaming_logits."""
        windows = tf.reshape(input_node, [self.n_steps, self.width * self.n_input])
        return streaming_logits(self.model, windows, previous_state_c, previous_state_h, lstm)

    def _step(self, input_node, previous_state_c, previous_state_h) -> dict[str, tf.Tensor]:
        logits, c, h = self.logits(input_node, previous_state_c, previous_state_h)
        return {
            "logits": tf.reshape(logits, [1, self.n_steps, self.n_classes]),
            "new_state_c": c,
            "new_state_h": h,
        }


def convert_tflite(
    model: keras.Model, spec: ModelSpec, quantize: bool, n_steps: int = N_STEPS
) -> bytes:
    """The streaming graph as a .tflite flatbuffer: float32, or dynamic-range int8 weights.

    Dynamic-range quantisation needs no representative data: weights are stored as int8
    and activations quantised on the fly, about 4x smaller. The route is the documented
    one (SavedModel with a named signature, then the converter), which keeps the tensor
    names and freezes the variables into the flatbuffer.
    """
    graph = StreamingGraph(model, spec, n_steps)
    with tempfile.TemporaryDirectory(prefix="tflite-export-") as tmp:
        tf.saved_model.save(graph, tmp, signatures={SIGNATURE: graph.step.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def make_interpreter(tflite: bytes | Path, num_threads: int | None = None) -> tf.lite.Interpreter:
    """A TFLite interpreter: LiteRT's when installed, else TF's (its warning silenced)."""
    content = tflite if isinstance(tflite, bytes) else Path(tflite).read_bytes()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter  # noqa: N806  (deprecated in TF, still works)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return Interpreter(model_content=content, num_threads=num_threads)


def _windows(frames: np.ndarray, width: int) -> np.ndarray:
    """[n + width - 1, n_input] -> [n, width, n_input] context windows (views, no copy)."""
    return np.lib.stride_tricks.sliding_window_view(frames, width, axis=0).transpose(0, 2, 1)


class TFLiteStreamer:
    """Runs the streaming TFLite model over features of any length in constant memory.

    `logits(features)` does a whole utterance. To stream, call `feed(frames)` with each
    chunk as it arrives (it returns the logits of every frame whose right context is
    complete) and `finish()` at the end of the utterance; `run_window` is the raw model
    call for callers that make their own windows. The LSTM state is carried across
    windows and reset by `reset()` and `finish()`.
    """

    def __init__(
        self, tflite: bytes | Path | None, num_threads: int | None = None, runner=None
    ) -> None:
        """`runner` (instead of `tflite`): any callable with a signature runner's interface."""
        if runner is None:
            if tflite is None:
                raise ValueError("TFLiteStreamer needs a .tflite model (or a runner)")
            runner = make_interpreter(tflite, num_threads).get_signature_runner(SIGNATURE)
        self._runner = runner
        inputs = self._runner.get_input_details()
        _, self.n_steps, self.width, self.n_input = inputs["input_node"]["shape"]
        self.n_hidden = int(inputs["previous_state_c"]["shape"][1])
        self.n_classes = int(self._runner.get_output_details()["logits"]["shape"][-1])
        self.n_context = (self.width - 1) // 2
        self.reset()

    def reset(self) -> None:
        """Start a new utterance: zero LSTM state, left context of zero frames."""
        self._c = np.zeros((1, self.n_hidden), np.float32)
        self._h = np.zeros((1, self.n_hidden), np.float32)
        self._frames = np.zeros((self.n_context, self.n_input), np.float32)

    def run_window(self, windows: np.ndarray) -> np.ndarray:
        """One model call: context windows [n_steps, width, n_input] -> [n_steps, classes]."""
        out = self._runner(
            input_node=np.ascontiguousarray(windows, np.float32)[np.newaxis],
            previous_state_c=self._c,
            previous_state_h=self._h,
        )
        self._c, self._h = out["new_state_c"], out["new_state_h"]
        return out["logits"].reshape(self.n_steps, self.n_classes)  # any batch/time layout

    def feed(self, frames: np.ndarray) -> np.ndarray:
        """Logits [k, classes] of the frames whose windows are now complete."""
        frames = np.asarray(frames, np.float32).reshape(-1, self.n_input)
        self._frames = np.concatenate([self._frames, frames])
        span = self.n_steps + self.width - 1  # frames that make one window of n_steps
        out = [np.zeros((0, self.n_classes), np.float32)]
        while len(self._frames) >= span:
            out.append(self.run_window(_windows(self._frames[:span], self.width)))
            self._frames = self._frames[self.n_steps :]
        self._frames = self._frames.copy()  # do not keep the caller's whole array alive
        return np.concatenate(out)

    def finish(self) -> np.ndarray:
        """Logits of the frames still owed: right context of zeros, last window padded."""
        out = [self.feed(np.zeros((self.n_context, self.n_input), np.float32))]
        owed = len(self._frames) - (self.width - 1)
        if owed > 0:
            padded = np.zeros((self.n_steps + self.width - 1, self.n_input), np.float32)
            padded[: len(self._frames)] = self._frames
            out.append(self.run_window(_windows(padded, self.width))[:owed])
        self.reset()
        return np.concatenate(out)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits [T, n_classes] of one utterance's features [T, n_input]."""
        self.reset()
        return np.concatenate([self.feed(features), self.finish()])


def keras_logits(model: keras.Model, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The Keras model's full-utterance logits of each clip (one trace for every length)."""
    n_input = model.input_shape[-1]

    @tf.function(input_signature=[tf.TensorSpec([1, None, n_input], tf.float32)])
    def run(features):
        return tf.cast(model(features, training=False), tf.float32)

    return [run(np.asarray(f, np.float32)[np.newaxis]).numpy()[0] for f in clips]


def logit_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: the difference relative to the logits' scale.

    Quantisation error grows with the logits' magnitude (an untrained model's logits
    stay below 1, a trained one's reach tens), so a relative bound transfers between
    model sizes and training stages where an absolute one does not; and a model that
    lost its weights (zero logits) scores 1 whatever the scale.
    """
    if not len(want):
        return 0.0
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


class Fidelity(NamedTuple):
    """How far a TFLite model's streamed logits are from the Keras model's, worst clip."""

    max_abs_diff: float
    error: float  # `logit_error`, the figure compared with the tolerance


def check_streamed(
    tflite: bytes | Path,
    references: Sequence[np.ndarray],
    clips: Sequence[np.ndarray],
    tolerance: float,
    what: str,
    streamer: TFLiteStreamer | None = None,
) -> Fidelity:
    """Stream every clip through `tflite` (or `streamer`); raise unless all logits match."""
    if not len(clips):
        raise ValueError(f"no clips to verify the {what} TFLite model on: give at least one")
    streamer = streamer or TFLiteStreamer(tflite)
    max_abs, max_err = 0.0, 0.0
    for i, (features, want) in enumerate(zip(clips, references, strict=True)):
        if not np.all(np.isfinite(want)):
            raise ValueError(
                f"the Keras model's own logits are not finite on clip {i}: the checkpoint is "
                "broken, there is nothing to verify the TFLite model against"
            )
        got = streamer.logits(features)
        if not np.all(np.isfinite(got)):
            raise TFLiteMismatchError(
                f"the {what} TFLite model gives non-finite logits on clip {i}: the conversion "
                "lost or corrupted its weights. Do not ship it; re-export from the checkpoint "
                "and, if it persists, check the TensorFlow version's converter."
            )
        max_abs = max(max_abs, float(np.max(np.abs(got - want), initial=0.0)))
        max_err = max(max_err, logit_error(got, want))
    if max_err > tolerance:
        raise TFLiteMismatchError(
            f"the {what} TFLite model's logits differ from the Keras model's by {max_err:.3g} "
            f"of their scale ({max_abs:.3g} absolute), more than the tolerance "
            f"{tolerance:.3g}: the conversion changed the model (e.g. lost its weights). Do "
            "not ship it; re-export, and raise the tolerance only if the cause is understood."
        )
    return Fidelity(max_abs, max_err)


def verify_tflite(
    tflite: bytes | Path, model: keras.Model, clips: Sequence[np.ndarray], tolerance: float
) -> Fidelity:
    """Streamed TFLite logits vs the Keras model's full-utterance logits over `clips`.

    Raises TFLiteMismatchError on non-finite logits or when `logit_error` exceeds
    `tolerance` (FP32_TOLERANCE, QUANT_TOLERANCE).
    """
    return check_streamed(tflite, keras_logits(model, clips), clips, tolerance, "converted")


def _write_verified(
    path: Path,
    model: keras.Model,
    spec: ModelSpec,
    quantize: bool,
    n_steps: int,
    clips: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    tolerance: float,
) -> TFLiteModel:
    """Convert, verify, and only then write `path` atomically."""
    started = time.perf_counter()
    tflite = convert_tflite(model, spec, quantize, n_steps)
    fidelity = check_streamed(tflite, references, clips, tolerance, path.name)
    atomic_write_bytes(path, tflite)
    log.info(
        "%s: %.2f MB, max |logit diff| %.3g (%.3g of scale, tolerance %.3g), %.1f s",
        path.name,
        len(tflite) / 1e6,
        fidelity.max_abs_diff,
        fidelity.error,
        tolerance,
        time.perf_counter() - started,
    )
    return TFLiteModel(
        size_bytes=len(tflite),
        max_abs_diff=fidelity.max_abs_diff,
        error=fidelity.error,
        tolerance=tolerance,
    )


def export_tflite(
    model: keras.Model,
    spec: ModelSpec,
    out_dir: Path,
    clips: Sequence[np.ndarray],
    fp32_tolerance: float = FP32_TOLERANCE,
    quant_tolerance: float = QUANT_TOLERANCE,
    n_steps: int = N_STEPS,
) -> dict[str, TFLiteModel]:
    """Write FP32_FILE and QUANT_FILE into `out_dir`, each verified on `clips` first.

    `clips` are feature arrays [T, n_input] of real speech (e.g. the test split): the
    Keras model's logits on them are computed once and both conversions must match them.
    Returns what was written, by file name.
    """
    references = keras_logits(model, clips)
    return {
        name: _write_verified(
            Path(out_dir) / name, model, spec, quantize, n_steps, clips, references, tolerance
        )
        for name, quantize, tolerance in (
            (FP32_FILE, False, fp32_tolerance),
            (QUANT_FILE, True, quant_tolerance),
        )
    }
