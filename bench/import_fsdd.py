"""Validate + import throughput on the shared FSDD Common Voice release.

Reads ../shared/data/fsdd-cv/en (read-only) and writes into a temporary work directory.
Prints one `name: value unit` line per figure. Usage:
    python bench/import_fsdd.py [--corpus DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd-cv" / "en"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT)
    parser.add_argument("--workers", type=int, default=0, help="0 = all cores")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"skipped: no corpus at {args.corpus}")
        return

    from deepspeech_core.config import CorpusConfig, FeatureConfig
    from deepspeech_core.data.validation import validate_corpus

    cfg = CorpusConfig(corpus=args.corpus, import_workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest = validate_corpus(cfg, FeatureConfig(), Path(tmp))
        first = time.perf_counter() - started
        audio = sum(manifest.hours.values()) * 3600
        started = time.perf_counter()
        validate_corpus(cfg, FeatureConfig(), Path(tmp))
        rerun = time.perf_counter() - started
    print(f"fsdd_clips: {sum(manifest.counts.values())} clips")
    print(f"fsdd_audio: {audio:.0f} s")
    print(f"fsdd_import_seconds: {first:.2f} s")
    print(f"fsdd_import_throughput: {audio / first:.0f} audio-s/s")
    print(f"fsdd_unchanged_rerun_seconds: {rerun:.3f} s")


if __name__ == "__main__":
    main()
