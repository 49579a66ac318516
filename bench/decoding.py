"""Evaluation speed and WER per decoder, beam width 1024, on a trained model and on an
untrained model's flat logits, with and without a language model.

Trains n_hidden 128 on a corpus (default: the shared FSDD Common Voice layout, 3 epochs,
about 5 minutes on 2 cores; without it a 120-clip espeak-ng corpus, 25 epochs), or
reuses a `deepspeech-flow run` work directory (`--workdir`), builds a 3-gram ARPA of
the training transcripts, and decodes the test split with each decoder. Throughput is
the test audio's seconds over the wall time of `evaluation.decode_split`: the model's
forward pass plus decoding, in parallel processes where evaluation uses them.
Today's decoders (flashlight-text's, parallel) are shown beside the ones they replaced
(TensorFlow's beam search, pyctcdecode's with the LM; one process, as they ran).
Prints one `name: value unit` line per figure. Usage:
    python bench/decoding.py [--workdir W] [--corpus PATH] [--epochs 3] [--beam_width 1024]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED_FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd-cv" / "en"


def _trained_workdir(args, tmp: Path):
    """(feature manifest, checkpoint dir, train transcripts) of a trained model."""
    import pandas as pd

    from deepspeech_core.config import PipelineConfig
    from deepspeech_core.data.demo_corpus import make_demo_corpus
    from deepspeech_core.data.validation import validate_corpus
    from deepspeech_core.features.cache import build_feature_cache
    from deepspeech_core.manifests import FeatureCacheManifest
    from deepspeech_core.train.loop import train

    if args.workdir is not None:
        (manifest,) = Path(args.workdir).glob("features/*/manifest.json")
        features = FeatureCacheManifest.model_validate_json(manifest.read_text())
        train_csv = Path(args.workdir) / "corpus" / "train.csv"
        text = pd.read_csv(train_csv, keep_default_na=False).transcript
        return features, Path(args.workdir) / "checkpoints", text
    corpus_dir = args.corpus
    epochs = args.epochs
    if corpus_dir is None and SHARED_FSDD.is_dir():
        corpus_dir, epochs = SHARED_FSDD, epochs or 3
    if corpus_dir is None:
        corpus_dir, epochs = make_demo_corpus(tmp / "cv", count=120, seed=3), epochs or 25
    cfg = PipelineConfig.model_validate(
        {
            "workdir": str(tmp / "work"),
            "corpus": {"corpus": str(corpus_dir)},
            "model": {"n_hidden": 128},
            "training": {"epochs": epochs, "train_batch_size": 8, "dev_batch_size": 8},
        }
    ).resolved()
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
    features = build_feature_cache(corpus, cfg.features, cfg.workdir)
    train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
    text = pd.read_csv(corpus.splits["train"], keep_default_na=False).transcript
    return features, cfg.checkpoint_dir, text


def _decoders(alphabet, beam_width: int, arpa: Path, scorer: Path | None):
    """(name, decoder, workers) for every decoder the bench compares."""
    from deepspeech_core.evaluate.decoders import (
        BeamSearchDecoder,
        GreedyDecoder,
        LMBeamSearchDecoder,
        PyctcdecodeLMDecoder,
        TensorFlowBeamSearchDecoder,
        available_cores,
    )

    cores = available_cores()
    yield "greedy", GreedyDecoder(alphabet), 1
    yield f"beam{beam_width}", BeamSearchDecoder(alphabet, beam_width), cores
    yield f"beam{beam_width}_tensorflow", TensorFlowBeamSearchDecoder(alphabet, beam_width), 1
    yield f"beam{beam_width}_lm", LMBeamSearchDecoder(alphabet, arpa, beam_width), cores
    if scorer is not None:
        yield f"beam{beam_width}_scorer", LMBeamSearchDecoder(alphabet, scorer, beam_width), cores
    yield (
        f"beam{beam_width}_lm_pyctcdecode",
        PyctcdecodeLMDecoder(alphabet, arpa, beam_width),
        1,
    )


def _scorer(arpa: Path, alphabet, tmp: Path) -> Path | None:
    """The ARPA as a .scorer package (its trie the lexicon), where KenLM's tools exist."""
    from deepspeech_core.evaluate.kenlm_tools import KenLMToolError, write_scorer

    try:
        write_scorer(arpa, tmp / "lm.scorer", alphabet, alpha=0.931, beta=1.183)
    except KenLMToolError:
        return None
    return tmp / "lm.scorer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, help="a trained `deepspeech-flow run` workdir")
    parser.add_argument("--corpus", type=Path, help="a Common Voice corpus to train on")
    parser.add_argument("--epochs", type=int, default=0, help="0: 3 on FSDD, 25 on espeak")
    parser.add_argument("--beam_width", type=int, default=1024)
    parser.add_argument(
        "--flat_clips", type=int, default=20, help="test clips decoded from flat logits"
    )
    parser.add_argument("--only", default="", help="comma-separated decoder names to run")
    parser.add_argument(
        "--repeat",
        type=int,
        default=4,
        help="decode the trained model's test split this many times over (fixed costs, "
        "tracing the model and starting the workers, weigh as on a larger test set)",
    )
    args = parser.parse_args()

    from deepspeech_core.evaluate.arpa_lm import write_arpa
    from deepspeech_core.evaluate.error_rates import corpus_error_rates
    from deepspeech_core.evaluate.evaluation import decode_split
    from deepspeech_core.features.batches import SplitIndex
    from deepspeech_core.model.checkpoints import load_model

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        features, checkpoint_dir, train_text = _trained_workdir(args, tmp)
        model, spec, _ = load_model(checkpoint_dir, "best")
        untrained = spec.build()
        index = SplitIndex.load(features.indexes["test"], spec.alphabet)
        for _ in range(args.repeat - 1):
            index = index.concat(SplitIndex.load(features.indexes["test"], spec.alphabet))
        audio = float(index.durations.sum())
        arpa = write_arpa(train_text, tmp / "lm.arpa", order=3)
        scorer = _scorer(arpa, spec.alphabet, tmp)
        print(f"test_clips: {len(index)} clips")
        print(f"test_audio: {audio:.1f} s")
        flat_index = _head(index, args.flat_clips)
        flat_audio = float(flat_index.durations.sum())
        for name, decoder, workers in _decoders(spec.alphabet, args.beam_width, arpa, scorer):
            if args.only and name not in args.only.split(","):
                continue
            for kind, net, clips, of_audio in (
                ("trained", model, index, audio),
                ("flat", untrained, flat_index, flat_audio),
            ):
                cpu = _cpu_seconds()
                started = time.perf_counter()
                _, texts = decode_split(net, decoder, clips, 8, spec.features.n_input, workers)
                seconds = time.perf_counter() - started
                cpu = _cpu_seconds() - cpu
                wer, cer = corpus_error_rates(list(clips.transcripts), texts)
                print(f"evaluate_throughput_{name}_{kind}: {of_audio / seconds:.1f} audio-s/s")
                print(f"evaluate_cpu_{name}_{kind}: {of_audio / cpu:.1f} audio-s/CPU-s")
                print(f"test_wer_{name}_{kind}: {wer:.4f} ratio")
                print(f"test_cer_{name}_{kind}: {cer:.4f} ratio", flush=True)


def _head(index, count: int):
    """The first `count` clips of a split index (the slow decoders on flat logits)."""
    import dataclasses

    n = min(count, len(index))
    fields = ("shards", "offsets", "n_frames", "durations", "transcripts", "labels")
    fields += ("wav_filenames", "sources")
    return dataclasses.replace(index, **{f: getattr(index, f)[:n] for f in fields})


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the decoding workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
