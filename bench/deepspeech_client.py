"""DeepSpeech 0.9.3's client (libdeepspeech, TFLite build) on our output_graph.tflite.

For each size, briefly trains the model on a 40-clip espeak-ng corpus (the project's
`train`), so that its output is peaked as a trained model's is: the client's beam
search prunes by probability, and an untrained model's flat output (every class near
1/29 each frame) makes it keep all 500 beams alive and dominate the time, which no
deployed model does. The figure `logit_entropy` (mean per-frame entropy of the softmax
on the benchmark clip, nats; flat = ln 29 = 3.37) says how peaked the model was.

Then converts output_graph.tflite and output_graph.quant.tflite as the export does and
times libdeepspeech's DS_SpeechToText (MFCCs, acoustic model, its CTC beam search) on
~10 s of espeak-ng speech in a child process (the second of two runs), beside our own
streaming TFLite model (model.tflite / model.quant.tflite, TFLiteStreamer, 1 thread)
decoded greedily and with TensorFlow's beam search (width 500) on the same audio.
RTF = compute seconds per audio second. libdeepspeech runs TFLite with 4 threads
(fixed in its code). Prints one `name: value unit` line per figure. Usage:
    python bench/deepspeech_client.py [--sizes 2048,256] [--beam_width 500] [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TEXT = (
    "the quick brown fox jumps over the lazy dog while seven wise owls count the "
    "stars above a quiet village and the river keeps on running to the sea"
)


def speech(path: Path) -> Path:
    """About 10 s of 16 kHz mono 16-bit speech from espeak-ng."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(raw), TEXT], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path)], check=True)
    return path


def corpus_features(root: Path):
    """A 40-clip espeak-ng corpus, validated and featurised once for every size."""
    from deepspeech_core.config import PipelineConfig
    from deepspeech_core.data.demo_corpus import make_demo_corpus
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.cache import build_feature_cache

    cv = make_demo_corpus(root / "cv", count=40, seed=3)
    cfg = PipelineConfig.model_validate(
        {"workdir": str(root / "work"), "corpus": {"corpus": str(cv)}}
    ).resolved()
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
    return cfg, build_feature_cache(corpus, cfg.features, cfg.workdir)


def trained_model(h: int, epochs: int, cfg, features, root: Path):
    """n_hidden `h` trained `epochs` epochs (batch 8) on the corpus: (model, spec)."""
    from deepspeech_core.config import ModelConfig, TrainingConfig
    from deepspeech_core.model.checkpoints import load_model
    from deepspeech_core.train.loop import train

    model_cfg = ModelConfig(n_hidden=h)
    training = TrainingConfig(
        epochs=epochs, train_batch_size=8, dev_batch_size=8, learning_rate=0.001, seed=7
    )
    started = time.perf_counter()
    train(features, model_cfg, cfg.features, training, root / f"ckpt-{h}")
    print(f"train_seconds_n_hidden_{h}: {time.perf_counter() - started:.1f} s")
    model, spec, _ = load_model(root / f"ckpt-{h}", "last")
    return model, spec


def logit_entropy(model, mfccs) -> tuple[float, float]:
    """(mean per-frame softmax entropy in nats, share of frames whose best class is blank)."""
    import numpy as np

    from deepspeech_core.export.streaming_tflite import keras_logits

    logits = keras_logits(model, [mfccs])[0]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    entropy = float(-(p * np.log(np.maximum(p, 1e-30))).sum(axis=-1).mean())
    blank = float((logits.argmax(axis=-1) == logits.shape[-1] - 1).mean())
    return entropy, blank


def bench_size(h: int, wav: Path, beam_width: int, epochs: int, cfg, features, out: Path) -> None:
    import numpy as np

    from deepspeech_core.data.audio_files import read_audio
    from deepspeech_core.evaluate.decoders import BeamSearchDecoder, GreedyDecoder
    from deepspeech_core.export.deepspeech_client import run_client
    from deepspeech_core.export.deepspeech_graphs import (
        DeepSpeechGraph,
        DeepSpeechMetadata,
        convert_deepspeech_tflite,
    )
    from deepspeech_core.export.streaming_tflite import TFLiteStreamer, convert_tflite
    from deepspeech_core.features.mfcc import MfccExtractor

    model, spec = trained_model(h, epochs, cfg, features, out)
    pcm16 = read_audio(wav, spec.features.audio_sample_rate).samples
    audio_seconds = len(pcm16) / spec.features.audio_sample_rate
    mfccs = MfccExtractor(spec.features)(pcm16)
    entropy, blank = logit_entropy(model, mfccs)
    flat = np.log(spec.alphabet.n_classes)
    print(f"logit_entropy_n_hidden_{h}: {entropy:.3f} nats (flat: {flat:.3f})")
    print(f"blank_frames_n_hidden_{h}: {blank:.3f} ratio")
    started = time.perf_counter()
    graph = DeepSpeechGraph(model, spec, DeepSpeechMetadata.for_model(spec))
    converted = convert_deepspeech_tflite(graph)
    print(f"client_graphs_convert_seconds_n_hidden_{h}: {time.perf_counter() - started:.1f} s")
    for label, quantize in (("fp32", False), ("quant", True)):
        path = out / f"output_graph_{h}_{label}.tflite"
        path.write_bytes(converted[quantize])
        print(f"client_size_{label}_n_hidden_{h}: {path.stat().st_size / 1e6:.2f} MB")
        for beam in (beam_width, 1):
            run = run_client("tflite", path, [wav, wav], beam_width=beam, timeout=1800)
            record = run.records[-1]  # the second run: warm
            rtf = record["seconds"] / record["audio_seconds"]
            print(f"client_rtf_{label}_n_hidden_{h}_beam_{beam}: {rtf:.4f} s/s")
        print(f"client_load_seconds_{label}_n_hidden_{h}: {run.header['load_seconds']:.3f} s")

        ours = TFLiteStreamer(convert_tflite(model, spec, quantize), num_threads=1)
        ours.logits(np.zeros((64, spec.features.n_input), np.float32))  # warm up
        for name, decoder in (
            ("greedy", GreedyDecoder(spec.alphabet)),
            (f"beam_{beam_width}", BeamSearchDecoder(spec.alphabet, beam_width)),
        ):
            started = time.perf_counter()
            decoder.decode(ours.logits(mfccs))
            rtf = (time.perf_counter() - started) / audio_seconds
            print(f"our_tflite_streaming_rtf_{label}_n_hidden_{h}_{name}: {rtf:.4f} s/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2048,256")
    parser.add_argument("--beam_width", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=6, help="training epochs per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        wav = speech(Path(tmp) / "speech.wav")
        cfg, features = corpus_features(Path(tmp))
        for h in (int(s) for s in args.sizes.split(",")):
            bench_size(h, wav, args.beam_width, args.epochs, cfg, features, Path(tmp))


if __name__ == "__main__":
    main()
