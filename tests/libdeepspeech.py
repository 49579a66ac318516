"""The real DeepSpeech 0.9.3 client library for tests, run in a subprocess.

`make deepspeech-clients` (deepspeech_core.deepspeech_client) caches the `deepspeech` and
`deepspeech-tflite` 0.9.3 wheels' libdeepspeech.so (cp39 manylinux1, what DeepSpeech's
Python clients install); it is called through its C API with ctypes in a child process,
so a crash in the library fails the test instead of killing pytest.

`write_client_graph` writes a model libdeepspeech's TensorFlow build loads: the frozen
TF1 streaming graph DeepSpeech's `create_inference_graph` exports (input_node
[1, 16, 19, 26], previous_state_c/h, input_samples -> mfccs, softmax `logits`
[16, 1, classes], new_state_c/h, the metadata constants), holding our model's weights.
It is the smallest thing that lets the scorer tests decode real audio with the real
client; the product's own DeepSpeech export is the export stage's business.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

N_STEPS = 16


def library(build: str = "tensorflow") -> Path | None:
    """libdeepspeech.so of that build (fetched once into the cache), or None offline."""
    from deepspeech_core.deepspeech_client import ClientUnavailableError, fetch_library

    try:
        return fetch_library(build)
    except ClientUnavailableError:
        return None


def lstm_from_keras(kernel, recurrent, bias):
    """Keras's LSTM weights (gates i, f, c, o) as BlockLSTM's [in+H, 4H] (i, c, f, o)."""
    w = np.concatenate([kernel, recurrent], axis=0)
    i, f, g, o = np.split(w, 4, axis=1)
    bi, bf, bg, bo = np.split(bias, 4)
    return np.concatenate([i, g, f, o], axis=1), np.concatenate([bi, bg, bf, bo])


def write_client_graph(model, spec, path: Path) -> Path:
    """A frozen output_graph.pb of `model` (our Keras model) that libdeepspeech runs."""
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    from deepspeech_core.deepspeech_export import alphabet_labels, serialize_alphabet
    from deepspeech_core.features import audio_to_mfccs

    weights = {
        name: model.get_layer(name).get_weights()
        for name in ("layer_1", "layer_2", "layer_3", "lstm", "layer_5", "layer_6")
    }
    features, hidden = spec.features, spec.model.n_hidden
    width = 2 * features.n_context + 1
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        samples = v1.placeholder(tf.float32, [features.window_samples], name="input_samples")
        tf.identity(audio_to_mfccs(samples, features), name="mfccs")
        x = v1.placeholder(tf.float32, [1, N_STEPS, width, features.n_input], name="input_node")
        v1.placeholder(tf.int32, [1], name="input_lengths")
        c = v1.placeholder(tf.float32, [1, hidden], name="previous_state_c")
        h = v1.placeholder(tf.float32, [1, hidden], name="previous_state_h")

        # Only the ops DeepSpeech's own graph uses: the client registers no other kernels.
        def dense(name, inputs, relu=True):
            kernel, bias = weights[name]
            out = tf.nn.bias_add(tf.matmul(inputs, tf.constant(kernel)), tf.constant(bias))
            return tf.minimum(tf.nn.relu(out), spec.model.relu_clip) if relu else out

        out = tf.reshape(x, [N_STEPS, width * features.n_input])
        out = dense("layer_3", dense("layer_2", dense("layer_1", out)))
        kernel, recurrent, bias = weights["lstm"]
        w, b = lstm_from_keras(kernel, recurrent, bias)
        zeros = tf.zeros([hidden])
        lstm = tf.raw_ops.BlockLSTM(  # LSTMBlockFusedCell's op, as DeepSpeech exports
            seq_len_max=tf.constant(N_STEPS, tf.int64),
            x=tf.reshape(out, [N_STEPS, 1, hidden]),
            cs_prev=c,
            h_prev=h,
            w=tf.constant(w),
            wci=zeros,
            wcf=zeros,
            wco=zeros,
            b=tf.constant(b),
            forget_bias=0.0,
            cell_clip=-1.0,
            use_peephole=False,
        )
        outputs = tf.reshape(lstm.h, [N_STEPS, hidden])
        logits = dense("layer_6", dense("layer_5", outputs), relu=False)
        tf.nn.softmax(tf.reshape(logits, [N_STEPS, 1, -1]), name="logits")
        last = tf.constant(np.eye(N_STEPS, dtype=np.float32)[-1:])  # a matmul, not a slice
        tf.identity(tf.matmul(last, tf.reshape(lstm.cs, [N_STEPS, hidden])), name="new_state_c")
        tf.identity(tf.matmul(last, outputs), name="new_state_h")
        metadata = {
            "metadata_version": 6,
            "metadata_sample_rate": features.audio_sample_rate,
            "metadata_feature_win_len": int(features.feature_win_len),
            "metadata_feature_win_step": int(features.feature_win_step),
            "metadata_beam_width": 500,
        }
        for name, value in metadata.items():
            tf.constant([value], tf.int32, name=name)
        tf.constant([serialize_alphabet(alphabet_labels(spec.alphabet))], name="metadata_alphabet")
    graph_def = graph.as_graph_def()
    for node in graph_def.node:  # TF 1.15 inside the client rejects attrs it does not know
        op_def = op_def_registry.get(node.op)
        for attr in op_def.attr:
            if attr.HasField("default_value") and node.attr[attr.name] == attr.default_value:
                del node.attr[attr.name]
    Path(path).write_bytes(graph_def.SerializeToString())
    return Path(path)


_CLIENT = r"""
import ctypes, json, sys
import numpy as np, soundfile
lib = ctypes.CDLL(sys.argv[1])
args = json.loads(sys.argv[2])
lib.DS_SpeechToText.restype = ctypes.c_void_p
lib.DS_ErrorCodeToErrorMessage.restype = ctypes.c_char_p
state = ctypes.c_void_p()
code = lib.DS_CreateModel(args["model"].encode(), ctypes.byref(state))
result = {"create": code, "scorer": None, "texts": []}
if code == 0:
    if args.get("beam_width"):
        lib.DS_SetModelBeamWidth(state, ctypes.c_uint(args["beam_width"]))
    if args.get("scorer"):
        result["scorer"] = lib.DS_EnableExternalScorer(state, args["scorer"].encode())
        result["scorer_message"] = lib.DS_ErrorCodeToErrorMessage(result["scorer"]).decode()
        if args.get("alpha") is not None and result["scorer"] == 0:
            alpha, beta = ctypes.c_float(args["alpha"]), ctypes.c_float(args["beta"])
            lib.DS_SetScorerAlphaBeta(state, alpha, beta)
    if result["scorer"] in (None, 0):
        for wav in args["wavs"]:
            pcm, _ = soundfile.read(wav, dtype="int16")
            pcm = np.ascontiguousarray(pcm)
            buffer = pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_short))
            ptr = lib.DS_SpeechToText(state, buffer, ctypes.c_uint(len(pcm)))
            result["texts"].append(ctypes.string_at(ptr).decode("utf-8"))
            lib.DS_FreeString(ctypes.c_void_p(ptr))
    lib.DS_FreeModel(state)
print("RESULT " + json.dumps(result))
"""


def run_client(lib: Path, model: Path, wavs=(), scorer: Path | None = None, **options) -> dict:
    """Load `model` in libdeepspeech (a child process), enable `scorer`, transcribe `wavs`."""
    args = {"model": str(model), "wavs": [str(w) for w in wavs], "scorer": scorer and str(scorer)}
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, str(lib), json.dumps({**args, **options})],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise AssertionError(f"libdeepspeech exited with {done.returncode}: {done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])
