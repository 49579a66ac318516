"""Models that DeepSpeech 0.9.3's own clients run: output_graph.tflite and output_graph.pb.

Every DeepSpeech client (the `deepspeech` command, the Python, Node, .NET, Android and
iOS bindings) is libdeepspeech, and it loads a graph with DeepSpeech 0.9.3's inference
contract (training/deepspeech_training/train.py `create_inference_graph` and `export`;
native_client/{tflitemodelstate,tfmodelstate}.cc read it):

    inputs   input_node [1, n_steps, 2*n_context+1, n_input], previous_state_c/_h
             [1, n_hidden], input_samples [one feature window of samples],
             input_lengths [1] (the TensorFlow build feeds it; the TFLite build does not)
    outputs  logits: softmax probabilities, [n_steps, classes] (TFLite) or
             [n_steps, 1, classes] (TensorFlow, whose `logits_shape` node says so),
             new_state_c/_h, mfccs (the features of one window), and metadata_version
             (GRAPH_VERSION), metadata_sample_rate, metadata_feature_win_len/_step (ms),
             metadata_beam_width, metadata_alphabet (`Alphabet::Serialize`)

The network is `model.streaming_logits` (the Keras model's own layers and weights) and
the features `features.window_mfccs` (one window, which the client pads itself), the op
sequence of every graph we write. The TensorFlow build's libdeepspeech has only the
kernels its graph needed, so its LSTM is TensorFlow's fused BlockLSTM over the same
weights. What the TFLite converter writes needs three edits before the 0.9.3 runtime can
use it (`_deepspeech_flatbuffer`).

`check_deepspeech_file` reads an exported file back and refuses it (before any client
sees it) unless its metadata is what the model needs.
"""

from __future__ import annotations

import logging
import struct
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from pydantic import BaseModel

from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.export.streaming_tflite import (
    FP32_TOLERANCE,
    N_STEPS,
    QUANT_TOLERANCE,
    StreamingGraph,
    TFLiteStreamer,
    check_streamed,
    keras_logits,
)
from deepspeech_core.features.mfcc import window_mfccs
from deepspeech_core.manifests import DeepSpeechModelFile
from deepspeech_core.model.checkpoints import ModelSpec
from deepspeech_core.model.network import lstm_weights
from deepspeech_core.workdir.atomic_files import atomic_write_bytes

log = logging.getLogger(__name__)

GRAPH_VERSION = 6  # training/deepspeech_training/GRAPH_VERSION at v0.9.3
DEFAULT_BEAM_WIDTH = 500  # DeepSpeech's --export_beam_width
TFLITE_FILE = "output_graph.tflite"
QUANT_FILE = "output_graph.quant.tflite"
PB_FILE = "output_graph.pb"
METADATA = (
    "metadata_version",
    "metadata_sample_rate",
    "metadata_feature_win_len",
    "metadata_feature_win_step",
    "metadata_beam_width",
    "metadata_alphabet",
)
# The highest operator versions libdeepspeech 0.9.3's TFLite runtime (TF 2.3) resolves;
# the converter of today writes newer ones for some ops when newer features are used.
FULLY_CONNECTED_HYBRID_VERSION = 3


class DeepSpeechExportError(ValueError):
    """An exported DeepSpeech graph is not what libdeepspeech 0.9.3 needs; says why."""


# -- Alphabet::Serialize ---------------------------------------------------------------


def serialize_alphabet(labels: Sequence[bytes]) -> bytes:
    """DeepSpeech's `Alphabet::Serialize` of labels 0..n-1 (each label's UTF-8 bytes).

    uint16 count, then per label uint16 key, uint16 length and the bytes, little-endian
    (every platform DeepSpeech ships on). A bytes-output-mode alphabet (labels
    b"\\x01".."\\xff") serialises the same way.
    """
    if not labels or len(labels) > 0xFFFF:
        raise DeepSpeechExportError(f"an alphabet needs 1 to 65535 labels, not {len(labels)}")
    out = [struct.pack("<H", len(labels))]
    for key, label in enumerate(labels):
        if not label or len(label) > 0xFFFF:
            raise DeepSpeechExportError(f"label {key} ({label!r}) must be 1 to 65535 bytes")
        out.append(struct.pack("<HH", key, len(label)) + bytes(label))
    return b"".join(out)


