"""Throughput of every pipeline stage on a generated espeak-ng corpus (no Prefect).

Prints one `name: value unit` line per figure. Usage:
    python bench/pipeline_stages.py [--clips 300] [--n_hidden 256] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--n_hidden", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()

    from deepspeech_core.config import PipelineConfig
    from deepspeech_core.data.demo_corpus import make_demo_corpus
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.evaluate.evaluation import evaluate
    from deepspeech_core.export.export_model import export_model, verification_clips
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cv = make_demo_corpus(work / "cv", count=args.clips, seed=11)
        cfg = PipelineConfig.model_validate(
            {
                "workdir": str(work / "work"),
                "corpus": {"corpus": str(cv)},
                "model": {"n_hidden": args.n_hidden},
                "training": {
                    "epochs": args.epochs,
                    "train_batch_size": args.batch_size,
                    "dev_batch_size": 32,
                    "checkpoint_steps": 10_000,
                },
                "evaluation": {"test_batch_size": 32, "report_count": 0},
            }
        ).resolved()

        t = time.perf_counter()
        corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
        validate_s = time.perf_counter() - t
        audio_s = sum(corpus.hours.values()) * 3600
        print(f"corpus_audio: {audio_s:.1f} s")
        print(f"validate_import_throughput: {audio_s / validate_s:.0f} audio-s/s")

        t = time.perf_counter()
        features = build_feature_cache(corpus, cfg.features, cfg.workdir)
        print(f"feature_build_throughput: {audio_s / (time.perf_counter() - t):.0f} audio-s/s")

        t = time.perf_counter()
        result = train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
        train_s = time.perf_counter() - t
        trained_audio = corpus.hours["train"] * 3600 * args.epochs
        print(f"train_throughput_n_hidden_{args.n_hidden}: {trained_audio / train_s:.0f} audio-s/s")
        print(f"train_steps_per_second: {result.steps / train_s:.2f} steps/s")

        test_audio = corpus.hours["test"] * 3600
        for name, beam_width in (("greedy", 1), ("beam1024", 1024)):
            decoder = cfg.evaluation.model_copy(update={"beam_width": beam_width})
            t = time.perf_counter()
            evaluation = evaluate(features, cfg.checkpoint_dir, decoder, cfg.workdir / name)
            rate = test_audio / (time.perf_counter() - t)
            print(f"evaluate_throughput_{name}: {rate:.0f} audio-s/s")
            print(f"test_wer_{name}: {evaluation.wer:.4f} ratio")

        t = time.perf_counter()
        exported = export_model(
            cfg.checkpoint_dir,
            cfg.export_dir,
            evaluation=evaluation,
            corpus=corpus,
            verify_clips=verification_clips(features),
        )
        print(f"export_seconds: {time.perf_counter() - t:.1f} s")
        print(f"saved_model_size: {exported.size_bytes / 1e6:.1f} MB")
        for name, tflite in exported.tflite.items():
            label = name.replace(".", "_")
            print(f"{label}_size: {tflite.size_bytes / 1e6:.2f} MB")
            print(f"{label}_max_abs_diff: {tflite.max_abs_diff:.2e} logit")


if __name__ == "__main__":
    main()
