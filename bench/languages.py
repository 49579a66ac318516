"""Training in other scripts: test CER of a short training against an untrained model.

Speaks a one-word-per-clip corpus per language with espeak-ng (deepspeech_core's
language_corpora), validates it with the default normalisation (Mandarin in
--bytes_output_mode), trains a small model and decodes the test clips greedily with it
and with the same network untrained. In bytes output mode it also counts what the
unconstrained best path (any byte after any other) would have written: test transcripts
that are not valid UTF-8 and its CER. Prints one `name: value unit` line per figure.
Usage:
    python bench/languages.py [--languages ru,cmn] [--clips 60] [--vocabulary 5] [--epochs 40]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_language(root: Path, language: str, args: argparse.Namespace) -> dict[str, float]:
    from deepspeech_core.config import PipelineConfig
    from deepspeech_core.data.language_corpora import make_language_corpus
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.evaluate.decoders import GreedyDecoder
    from deepspeech_core.evaluate.error_rates import corpus_error_rates
    from deepspeech_core.evaluate.evaluation import decode_split
    from deepspeech_core.features.batches import SplitIndex
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.model.checkpoints import load_model
    from deepspeech_core.train.loop import train

    cv = make_language_corpus(
        root / "cv",
        language,
        count=args.clips,
        seed=5,
        dev=2,
        test=6,
        words=1,
        distinct=False,
        vocabulary=args.vocabulary or None,
    )
    cfg = PipelineConfig.model_validate(
        {
            "workdir": str(root / language),
            "corpus": {"corpus": str(cv), "bytes_output_mode": language == "cmn"},
            "model": {"n_hidden": args.n_hidden},
            "training": {
                "epochs": args.epochs,
                "train_batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "seed": 7,
            },
        }
    ).resolved()
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
    features = build_feature_cache(corpus, cfg.features, cfg.workdir)
    started, cpu_started = time.perf_counter(), time.process_time()
    trained = train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    model, spec, _ = load_model(trained.checkpoint_dir, "best")
    index = SplitIndex.load(features.indexes["test"], spec.alphabet)
    decoder = GreedyDecoder(spec.alphabet)
    n_input = cfg.features.n_input
    _, texts = decode_split(model, decoder, index, 8, n_input)
    _, untrained = decode_split(spec.build(), decoder, index, 8, n_input)
    _, raw = decode_split(model, _Unconstrained(spec.alphabet), index, 8, n_input)
    return {
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "steps": trained.steps,
        "cer": corpus_error_rates(index.transcripts, texts)[1],
        "cer_untrained": corpus_error_rates(index.transcripts, untrained)[1],
        "invalid_utf8": sum("\ufffd" in t for t in texts),
        "unconstrained_cer": corpus_error_rates(index.transcripts, raw)[1],
        "unconstrained_invalid_utf8": sum("\ufffd" in t for t in raw),
        "clips": len(texts),
        "examples": " | ".join(f"{r}->{h}" for r, h in zip(index.transcripts, texts, strict=True)),
    }


class _Unconstrained:
    """The plain best path: argmax per frame, whatever bytes it spells (U+FFFD where
    they are not UTF-8), as decoding was before it kept to valid UTF-8."""

    name = "greedy-unconstrained"

    def __init__(self, alphabet) -> None:
        self.alphabet = alphabet

    def decode(self, logits) -> str:
        import numpy as np

        best = np.asarray(logits).argmax(axis=-1)
        path = best[best != np.r_[-1, best[:-1]]]
        return self.alphabet.decode(int(c) for c in path if c != self.alphabet.blank_index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", default="ru,cmn")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--vocabulary", type=int, default=5, help="words used; 0 = all")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--n_hidden", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=0.003)
    parser.add_argument("--batch_size", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for language in args.languages.split(","):
            figures = run_language(Path(tmp), language, args)
            print(f"languages_{language}_train_seconds: {figures['train_seconds']:.1f} s")
            print(f"languages_{language}_train_cpu_seconds: {figures['train_cpu_seconds']:.1f} s")
            print(f"languages_{language}_steps: {figures['steps']} steps")
            print(f"languages_{language}_test_cer: {figures['cer']:.3f}")
            print(f"languages_{language}_test_cer_untrained: {figures['cer_untrained']:.3f}")
            print(
                f"languages_{language}_invalid_utf8_transcripts: "
                f"{figures['invalid_utf8']} of {figures['clips']}"
            )
            print(
                f"languages_{language}_unconstrained_greedy_test_cer: "
                f"{figures['unconstrained_cer']:.3f}"
            )
            print(
                f"languages_{language}_unconstrained_greedy_invalid_utf8_transcripts: "
                f"{figures['unconstrained_invalid_utf8']} of {figures['clips']}"
            )
            print(f"languages_{language}_test_transcripts: {figures['examples']}")


if __name__ == "__main__":
    main()