def deserialize_alphabet(data: bytes) -> list[bytes]:
    """The labels of a serialised alphabet, in key order; as strict as the client's reader."""
    if len(data) < 2:
        raise DeepSpeechExportError("the serialised alphabet is shorter than its header")
    (count,), offset, labels = struct.unpack_from("<H", data), 2, {}
    for _ in range(count):
        if len(data) - offset < 4:
            raise DeepSpeechExportError("the serialised alphabet ends inside an entry")
        key, length = struct.unpack_from("<HH", data, offset)
        offset += 4
        if len(data) - offset < length:
            raise DeepSpeechExportError("the serialised alphabet ends inside a label")
        labels[key] = bytes(data[offset : offset + length])
        offset += length
    if sorted(labels) != list(range(count)):
        raise DeepSpeechExportError("the serialised alphabet's keys are not 0..n-1")
    return [labels[k] for k in range(count)]


def alphabet_labels(alphabet: Alphabet) -> list[bytes]:
    """The model's output labels as bytes (the blank, the last class, is not a label).

    A character alphabet's labels are its characters' UTF-8; a bytes-output-mode
    alphabet's are the single bytes 0x01..0xFF, as DeepSpeech's UTF8Alphabet writes them.
    """
    return alphabet.labels_as_bytes()


class DeepSpeechMetadata(BaseModel):
    """What libdeepspeech reads from a graph at load (its metadata_* outputs)."""

    version: int
    sample_rate: int
    feature_win_len: int
    feature_win_step: int
    beam_width: int
    alphabet: list[bytes]

    @classmethod
    def for_model(
        cls, spec: ModelSpec, beam_width: int = DEFAULT_BEAM_WIDTH, labels=None
    ) -> DeepSpeechMetadata:
        features = spec.features
        for name in ("feature_win_len", "feature_win_step"):
            value = getattr(features, name)
            if value != int(value):
                raise DeepSpeechExportError(
                    f"{name} is {value} ms: DeepSpeech clients read whole milliseconds only; "
                    "train with an integer window to deploy to them"
                )
        return cls(
            version=GRAPH_VERSION,
            sample_rate=features.audio_sample_rate,
            feature_win_len=int(features.feature_win_len),
            feature_win_step=int(features.feature_win_step),
            beam_width=beam_width,
            alphabet=labels if labels is not None else alphabet_labels(spec.alphabet),
        )

    def tensors(self) -> dict[str, tf.Tensor]:
        """The metadata outputs, shape [1] each as DeepSpeech's export writes them."""
        values = {
            "metadata_version": self.version,
            "metadata_sample_rate": self.sample_rate,
            "metadata_feature_win_len": self.feature_win_len,
            "metadata_feature_win_step": self.feature_win_step,
            "metadata_beam_width": self.beam_width,
        }
        out = {name: tf.constant([v], tf.int32, name=name) for name, v in values.items()}
        alphabet = serialize_alphabet(self.alphabet)
        out["metadata_alphabet"] = tf.constant([alphabet], tf.string, name="metadata_alphabet")
        return out


# -- the graphs ------------------------------------------------------------------------


