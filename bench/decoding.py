"""Decoders on a model that has learnt something: WER and speed of greedy, beam, beam+LM.

Speaks a 120-clip espeak-ng corpus, trains n_hidden 128 for 25 epochs (about a minute),
builds a 3-gram ARPA from the training transcripts (`deepspeech-flow build-lm`'s code),
then evaluates the test split with each decoder.
Prints one `name: value unit` line per figure. Usage:
    python bench/decoding.py [--clips 120] [--epochs 25]
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
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args()

    import pandas as pd

    from deepspeech_core.config import PipelineConfig
    from deepspeech_core.corpus import validate_corpus
    from deepspeech_core.demo_corpus import make_demo_corpus
    from deepspeech_core.evaluation import evaluate
    from deepspeech_core.feature_cache import build_feature_cache
    from deepspeech_core.language_model import write_arpa
    from deepspeech_core.training import train

    with tempfile.TemporaryDirectory() as tmp:
        cv = make_demo_corpus(Path(tmp) / "cv", count=args.clips, seed=3)
        cfg = PipelineConfig.model_validate(
            {
                "workdir": str(Path(tmp) / "work"),
                "corpus": {"corpus": str(cv)},
                "model": {"n_hidden": 128},
                "training": {
                    "epochs": args.epochs,
                    "train_batch_size": 8,
                    "dev_batch_size": 8,
                    "learning_rate": 0.002,
                    "seed": 7,
                },
                "evaluation": {"test_batch_size": 8, "report_count": 0},
            }
        ).resolved()
        corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
        features = build_feature_cache(corpus, cfg.features, cfg.workdir)
        train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
        train_text = pd.read_csv(corpus.splits["train"], keep_default_na=False).transcript
        arpa = write_arpa(train_text, Path(tmp) / "lm.arpa", order=3)
        test_audio = corpus.hours["test"] * 3600
        print(f"test_clips: {corpus.counts['test']} clips")
        for name, decoder in (
            ("greedy", {"beam_width": 1}),
            ("beam1024", {"beam_width": 1024}),
            ("beam1024_lm", {"beam_width": 1024, "scorer_path": arpa}),
        ):
            started = time.perf_counter()
            result = evaluate(
                features,
                cfg.checkpoint_dir,
                cfg.evaluation.model_copy(update=decoder),
                cfg.workdir / name,
            )
            seconds = time.perf_counter() - started
            print(f"test_wer_{name}: {result.wer:.4f} ratio")
            print(f"test_cer_{name}: {result.cer:.4f} ratio")
            print(f"evaluate_throughput_{name}: {test_audio / seconds:.1f} audio-s/s")


if __name__ == "__main__":
    main()
