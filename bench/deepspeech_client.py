"""DeepSpeech 0.9.3's client (libdeepspeech, TFLite build) on our output_graph.tflite.

For randomly initialised models (29 classes; speed does not depend on training),
converts output_graph.tflite and output_graph.quant.tflite as the export does, then
times libdeepspeech's DS_SpeechToText (MFCCs, acoustic model, its CTC beam search) on
~10 s of espeak-ng speech in a child process, beside our own streaming TFLite model
(model.tflite / model.quant.tflite, TFLiteStreamer, 1 thread, greedy) on the same
audio. RTF = compute seconds per audio second. libdeepspeech runs TFLite with 4 threads
(fixed in its code). Prints one `name: value unit` line per figure. Usage:
    python bench/deepspeech_client.py [--sizes 2048,256] [--beam_width 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
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


def bench_size(h: int, wav: Path, beam_width: int, out: Path) -> None:
    import numpy as np

    from deepspeech_core.alphabet import Alphabet
    from deepspeech_core.audio import read_audio
    from deepspeech_core.checkpoints import ModelSpec
    from deepspeech_core.config import FeatureConfig, ModelConfig
    from deepspeech_core.decoding import GreedyDecoder
    from deepspeech_core.deepspeech_client import run_client
    from deepspeech_core.deepspeech_export import (
        DeepSpeechGraph,
        DeepSpeechMetadata,
        convert_deepspeech_tflite,
    )
    from deepspeech_core.features import MfccExtractor
    from deepspeech_core.tflite_export import TFLiteStreamer, convert_tflite

    spec = ModelSpec(Alphabet(ALPHABET), FeatureConfig(), ModelConfig(n_hidden=h))
    model = spec.build()
    started = time.perf_counter()
    graph = DeepSpeechGraph(model, spec, DeepSpeechMetadata.for_model(spec))
    converted = convert_deepspeech_tflite(graph)
    print(f"client_graphs_convert_seconds_n_hidden_{h}: {time.perf_counter() - started:.1f} s")
    pcm16 = read_audio(wav, 16000).samples
    audio_seconds = len(pcm16) / 16000
    extractor = MfccExtractor(spec.features)
    for label, quantize in (("fp32", False), ("quant", True)):
        path = out / f"output_graph_{h}_{label}.tflite"
        path.write_bytes(converted[quantize])
        print(f"client_size_{label}_n_hidden_{h}: {path.stat().st_size / 1e6:.2f} MB")
        for beam in (beam_width, 1):
            run = run_client("tflite", path, [wav, wav], beam_width=beam)  # 2nd: warm
            record = run.records[-1]
            rtf = record["seconds"] / record["audio_seconds"]
            print(f"client_rtf_{label}_n_hidden_{h}_beam_{beam}: {rtf:.4f} s/s")
        print(f"client_load_seconds_{label}_n_hidden_{h}: {run.header['load_seconds']:.3f} s")

        ours = TFLiteStreamer(convert_tflite(model, spec, quantize), num_threads=1)
        ours.logits(np.zeros((64, spec.features.n_input), np.float32))  # warm up
        started = time.perf_counter()
        GreedyDecoder(spec.alphabet).decode(ours.logits(extractor(pcm16)))
        rtf = (time.perf_counter() - started) / audio_seconds
        print(f"our_tflite_streaming_rtf_{label}_n_hidden_{h}_greedy: {rtf:.4f} s/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2048,256")
    parser.add_argument("--beam_width", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        wav = speech(Path(tmp) / "speech.wav")
        for h in (int(s) for s in args.sizes.split(",")):
            bench_size(h, wav, args.beam_width, Path(tmp))


if __name__ == "__main__":
    main()