class DeepSpeechGraph(StreamingGraph):
    """The streaming network plus DeepSpeech's feature graph and metadata outputs."""

    def __init__(
        self,
        model: keras.Model,
        spec: ModelSpec,
        metadata: DeepSpeechMetadata,
        n_steps: int = N_STEPS,
    ) -> None:
        super().__init__(model, spec, n_steps)
        self.features, self.metadata = spec.features, metadata
        self.block_lstm_weights = _block_lstm_weights(model)  # read eagerly, here
        self.samples_spec = tf.TensorSpec(
            [spec.features.window_samples], tf.float32, "input_samples"
        )

    def mfccs(self, input_samples: tf.Tensor) -> tf.Tensor:
        """One window of samples -> its MFCCs [1, n_input], with the feature cache's function."""
        return tf.reshape(window_mfccs(input_samples, self.features), [1, self.n_input])

    def tflite_outputs(self, input_node, previous_state_c, previous_state_h, input_samples):
        logits, c, h = self.logits(input_node, previous_state_c, previous_state_h)
        return {
            "logits": tf.nn.softmax(logits),  # [n_steps, classes]: the client's 2-D layout
            "new_state_c": c,
            "new_state_h": h,
            "mfccs": self.mfccs(input_samples),
            **self.metadata.tensors(),
        }

    def tensorflow_outputs(
        self, input_node, input_lengths, previous_state_c, previous_state_h, input_samples
    ):
        lstm = _block_lstm(self.block_lstm_weights, input_lengths)
        logits, c, h = self.logits(input_node, previous_state_c, previous_state_h, lstm)
        shape = tf.constant([self.n_steps, 1, self.n_classes], tf.int32, name="logits_shape")
        return {
            "logits": tf.nn.softmax(tf.reshape(logits, shape)),  # time-major, batch 1
            "new_state_c": c,
            "new_state_h": h,
            "mfccs": self.mfccs(input_samples),
            **self.metadata.tensors(),
        }


def _icfo(weights: np.ndarray) -> np.ndarray:
    """Keras's gate blocks (i, f, c, o) in BlockLSTM's order (i, c, f, o), last axis."""
    i, f, c, o = np.split(weights, 4, axis=-1)
    return np.concatenate([i, c, f, o], axis=-1)


