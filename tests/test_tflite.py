"""The streaming TFLite export computes what the Keras model computes, and says so."""

from types import SimpleNamespace

import numpy as np
import pytest

from deepspeech_core.evaluate.decoders import GreedyDecoder
from deepspeech_core.export.streaming_tflite import (
    FP32_FILE,
    FP32_TOLERANCE,
    QUANT_FILE,
    QUANT_TOLERANCE,
    TFLiteMismatchError,
    TFLiteStreamer,
    convert_tflite,
    export_tflite,
    keras_logits,
    logit_error,
    make_interpreter,
    verify_tflite,
)
from deepspeech_core.features.batches import SplitIndex
from deepspeech_core.model.checkpoints import load_model


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    cfg, _, features, _ = trained
    model, spec, _ = load_model(cfg.checkpoint_dir, "best")
    index = SplitIndex.load(features.indexes["test"], spec.alphabet)
    clips = [index.features(i) for i in range(len(index))]
    out = tmp_path_factory.mktemp("tflite")
    report = export_tflite(model, spec, out, clips)
    assert set(report) == {FP32_FILE, QUANT_FILE}
    written = SimpleNamespace(fp32=report[FP32_FILE], quant=report[QUANT_FILE])
    written.fp32_path, written.quant_path = out / FP32_FILE, out / QUANT_FILE
    return model, spec, clips, written


def _transcript(logits: np.ndarray, alphabet) -> str:
    return GreedyDecoder(alphabet).decode(logits)


def test_fp32_streams_the_keras_logits_and_transcripts(exported):
    model, spec, clips, report = exported
    assert report.fp32_path.read_bytes()[4:8] == b"TFL3"
    assert report.fp32.error <= report.fp32.tolerance == FP32_TOLERANCE
    streamer = TFLiteStreamer(report.fp32_path)
    for clip, want in zip(clips, keras_logits(model, clips), strict=True):
        got = streamer.logits(clip)
        assert got.shape == want.shape == (len(clip), spec.alphabet.n_classes)
        assert logit_error(got, want) <= FP32_TOLERANCE
        assert _transcript(got, spec.alphabet) == _transcript(want, spec.alphabet)


def test_quantised_model_is_verified_and_smaller(exported):
    model, _, clips, report = exported
    assert report.quant.size_bytes == report.quant_path.stat().st_size < report.fp32.size_bytes
    assert 0 < report.quant.error <= report.quant.tolerance == QUANT_TOLERANCE
    tensors = make_interpreter(report.quant_path).get_tensor_details()
    assert any(t["dtype"] == np.int8 for t in tensors), "weights were not quantised"
    fidelity = verify_tflite(report.quant_path, model, clips[:2], QUANT_TOLERANCE)
    assert 0 < fidelity.error <= report.quant.error
    assert 0 < fidelity.max_abs_diff <= report.quant.max_abs_diff


def test_only_builtin_ops_and_deepspeech_signature(exported):
    _, spec, _, report = exported
    for path in (report.fp32_path, report.quant_path):
        interpreter = make_interpreter(path)
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert "FULLY_CONNECTED" in ops
        assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
        runner = interpreter.get_signature_runner("serving_default")
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        assert list(inputs["input_node"]["shape"]) == [1, 16, 19, spec.features.n_input]
        assert list(inputs["previous_state_c"]["shape"]) == [1, spec.model.n_hidden]
        assert list(outputs["logits"]["shape"]) == [1, 16, spec.alphabet.n_classes]
        assert set(outputs) == {"logits", "new_state_c", "new_state_h"}


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_a_weightless_conversion_is_caught(exported, fill):
    model, spec, clips, _ = exported
    broken = spec.build()
    for variable in broken.weights:
        variable.assign(np.full(variable.shape, fill, np.float32))
    tflite = convert_tflite(broken, spec, quantize=False)
    for tolerance in (FP32_TOLERANCE, QUANT_TOLERANCE):
        with pytest.raises(TFLiteMismatchError, match="Do not ship it"):
            verify_tflite(tflite, model, clips[:2], tolerance)


def test_long_input_streams_in_chunks_like_keras(exported):
    model, spec, clips, report = exported
    long = np.concatenate(clips * (1 + 700 // sum(len(c) for c in clips)))[:613]
    assert len(long) % 16
    want = keras_logits(model, [long])[0]
    streamer = TFLiteStreamer(report.fp32_path)
    whole = streamer.logits(long)
    assert logit_error(whole, want) <= FP32_TOLERANCE

    # Chunks of any size, as audio arrives: the same logits as one call.
    rng = np.random.default_rng(0)
    bounds = np.cumsum(rng.integers(0, 40, size=60))
    chunks = np.split(long, bounds[bounds < len(long)])
    streamed = np.concatenate([streamer.feed(chunk) for chunk in chunks] + [streamer.finish()])
    np.testing.assert_array_equal(streamed, whole)

    # Shorter than one window, and shorter than the context.
    for n in (0, 3, 15):
        got = streamer.logits(long[:n])
        assert got.shape == (n, spec.alphabet.n_classes)
        if n:
            assert logit_error(got, keras_logits(model, [long[:n]])[0]) <= FP32_TOLERANCE
