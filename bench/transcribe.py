"""Transcription speed of an exported model: real-time factor per backend and decoder.

Exports a randomly initialised model (29 classes) of each size exactly as the export
stage does (SavedModel + verified streaming TFLite), then times
`deepspeech-flow transcribe`'s path (read and resample a wav, MFCCs, model, decoder) on a
clip of `--seconds` seconds. RTF = compute seconds / audio seconds (lower is faster).
Beam search on an untrained model's flat logits is its worst case.
Prints one `name: value unit` line per figure. Usage:
    python bench/transcribe.py [--sizes 2048,256] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"


def _export(h: int, work: Path) -> Path:
    import numpy as np

    from deepspeech_core.config import FeatureConfig, ModelConfig
    from deepspeech_core.data.alphabet import Alphabet
    from deepspeech_core.export.export_model import export_model
    from deepspeech_core.model.checkpoints import ModelSpec, save_inference_checkpoint

    spec = ModelSpec(Alphabet(ALPHABET), FeatureConfig(), ModelConfig(n_hidden=h))
    save_inference_checkpoint(spec.build(), spec, work / "checkpoint")
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(300, 26)).astype(np.float32) for _ in range(2)]
    started = time.perf_counter()
    manifest = export_model(work / "checkpoint", work / "export", verify_clips=clips)
    print(f"export_seconds_n_hidden_{h}: {time.perf_counter() - started:.1f} s")
    print(f"saved_model_size_n_hidden_{h}: {manifest.size_bytes / 1e6:.2f} MB")
    for name, tflite in manifest.tflite.items():
        print(f"{name.replace('.', '_')}_size_n_hidden_{h}: {tflite.size_bytes / 1e6:.2f} MB")
    return manifest.export_dir.parent


def _rtf(transcriber, wav: Path, seconds: float, repeats: int = 2) -> float:
    transcriber.transcribe_file(wav)  # warm-up: traces graphs, loads the interpreter
    started = time.perf_counter()
    for _ in range(repeats):
        transcriber.transcribe_file(wav)
    return (time.perf_counter() - started) / repeats / seconds


def bench_size(h: int, seconds: float, work: Path) -> None:
    import numpy as np
    import soundfile

    from deepspeech_core.config import DecoderConfig
    from deepspeech_core.export.transcriber import Transcriber

    root = _export(h, work)
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * 16000)) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=t.size)
    wav = work / "clip.wav"
    soundfile.write(wav, audio.astype(np.float32), 16000, subtype="PCM_16")
    greedy = DecoderConfig(beam_width=1)
    for backend in ("saved_model", "tflite", "tflite_quant"):
        rtf = _rtf(Transcriber(root, backend, greedy), wav, seconds)  # type: ignore[arg-type]
        print(f"transcribe_rtf_{backend}_greedy_n_hidden_{h}: {rtf:.4f} s/s")
    beam = Transcriber(root, "saved_model", DecoderConfig(beam_width=1024))
    print(
        f"transcribe_rtf_saved_model_beam1024_n_hidden_{h}: {_rtf(beam, wav, seconds, 1):.4f} s/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2048,256")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    for h in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            bench_size(h, args.seconds, Path(tmp))


if __name__ == "__main__":
    main()