def _block_lstm_weights(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """The LSTM's weights as BlockLSTM takes them: w = [kernel; recurrent], b; gates icfo."""
    kernel, recurrent, bias = (np.asarray(w.numpy(), np.float32) for w in lstm_weights(model))
    return _icfo(np.concatenate([kernel, recurrent], axis=0)), _icfo(bias)


def _block_lstm(weights: tuple[np.ndarray, np.ndarray], input_lengths: tf.Tensor):
    """The model's LSTM as TensorFlow's fused BlockLSTM (the TF client has its kernel).

    Frames past `input_lengths` (the client's last, partial window) are not computed,
    and the state returned is the one after the last real frame, as DeepSpeech's
    LSTMBlockFusedCell does. Only ops libdeepspeech's TensorFlow build registers.
    """
    w, b = (tf.constant(a) for a in weights)
    units = weights[1].shape[0] // 4

    def lstm(_model, x, c, h):
        length = tf.reshape(input_lengths, [])
        peephole = tf.zeros([units], tf.float32)
        outputs = tf.raw_ops.BlockLSTM(
            seq_len_max=tf.cast(length, tf.int64),
            x=tf.reshape(x, [-1, 1, x.shape[-1]]),
            cs_prev=c,
            h_prev=h,
            w=w,
            wci=peephole,
            wcf=peephole,
            wco=peephole,
            b=b,
            forget_bias=0.0,
            cell_clip=-1.0,
            use_peephole=False,
        )
        # State after frame `length`: index `length` of [zero state, frame 1, frame 2...]
        # (GatherNd; the client has no StridedSlice or Sub kernel).
        at = tf.reshape(tf.stack([length, 0]), [1, 2])
        zero = tf.zeros([1, 1, units], tf.float32)
        c = tf.gather_nd(tf.concat([zero, outputs.cs], axis=0), at)
        h = tf.gather_nd(tf.concat([zero, outputs.h], axis=0), at)
        return tf.reshape(outputs.h, [-1, units]), c, h

    return lstm


# -- TFLite: convert, then the edits the 0.9.3 runtime needs ------------------------------

SIGNATURE = "serving_default"


def convert_deepspeech_tflite(graph: DeepSpeechGraph) -> dict[bool, bytes]:
    """output_graph.tflite and .quant.tflite (by `quantize`), from one SavedModel.

    Built-in ops plus AudioSpectrogram and Mfcc, custom ops with kernels in
    libdeepspeech's TFLite runtime. Quantisation is dynamic-range, per tensor (0.9.3
    refuses per-channel FULLY_CONNECTED).
    """
    signature = [graph.input_spec, *graph.state_specs, graph.samples_spec]
    function = tf.function(graph.tflite_outputs, input_signature=signature)
    converted = {}
    with tempfile.TemporaryDirectory(prefix="deepspeech-tflite-") as tmp:
        tf.saved_model.save(graph, tmp, signatures={SIGNATURE: function.get_concrete_function()})
        for quantize in (False, True):
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            converter.allow_custom_ops = True
            if quantize:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter._experimental_disable_per_channel = True
            converted[quantize] = deepspeech_flatbuffer(converter.convert())
    return converted


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    return schema, flatbuffer_utils


def _opcode_index(model, schema, builtin: int, version: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _ancestors(subgraph, tensor: int) -> set[int]:
    """Indices of the operators `tensor` depends on (the client's find_parent_node_ids)."""
    producer = {t: i for i, op in enumerate(subgraph.operators) for t in op.outputs}
    found, frontier = set(), [tensor]
    while frontier:
        op = producer.get(frontier.pop())
        if op is not None and op not in found:
            found.add(op)
            frontier.extend(int(t) for t in subgraph.operators[op].inputs if t >= 0)
    return found


def deepspeech_flatbuffer(flatbuffer: bytes) -> bytes:
    """The converter's flatbuffer edited into what libdeepspeech 0.9.3 can load and run.

    1. Tensors get DeepSpeech's names (the client looks inputs and outputs up by name;
       the converter names them serving_default_input_node:0, Identity_3, ...).
    2. Each metadata output, a folded constant, gets a producing op (GATHER of element
       0 of a copy): the client runs the op it finds by walking up from the output.
    3. Operators are ordered acoustic model, then MFCC, then metadata: the client runs
       the acoustic plan as a prefix of the graph; other orders crash it.
    FULLY_CONNECTED ops with int8 weights are set to symmetric input quantisation,
    the version 0.9.3's runtime has (version 3); newer versions are refused by it.
    """
    schema, utils = _schema()
    model = utils.read_model_from_bytearray(bytearray(flatbuffer))
    subgraph, signature = model.subgraphs[0], model.signatureDefs[0]
    names = {}
    for entry in [*signature.inputs, *signature.outputs]:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        subgraph.tensors[entry.tensorIndex].name = name.encode()
        names[name] = entry.tensorIndex

    gather = _opcode_index(model, schema, schema.BuiltinOperator.GATHER, 1)
    metadata_ops = []
    for name in METADATA:
        index = names[name]
        tensor = subgraph.tensors[index]
        data = model.buffers[tensor.buffer].data if tensor.buffer else None
        if data is None or not len(data):
            continue  # already computed by an op
        value = schema.TensorT()
        value.shape, value.type, value.buffer = list(tensor.shape), tensor.type, tensor.buffer
        value.name = f"{name}/value".encode()
        position = schema.TensorT()
        position.shape, position.type, position.name = [1], schema.TensorType.INT32, b""
        position.name = f"{name}/index".encode()
        zero = schema.BufferT()
        zero.data = np.zeros(4, np.uint8)
        model.buffers.append(zero)
        position.buffer = len(model.buffers) - 1
        subgraph.tensors += [value, position]
        tensor.buffer = 0  # the empty buffer: computed, no longer a constant
        op = schema.OperatorT()
        op.opcodeIndex = gather
        op.inputs = [len(subgraph.tensors) - 2, len(subgraph.tensors) - 1]
        op.outputs = [index]
        op.builtinOptionsType = schema.BuiltinOptions.GatherOptions
        op.builtinOptions = schema.GatherOptionsT()
        metadata_ops.append(op)

    mfcc = _ancestors(subgraph, names["mfccs"])
    acoustic = [op for i, op in enumerate(subgraph.operators) if i not in mfcc]
    features = [op for i, op in enumerate(subgraph.operators) if i in mfcc]
    subgraph.operators = acoustic + features + metadata_ops

    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if (
            max(code.builtinCode, code.deprecatedBuiltinCode)
            != schema.BuiltinOperator.FULLY_CONNECTED
        ):
            continue
        weights = subgraph.tensors[op.inputs[1]]
        if weights.type == schema.TensorType.INT8:
            op.builtinOptions.asymmetricQuantizeInputs = False
            code.version = min(code.version, FULLY_CONNECTED_HYBRID_VERSION)
    return utils.convert_object_to_bytearray(model)


# -- TensorFlow: a frozen GraphDef the 0.9.3 TensorFlow runtime reads ---------------------


def _rename_node(graph_def, old: str, new: str) -> None:
    """Rename node `old` to `new` and every reference to it."""
    for node in graph_def.node:
        if node.name == old:
            node.name = new
        node.input[:] = [
            new + ref[len(old) :]
            if ref == old or ref.startswith(old + ":")
            else ("^" + new if ref == "^" + old else ref)
            for ref in node.input
        ]


def _strip_default_attrs(graph_def) -> None:
    """Drop attributes at their default value: the older runtime does not know new ones."""
    from tensorflow.python.framework import op_def_registry

    for node in graph_def.node:
        op_def = op_def_registry.get(node.op)
        for attr in op_def.attr if op_def else ():
            if (
                attr.HasField("default_value")
                and attr.name in node.attr
                and node.attr[attr.name] == attr.default_value
            ):
                del node.attr[attr.name]


def _drop_redundant_maximum(graph_def) -> None:
    """Maximum(Minimum(Relu(x), clip), c <= 0) -> Identity: the TF client has no Maximum.

    Keras's clipped ReLU is Relu then clip_by_value (Minimum, Maximum with 0); after a
    Relu the Maximum cannot change a value, so it becomes an Identity.
    """
    nodes = {node.name: node for node in graph_def.node}

    def producer(ref: str):
        return nodes.get(ref.lstrip("^").split(":")[0])

    for node in graph_def.node:
        if node.op != "Maximum":
            continue
        clipped, floor = producer(node.input[0]), producer(node.input[1])
        relu = (
            producer(clipped.input[0]) if clipped is not None and clipped.op == "Minimum" else None
        )
        if relu is None or relu.op != "Relu" or floor is None or floor.op != "Const":
            continue
        if np.all(tf.make_ndarray(floor.attr["value"].tensor) <= 0):
            node.op, node.input[:] = "Identity", [node.input[0]]


def convert_deepspeech_pb(graph: DeepSpeechGraph) -> bytes:
    """output_graph.pb: the graph frozen, its nodes named as DeepSpeech's export names them."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    lengths = tf.TensorSpec([1], tf.int32, "input_lengths")
    signature = [graph.input_spec, lengths, *graph.state_specs, graph.samples_spec]
    function = tf.function(graph.tensorflow_outputs, input_signature=signature)
    concrete = function.get_concrete_function()
    graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    # The outputs are Identity nodes whose names freezing keeps.
    outputs = {name: t.op.name for name, t in concrete.structured_outputs.items()}
    taken = {node.name for node in graph_def.node}
    for name, node in outputs.items():
        if name in taken and name not in outputs.values():  # an inner node has the name
            _rename_node(graph_def, name, f"{name}_inner")
        _rename_node(graph_def, node, name)
    keep = [*outputs, "logits_shape"]
    graph_def = tf.compat.v1.graph_util.extract_sub_graph(graph_def, keep)
    del graph_def.library.function[:]
    _drop_redundant_maximum(graph_def)
    graph_def = tf.compat.v1.graph_util.extract_sub_graph(graph_def, keep)  # unused floors
    _strip_default_attrs(graph_def)
    return graph_def.SerializeToString()


# -- reading an exported file back: our own check, before any client sees it -------------


def _tflite_string(data: bytes) -> bytes:
    """The first string of a TFLite string tensor (int32 count, offsets, bytes)."""
    start, end = struct.unpack_from("<ii", data, 4)  # offsets of string 0 (after the count)
    return bytes(data[start:end])


def _tflite_graph(data: bytes) -> tuple[dict, dict[str, list[int]]]:
    """(metadata values, shapes of the named inputs/outputs) of an output_graph.tflite."""
    schema, utils = _schema()
    model = utils.read_model_from_bytearray(bytearray(data))
    subgraph = model.subgraphs[0]
    names = {subgraph.tensors[i].name.decode(): i for i in [*subgraph.inputs, *subgraph.outputs]}
    producer = {t: op for op in subgraph.operators for t in op.outputs}
    values: dict[str, object] = {}
    for name in METADATA:
        if name not in names:
            continue
        op = producer.get(names[name])
        if op is None:
            continue  # the client would crash on this: reported as missing
        source = subgraph.tensors[op.inputs[0]]
        raw = bytes(model.buffers[source.buffer].data.tobytes())
        if source.type == schema.TensorType.STRING:
            values[name] = _tflite_string(raw)
        else:
            values[name] = int(np.frombuffer(raw, "<i4")[0])
    shapes = {name: list(subgraph.tensors[i].shape) for name, i in names.items()}
    return values, shapes


def _pb_graph(data: bytes) -> tuple[dict, dict[str, list[int]]]:
    """(metadata values, shapes the client reads) of an output_graph.pb."""
    graph_def = tf.compat.v1.GraphDef.FromString(data)
    nodes = {node.name: node for node in graph_def.node}
    values, shapes = {}, {}
    for name in METADATA:
        node = nodes.get(name)
        while node is not None and node.op == "Identity":
            node = nodes.get(node.input[0].split(":")[0])
        if node is not None and node.op == "Const":
            value = tf.make_ndarray(node.attr["value"].tensor).reshape(-1)[0]
            values[name] = value if isinstance(value, bytes) else int(value)
    for name in ("input_node", "previous_state_c", "input_lengths", "input_samples"):
        if name in nodes and "shape" in nodes[name].attr:
            shapes[name] = [d.size for d in nodes[name].attr["shape"].shape.dim]
    if "logits_shape" in nodes:
        logits = tf.make_ndarray(nodes["logits_shape"].attr["value"].tensor)
        shapes["logits"] = [int(d) for d in logits]
    for name in ("logits", "new_state_c", "new_state_h", "mfccs"):
        if name not in nodes:
            shapes.pop(name, None)
        else:
            shapes.setdefault(name, [])
    return values, shapes


def read_deepspeech_metadata(path: Path) -> tuple[dict, dict[str, list[int]]]:
    """Metadata values and tensor shapes of an output_graph .tflite or .pb, as the client reads."""
    data = Path(path).read_bytes()
    if data[4:8] == b"TFL3":
        return _tflite_graph(data)
    return _pb_graph(data)


def check_deepspeech_file(path: Path, expected: DeepSpeechMetadata, n_hidden: int) -> None:
    """Refuse `path` unless libdeepspeech 0.9.3 would load it as the model it should be.

    Reads the file back and compares what the client reads at load (the metadata, the
    input and output shapes) with what the model needs: a version the client refuses,
    an alphabet that does not serialise as the model's labels, or an output width that
    does not match the alphabet is an error here, not a crash or garbage on a device.
    """
    values, shapes = read_deepspeech_metadata(path)
    problems = []
    missing = [
        n
        for n in ("input_node", "previous_state_c", "input_samples", "logits", "mfccs")
        if n not in shapes
    ]
    missing += [n for n in METADATA if n not in values]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    version = values.get("metadata_version")
    if version is not None and version != GRAPH_VERSION:
        problems.append(
            f"graph version {version}, but DeepSpeech 0.9.3 clients need {GRAPH_VERSION}"
        )
    want = {
        "metadata_sample_rate": expected.sample_rate,
        "metadata_feature_win_len": expected.feature_win_len,
        "metadata_feature_win_step": expected.feature_win_step,
        "metadata_beam_width": expected.beam_width,
    }
    problems += [
        f"{name} is {values[name]}, the model's is {value}"
        for name, value in want.items()
        if name in values and values[name] != value
    ]
    n_classes = len(expected.alphabet) + 1
    if shapes.get("logits") and shapes["logits"][-1] != n_classes:
        problems.append(
            f"logits have {shapes['logits'][-1]} classes, the model's alphabet needs {n_classes}"
        )
    if "metadata_alphabet" in values:
        try:
            labels = deserialize_alphabet(values["metadata_alphabet"])
        except DeepSpeechExportError as exc:
            problems.append(f"the alphabet does not deserialise ({exc})")
        else:
            if shapes.get("logits") and shapes["logits"][-1] != len(labels) + 1:
                problems.append(
                    f"logits have {shapes['logits'][-1]} classes, the alphabet in the file "
                    f"needs {len(labels) + 1}"
                )
            if labels != list(expected.alphabet):
                problems.append(
                    f"the alphabet is {labels!r}, the model was trained on "
                    f"{list(expected.alphabet)!r}"
                )
    if shapes.get("previous_state_c") and shapes["previous_state_c"] != [1, n_hidden]:
        problems.append(f"previous_state_c is {shapes['previous_state_c']}, not [1, {n_hidden}]")
    if problems:
        raise DeepSpeechExportError(
            f"{Path(path).name} would not work in DeepSpeech 0.9.3 clients: "
            + "; ".join(problems)
            + ". It was not shipped; re-export from the checkpoint."
        )


# -- running the graphs here, to check them against the Keras model -----------------------


def acoustic_flatbuffer(flatbuffer: bytes) -> bytes:
    """An output_graph.tflite cut to its acoustic model, for our own TFLite interpreter.

    Our interpreter has no AudioSpectrogram/Mfcc kernels; the client runs this same
    prefix of operators (its acoustic plan). The signature is input_node and the state
    in, logits and the state out, as our streaming model's.
    """
    schema, utils = _schema()
    model = utils.read_model_from_bytearray(bytearray(flatbuffer))
    subgraph = model.subgraphs[0]
    names = {subgraph.tensors[i].name.decode(): i for i in [*subgraph.inputs, *subgraph.outputs]}
    keep = _ancestors(subgraph, names["logits"])
    keep |= _ancestors(subgraph, names["new_state_c"]) | _ancestors(subgraph, names["new_state_h"])
    subgraph.operators = [op for i, op in enumerate(subgraph.operators) if i in keep]
    subgraph.inputs = [names[n] for n in ("input_node", "previous_state_c", "previous_state_h")]
    subgraph.outputs = [names[n] for n in ("logits", "new_state_c", "new_state_h")]
    signature = model.signatureDefs[0]
    signature.inputs = [
        e
        for e in signature.inputs
        if _entry(e) in ("input_node", "previous_state_c", "previous_state_h")
    ]
    signature.outputs = [
        e for e in signature.outputs if _entry(e) in ("logits", "new_state_c", "new_state_h")
    ]
    return utils.convert_object_to_bytearray(model)


def _entry(entry) -> str:
    return entry.name.decode() if isinstance(entry.name, bytes) else entry.name


class GraphDefRunner:
    """output_graph.pb run by TensorFlow here, with a TFLite signature runner's interface."""

    def __init__(self, data: bytes) -> None:
        graph_def = tf.compat.v1.GraphDef.FromString(data)
        wrapped = tf.compat.v1.wrap_function(
            lambda: tf.compat.v1.import_graph_def(graph_def, name=""), []
        )
        get = wrapped.graph.get_tensor_by_name
        self._inputs = ("input_node", "input_lengths", "previous_state_c", "previous_state_h")
        self._outputs = ("logits", "new_state_c", "new_state_h")
        self._fn = wrapped.prune(
            feeds=[get(f"{n}:0") for n in self._inputs],
            fetches=[get(f"{n}:0") for n in self._outputs],
        )
        self._shapes = {n: get(f"{n}:0").shape.as_list() for n in (*self._inputs, *self._outputs)}

    def get_input_details(self) -> dict:
        return {n: {"shape": self._shapes[n]} for n in self._inputs}

    def get_output_details(self) -> dict:
        return {n: {"shape": self._shapes[n]} for n in self._outputs}

    def __call__(self, input_node, previous_state_c, previous_state_h) -> dict[str, np.ndarray]:
        lengths = np.array([self._shapes["input_node"][1]], np.int32)  # full windows
        feeds = (input_node, lengths, previous_state_c, previous_state_h)
        out = self._fn(*(tf.constant(x) for x in feeds))
        return {n: t.numpy() for n, t in zip(self._outputs, out, strict=True)}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def streamer_for(path_or_bytes: bytes, runtime: str) -> TFLiteStreamer:
    """Our window-by-window streamer over a DeepSpeech graph's acoustic model."""
    if runtime == "tensorflow":
        return TFLiteStreamer(None, runner=GraphDefRunner(path_or_bytes))
    return TFLiteStreamer(acoustic_flatbuffer(path_or_bytes))


# -- the export ----------------------------------------------------------------------------

RUNTIMES = {TFLITE_FILE: "tflite", QUANT_FILE: "tflite", PB_FILE: "tensorflow"}


def export_deepspeech(
    model: keras.Model,
    spec: ModelSpec,
    out_dir: Path,
    clips: Sequence[np.ndarray],
    beam_width: int = DEFAULT_BEAM_WIDTH,
    fp32_tolerance: float = FP32_TOLERANCE,
    quant_tolerance: float = QUANT_TOLERANCE,
) -> dict[str, DeepSpeechModelFile]:
    """Write output_graph.tflite, .quant.tflite and .pb into `out_dir`, each checked first.

    Each file is read back (`check_deepspeech_file`) and its acoustic model streamed over
    `clips` (MFCC arrays of real speech) against the Keras model's softmax, as the
    streaming TFLite models are; only then is it written.
    """
    metadata = DeepSpeechMetadata.for_model(spec, beam_width)
    graph = DeepSpeechGraph(model, spec, metadata)
    references = [_softmax(r) for r in keras_logits(model, clips)]
    started = time.perf_counter()
    tflite = convert_deepspeech_tflite(graph)
    files = {
        TFLITE_FILE: (tflite[False], fp32_tolerance),
        QUANT_FILE: (tflite[True], quant_tolerance),
        PB_FILE: (convert_deepspeech_pb(graph), fp32_tolerance),
    }
    log.info("DeepSpeech client graphs converted in %.1f s", time.perf_counter() - started)
    written = {}
    for name, (data, tolerance) in files.items():
        started = time.perf_counter()
        path = Path(out_dir) / name
        with tempfile.TemporaryDirectory(prefix="deepspeech-check-") as tmp:
            candidate = Path(tmp) / name
            candidate.write_bytes(data)
            check_deepspeech_file(candidate, metadata, spec.model.n_hidden)
        fidelity = check_streamed(
            data, references, clips, tolerance, name, streamer_for(data, RUNTIMES[name])
        )
        atomic_write_bytes(path, data)
        log.info(
            "%s: %.2f MB, max |probability diff| %.3g, %.1f s",
            name,
            len(data) / 1e6,
            fidelity.max_abs_diff,
            time.perf_counter() - started,
        )
        written[name] = DeepSpeechModelFile(
            size_bytes=len(data),
            runtime=RUNTIMES[name],
            graph_version=metadata.version,
            beam_width=metadata.beam_width,
            max_abs_diff=fidelity.max_abs_diff,
            error=fidelity.error,
            tolerance=tolerance,
        )
    return written
