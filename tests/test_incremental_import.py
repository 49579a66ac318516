"""A grown corpus reads only its new clips; a changed imported wav is read again."""

import shutil
from pathlib import Path

import pandas as pd

from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data import audio_import
from deepspeech_core.data.validation import validate_corpus

FEATURES = FeatureConfig()


def _copy_corpus(src: Path, dst: Path, keep_train: int) -> list[str]:
    """Copy a Common Voice release keeping the first `keep_train` train rows; the rest's
    clip names are returned (added later)."""
    shutil.copytree(src, dst)
    train = pd.read_csv(dst / "train.tsv", sep="\t", dtype=str, keep_default_na=False)
    train.head(keep_train).to_csv(dst / "train.tsv", sep="\t", index=False)
    return list(train.path[keep_train:])


def _counting_reads(monkeypatch) -> list[str]:
    read: list[str] = []
    real = audio_import.run_job

    def counting(job):
        read.append(Path(job.source).name)
        return real(job)

    monkeypatch.setattr(audio_import, "run_job", counting)
    return read


def test_grown_corpus_reads_only_new_clips(tiny_cv, tmp_path, monkeypatch):
    corpus = tmp_path / "cv"
    new = _copy_corpus(tiny_cv, corpus, keep_train=24)
    cfg = CorpusConfig(corpus=corpus, import_workers=1)  # in-process: run_job is counted
    work = tmp_path / "work"
    read = _counting_reads(monkeypatch)
    first = validate_corpus(cfg, FEATURES, work)
    assert len(read) == sum(first.counts.values()) and first.imported == len(read)

    shutil.copy(tiny_cv / "train.tsv", corpus / "train.tsv")  # the corpus grows
    read.clear()
    grown = validate_corpus(cfg, FEATURES, work)
    assert sorted(read) == sorted(new), "only the new clips are read"
    assert grown.imported == len(new) and grown.counts["train"] == first.counts["train"] + len(new)

    # the same splits, hashes and durations as validating the grown corpus afresh
    fresh = validate_corpus(cfg, FEATURES, tmp_path / "fresh")
    for split in grown.splits:
        a = pd.read_csv(grown.splits[split]).drop(columns=["wav_filename"])
        b = pd.read_csv(fresh.splits[split]).drop(columns=["wav_filename"])
        pd.testing.assert_frame_equal(a, b)

    # an imported wav changed behind our back is read (and converted) again
    train = pd.read_csv(grown.splits["train"])
    damaged = Path(train.wav_filename[0])
    damaged.write_bytes(damaged.read_bytes()[:-100])
    read.clear()
    healed = validate_corpus(cfg, FEATURES, work)
    assert len(read) == 1 and healed.imported == 1
    assert pd.read_csv(healed.splits["train"]).content_hash[0] == train.content_hash[0]


def _jobs(tiny_cv: Path, clips_dir: Path, count: int) -> list[audio_import.ImportJob]:
    sources = sorted((tiny_cv / "clips").iterdir())[:count]
    clips_dir.mkdir(parents=True, exist_ok=True)
    return [audio_import.plan_job(s, clips_dir, FEATURES.audio_sample_rate) for s in sources]


def test_a_few_new_clips_convert_without_starting_a_pool(tiny_cv, tmp_path, monkeypatch):
    """A grown corpus's handful of new clips: a pool's start-up would cost more than them."""

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started for a few clips")

    monkeypatch.setattr(audio_import, "ProcessPoolExecutor", no_pool)
    jobs = _jobs(tiny_cv, tmp_path, 20)
    results = list(audio_import.run_jobs(jobs, workers=2))
    assert len(results) == 20 and all(r.converted and not r.reason for r in results)


def test_many_clips_convert_on_the_pool_as_in_process(tiny_cv, tmp_path, monkeypatch):
    monkeypatch.setattr(audio_import, "MIN_POOL_JOBS", 4)
    pooled = list(audio_import.run_jobs(_jobs(tiny_cv, tmp_path / "pool", 6), workers=2))
    serial = list(audio_import.run_jobs(_jobs(tiny_cv, tmp_path / "serial", 6), workers=1))
    assert [r.pcm_sha256 for r in pooled] == [r.pcm_sha256 for r in serial]
    assert all(r.converted and r.n_samples > 0 for r in pooled)
