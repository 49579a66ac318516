"""The pipeline at corpus scale: validate, features, one epoch, evaluation per corpus size.

For each size a Common Voice release is generated from the shared FSDD recordings (1-3
random digits per clip, each a random recording of that digit at a random gain, random
silences between, 48 kHz 64 kbit/s mp3 like Common Voice's; no two clips are the same)
into a cache kept between runs (--corpora), then every stage runs in a child process of
its own, as a user's run would call it, so that each stage's peak RSS is its own (VmHWM
from /proc/<pid>/status; the process tree's summed RSS is sampled beside it, for the
worker pools) and its CPU seconds are those of its process tree (robust to a busy
machine, unlike wall seconds). After the full run: the unchanged rerun (validate +
features + train, everything reused) and 1% new clips (validate + features: only the
new ones are read and featurised), optionally profiled (--profile).

Prints one `name: value unit` line per figure. Usage:
    python bench/scale.py [--sizes 2000,6000,20000] [--beam_width 1] [--workers 0]
    python bench/scale.py --sizes 20000 --profile DIR      # one size per run, then:
    python bench/scale.py --summary_only                    # cross-size figures
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd-cv" / "en"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
STAGES = ("validate", "features", "train", "evaluate")
TSV_COLUMNS = "client_id path sentence up_votes down_votes age gender accent locale segment"
_SOURCE: dict[str, list[tuple[np.ndarray, str]]] = {}  # digit -> (16 kHz float32, speaker)


# --- generating a corpus ------------------------------------------------------------


def _load_source(corpus: Path) -> None:
    """Every shared recording at 16 kHz, by digit (in the parent, before the pool forks)."""
    import pandas as pd

    from deepspeech_core.data.audio_files import read_audio

    table = pd.read_csv(corpus / "validated.tsv", sep="\t", dtype=str, keep_default_na=False)
    for path, sentence, speaker in zip(table.path, table.sentence, table.client_id, strict=True):
        word = sentence.strip(" .!").lower()
        if word in DIGITS:
            pcm = read_audio(corpus / "clips" / path, 16000).samples
            _SOURCE.setdefault(word, []).append((pcm.astype(np.float32) / 32768, speaker[:16]))


def _make_clip(task: tuple[Path, str, int]) -> tuple[str, str, str]:
    """One 48 kHz mp3 of 1-3 random digits; returns (file name, sentence, speaker).

    A clip already on disk (written atomically by an interrupted generation) is kept:
    the seed fixes its words and speaker, so only the encoding is skipped.
    """
    import soxr

    clips, name, seed = task
    rng = np.random.default_rng(seed)
    words = list(rng.choice(DIGITS, size=rng.integers(1, 4)))
    parts, speaker = [np.zeros(int(rng.uniform(0.05, 0.3) * 16000), np.float32)], ""
    for word in words:
        pcm, who = _SOURCE[word][rng.integers(len(_SOURCE[word]))]
        speaker = speaker or who
        parts.append(pcm * rng.uniform(0.3, 1.0))
        parts.append(np.zeros(int(rng.uniform(0.05, 0.4) * 16000), np.float32))
    row = name, " ".join(words).capitalize() + ".", speaker
    if (clips / name).is_file():
        return row
    audio = np.concatenate(parts)
    audio += rng.normal(0, 1e-4, len(audio)).astype(np.float32)  # no two clips identical
    audio48 = soxr.resample(audio, 16000, 48000)
    partial = clips / f".{name}.partial"
    partial.write_bytes(_mp3(np.clip(audio48, -1, 1)))
    partial.rename(clips / name)
    return row


def _mp3(audio48: np.ndarray) -> bytes:
    """48 kHz mono 64 kbit/s mp3 (Common Voice's format) with LAME's fastest setting.

    lameenc at quality 7 encodes 5-6x faster than libsndfile's LAME settings, which
    made generating 28,000 clips take longer than the bench itself.
    """
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(64)
    encoder.set_in_sample_rate(48000)
    encoder.set_channels(1)
    encoder.set_quality(7)
    pcm = (audio48 * 32767).astype("<i2").tobytes()
    return bytes(encoder.encode(pcm) + encoder.flush())


def _append_tsv(tsv: Path, rows: list[tuple[str, str, str]]) -> None:
    new = not tsv.exists()
    with open(tsv, "a", encoding="utf-8") as f:
        if new:
            f.write(TSV_COLUMNS.replace(" ", "\t") + "\n")
        for name, sentence, speaker in rows:
            f.write(f"{speaker}\t{name}\t{sentence}\t2\t0\t\t\t\ten\t\n")


def generate(out: Path, start: int, count: int, seed: int, workers: int, splits: bool) -> None:
    """Clips start..start+count-1 into `out` (a Common Voice locale folder).

    With `splits`, 80/10/10 into train/dev/test; otherwise all into train (a corpus that
    grows by new training recordings).
    """
    (out / "clips").mkdir(parents=True, exist_ok=True)
    tasks = [
        (out / "clips", f"common_voice_en_{i:08d}.mp3", seed * 10_000_000 + i)
        for i in range(start, start + count)
    ]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        rows = list(pool.map(_make_clip, tasks, chunksize=64))
    by_split: dict[str, list] = {"train": [], "dev": [], "test": []}
    for i, row in enumerate(rows):
        split = ("train",) * 8 + ("dev", "test") if splits else ("train",)
        by_split[split[i % len(split)]].append(row)
    for split, split_rows in by_split.items():
        if split_rows or splits:
            _append_tsv(out / f"{split}.tsv", split_rows)


def cached_corpus(
    cache: Path, name: str, start: int, count: int, seed: int, workers: int, splits: bool
) -> Path:
    """A generated locale folder kept in `cache` between runs (mp3 encoding is paid once).

    A folder is complete once its `.complete` marker exists; an interrupted generation
    resumes (clips are written atomically and kept; the TSVs are written anew).
    """
    import fcntl

    root = cache / name
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another bench generating the same corpus: wait
        if (root / ".complete").is_file():
            return root / "en"
        for tsv in (root / "en").glob("*.tsv"):  # rows are appended: made anew from the clips
            tsv.unlink()
        return _generate_cached(root, name, start, count, seed, workers, splits)


def _generate_cached(
    root: Path, name: str, start: int, count: int, seed: int, workers: int, splits: bool
) -> Path:
    t = time.perf_counter()
    generate(root / "en", start, count, seed, workers, splits)
    took = f"{count} clips in {time.perf_counter() - t:.1f} s"
    (root / ".complete").write_text(took + "\n")
    print(f"generated {name}: {took}", flush=True)
    return root / "en"


def linked_copy(source: Path, target: Path) -> None:
    """`target` as a copy of the locale folder `source`: clips hard-linked, TSVs copied.

    The run may grow the copy (new clips, appended rows) without touching the cache.
    """
    target.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(source / "clips"), str(target / "clips")], check=True)
    for tsv in source.glob("*.tsv"):
        (target / tsv.name).write_bytes(tsv.read_bytes())


def add_clips(corpus: Path, new: Path) -> None:
    """Hard-link the clips of the generated folder `new` into `corpus`, append its train rows."""
    for clip in (new / "clips").iterdir():
        os.link(clip, corpus / "clips" / clip.name)
    rows = (new / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[1:]
    with open(corpus / "train.tsv", "a", encoding="utf-8") as f:
        f.writelines(rows)


# --- one stage in a child process -----------------------------------------------------


def _vm_hwm_mb(pid: str | int = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _one_thread() -> None:
    """Feature worker initialiser: one TensorFlow thread, so a worker is one core."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"


def _measured_shard(job):
    from deepspeech_core.features.cache import build_shard

    return build_shard(job), _vm_hwm_mb()


def _process_map(workers: int, worker_peaks: list[float]):
    """`--task_runner processes`: shards on a pool of one-thread processes."""

    def map_fn(_fn, jobs):
        import multiprocessing

        if len(jobs) <= 1:  # one shard: in this process, as the default thread runner would
            out = [_measured_shard(job) for job in jobs]
            return [result for result, _ in out]

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread) as pool:
            out = list(pool.map(_measured_shard, jobs))
        worker_peaks.extend(peak for _, peak in out)
        return [result for result, _ in out]

    return map_fn


def _config(workdir: Path, corpus: Path, beam_width: int, workers: int):
    from deepspeech_core.config import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "workdir": str(workdir),
            "corpus": {"corpus": str(corpus), "import_workers": workers},
            "model": {"n_hidden": 256},
            "training": {
                "epochs": 1,
                "train_batch_size": 16,
                "dev_batch_size": 32,
                "checkpoint_steps": 100_000,
            },
            "evaluation": {"test_batch_size": 32, "report_count": 0, "beam_width": beam_width},
        }
    ).resolved()


def _proc_stats() -> dict[int, list[str]]:
    """/proc/<pid>/stat fields after the command name, for every process."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    return stats


def _tree(pid: int, stats: dict[int, list[str]]) -> list[int]:
    """`pid` and its descendants (forkserver workers are the forkserver's children)."""
    children: dict[int, list[int]] = {}
    for p, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process tree, reaped descendants included.

    Per live process utime + stime + cutime + cstime: a finished pool worker's time is
    in its parent's c-fields once reaped (a forkserver's workers are its children, not
    ours, which is why RUSAGE_CHILDREN alone misses them). A delta over a stage is what
    the stage cost, whatever else the machine was running.
    """
    stats = _proc_stats()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _tree(pid or os.getpid(), stats):
        fields = stats.get(p)
        if fields:
            total += sum(int(f) for f in fields[11:15])
    return total / ticks


class _Clock:
    """Wall and CPU seconds since the last `lap`, stored under a stage's name."""

    def __init__(self, out: dict) -> None:
        self.out, self.wall, self.cpu = out, time.perf_counter(), _cpu_seconds()

    def lap(self, stage: str) -> None:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        self.out[stage], self.out[f"{stage}_cpu"] = wall - self.wall, cpu - self.cpu
        self.wall, self.cpu = wall, cpu


def run_stages(args: argparse.Namespace) -> None:
    """Child: run `args.stage` (comma-separated stages) and print one JSON line."""
    from deepspeech_core.data.validation import validate_corpus

    cfg = _config(args.workdir, args.corpus, args.beam_width, args.workers)
    workers = args.workers or os.cpu_count() or 1
    worker_peaks: list[float] = []
    out: dict = {}
    started = time.perf_counter()
    clock = _Clock(out)
    corpus = validate_corpus(cfg.corpus, cfg.features, cfg.workdir)
    clock.lap("validate")
    out["audio"] = {s: h * 3600 for s, h in corpus.hours.items()}
    out["clips"] = dict(corpus.counts)
    out["imported"] = corpus.imported
    stages = args.stage.split(",")
    if stages != ["validate"]:
        from deepspeech_core.features.cache import build_feature_cache  # TensorFlow

        clock.lap("import_tensorflow")
        features = build_feature_cache(
            corpus,
            cfg.features,
            cfg.workdir,
            cfg.execution.shard_size,
            _process_map(workers, worker_peaks),
        )
        clock.lap("features")
        out["computed"] = features.computed
    if "train" in stages:
        from deepspeech_core.train.loop import train

        clock.lap("import_training")
        train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
        clock.lap("train")
    if "evaluate" in stages:
        from deepspeech_core.evaluate.evaluation import evaluate

        clock.lap("import_evaluation")
        result = evaluate(features, cfg.checkpoint_dir, cfg.evaluation, cfg.workdir / "reports")
        clock.lap("evaluate")
        out["wer"] = result.wer
    out["total"] = time.perf_counter() - started
    out["peak_rss_mb"] = _vm_hwm_mb()
    out["worker_peak_rss_mb"] = max(worker_peaks, default=0.0)
    print("RESULT " + json.dumps(out), flush=True)


def _print_profile(path: Path, top: int = 25) -> None:
    """The profiled run's most expensive functions (cumulative), for the fixed costs."""
    import pstats

    print(f"# cProfile of that run ({path}), top {top} by cumulative time:")
    stats = pstats.Stats(str(path), stream=sys.stdout).sort_stats("cumulative")
    stats.print_stats(r"deepspeech_core|concurrent/futures/process|pandas/io|numpy/lib", top)


def _tree_rss_mb(pid: int) -> float:
    """Summed RSS of `pid` and its descendants (one sample)."""
    stats, page = _proc_stats(), os.sysconf("SC_PAGE_SIZE") / 2**20
    return sum(int(stats[p][21]) * page for p in _tree(pid, stats) if p in stats)


def child(
    stage: str, workdir: Path, corpus: Path, args: argparse.Namespace, profile: Path | None = None
) -> dict:
    """Run stages in a fresh interpreter; its JSON result plus the sampled tree peak.

    With `profile`, the stages run under cProfile and the statistics go to that file.
    """
    cmd = [sys.executable, __file__, "--_stage", stage, "--_workdir", str(workdir)]
    cmd += ["--_corpus", str(corpus), "--beam_width", str(args.beam_width)]
    cmd += ["--workers", str(args.workers)]
    if profile:
        profile.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--_profile", str(profile)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed (exit {proc.returncode})")
    result = json.loads(stdout.rsplit("RESULT ", 1)[1])
    result["tree_peak_rss_mb"] = peak[0]
    return result


# --- the bench ----------------------------------------------------------------------


def _stage_figures(size: int, stage: str, r: dict, seconds: float, audio: float) -> None:
    cpu = r[f"{stage}_cpu"]
    print(f"scale_{size}_{stage}_seconds: {seconds:.1f} s")
    print(f"scale_{size}_{stage}_cpu_seconds: {cpu:.1f} s (process tree, user + system)")
    print(f"scale_{size}_{stage}_throughput: {audio / seconds:.0f} audio-s/s")
    print(f"scale_{size}_{stage}_cpu_throughput: {audio / cpu:.0f} audio-s per CPU-s")
    print(f"scale_{size}_{stage}_ms_per_clip: {1000 * seconds / r['n']:.2f} ms")
    print(f"scale_{size}_{stage}_cpu_ms_per_clip: {1000 * cpu / r['n']:.2f} ms")
    print(f"scale_{size}_{stage}_peak_rss: {r['peak_rss_mb']:.0f} MB")
    print(f"scale_{size}_{stage}_tree_peak_rss: {r['tree_peak_rss_mb']:.0f} MB")
    if r.get("worker_peak_rss_mb"):
        print(f"scale_{size}_{stage}_worker_peak_rss: {r['worker_peak_rss_mb']:.0f} MB")


def corpora(size: int, args: argparse.Namespace) -> tuple[Path, Path]:
    """The cached corpus of `size` clips and its 1 % of new training clips."""
    base = cached_corpus(args.corpora, f"cv{size}", 0, size, size, args.gen_workers, True)
    extra = max(1, size // 100)
    new = cached_corpus(
        args.corpora, f"cv{size}-new{extra}", size, extra, size + 1, args.gen_workers, False
    )
    return base, new


def one_size(size: int, tmp: Path, args: argparse.Namespace) -> dict:
    corpus, work = tmp / f"cv{size}" / "en", tmp / f"work{size}"
    base, new = corpora(size, args)
    linked_copy(base, corpus)
    figures: dict[str, dict] = {}
    stages = [stage for stage in STAGES if stage in args.stages.split(",")]
    for stage in stages:  # each stage in its own process; earlier stages come back reused
        r = child(
            stage if stage == "validate" else f"validate,features,{stage}", work, corpus, args
        )
        audio_all = sum(r["audio"].values())
        clips_all = sum(r["clips"].values())
        audio = {
            "validate": audio_all,
            "features": audio_all,
            "train": r["audio"].get("train", 0),
            "evaluate": r["audio"].get("test", 0),
        }[stage]
        n = {"train": r["clips"]["train"], "evaluate": r["clips"]["test"]}.get(stage, clips_all)
        r["n"] = n
        _stage_figures(size, stage, r, r[stage], audio)
        figures[stage] = {"seconds": r[stage], "cpu": r[f"{stage}_cpu"], "n": n}
        figures[stage] |= {"rss": r["peak_rss_mb"], **r}
        if stage == "evaluate":
            print(f"scale_{size}_test_wer: {r['wer']:.4f} ratio (one epoch; speed, not accuracy)")
    print(f"scale_{size}_audio: {audio_all:.0f} s ({audio_all / 3600:.2f} h, {clips_all} clips)")

    again = [stage for stage in ("validate", "features", "train") if stage in stages]
    rerun = child(",".join(again), work, corpus, args)
    stages_s = sum(rerun[stage] for stage in again)
    stages_cpu = sum(rerun[f"{stage}_cpu"] for stage in again)
    print(f"scale_{size}_unchanged_rerun_seconds: {stages_s:.1f} s ({' + '.join(again)})")
    print(f"scale_{size}_unchanged_rerun_cpu_seconds: {stages_cpu:.1f} s")
    print(f"scale_{size}_unchanged_rerun_process_seconds: {rerun['total']:.1f} s (+ imports)")
    print(
        f"scale_{size}_unchanged_rerun_stages: "
        + ", ".join(f"{stage} {rerun[stage]:.2f} s" for stage in again)
    )
    extra = max(1, size // 100)
    add_clips(corpus, new)
    grown = child("validate,features", work, corpus, args)
    full = figures["validate"]["seconds"] + figures["features"]["features"]
    full_cpu = figures["validate"]["cpu"] + figures["features"]["cpu"]
    part = grown["validate"] + grown["features"]
    part_cpu = grown["validate_cpu"] + grown["features_cpu"]
    print(
        f"scale_{size}_one_percent_new_seconds: {part:.1f} s (validate {grown['validate']:.1f}"
        f" + features {grown['features']:.1f}) for {extra} new clips "
        f"({grown['imported']} imported, {grown['computed']} featurised)"
    )
    print(f"scale_{size}_one_percent_new_cpu_seconds: {part_cpu:.1f} s")
    print(
        f"scale_{size}_one_percent_new_share: {100 * part / full:.1f} % of the full import+features"
        f" ({part:.1f} of {full:.1f} s)"
    )
    print(
        f"scale_{size}_one_percent_new_cpu_share: {100 * part_cpu / full_cpu:.1f} % "
        f"({part_cpu:.1f} of {full_cpu:.1f} CPU-s)"
    )
    if args.profile:  # a second 1 % under cProfile: the timed run above is not slowed
        more = cached_corpus(
            args.corpora,
            f"cv{size}-more{extra}",
            size + extra,
            extra,
            size + 2,
            args.gen_workers,
            False,
        )
        add_clips(corpus, more)
        profile = args.profile / f"one_percent_new_{size}.prof"
        profiled = child("validate,features", work, corpus, args, profile)
        print(
            f"scale_{size}_one_percent_new_profiled_seconds: "
            f"{profiled['validate'] + profiled['features']:.1f} s (under cProfile)"
        )
        _print_profile(profile)
    figures["rerun"], figures["grown"] = rerun, grown
    return figures


def _marginal(stage: str, sizes: list[int], figures: list[dict]) -> None:
    """CPU per added clip between consecutive sizes, and the fixed cost a line fit finds.

    A stage's cost is a fixed part (interpreter pools, TensorFlow in each feature worker,
    tracing) plus a part per clip; linear means the second is the same at every size,
    which the ratio of whole-stage cost to clips hides at small sizes.
    """
    clips = np.array([f["n"] for f in figures], float)
    cpu = np.array([f["cpu"] for f in figures], float)
    steps = np.diff(cpu) / np.diff(clips)
    spread = steps.max() / steps.min() - 1 if len(steps) > 1 and steps.min() > 0 else 0.0
    slope, fixed = np.polyfit(clips, cpu, 1)
    pairs = zip(sizes[:-1], sizes[1:], steps, strict=True)
    print(
        f"scale_{stage}_marginal_cpu_ms_per_clip: "
        + ", ".join(f"{a}->{b} {1000 * m:.2f}" for a, b, m in pairs)
        + f" ms (spread {100 * spread:.0f} %); line fit {1000 * slope:.2f} ms/clip"
        f" + {fixed:.1f} s fixed"
    )


def summary(results: dict[int, dict]) -> None:
    sizes = sorted(results)
    if len(sizes) < 2:
        return
    lo, hi = sizes[0], sizes[-1]
    for stage in (stage for stage in STAGES if all(stage in results[s] for s in sizes)):
        for clock in ("seconds", "cpu"):
            per_clip = [results[s][stage][clock] / results[s][stage]["n"] for s in sizes]
            spread = max(per_clip) / min(per_clip) - 1
            print(
                f"scale_{stage}_per_clip_{'cpu_' if clock == 'cpu' else ''}spread: "
                f"{100 * spread:.0f} % (max/min over {sizes}: "
                + ", ".join(f"{1000 * c:.2f}" for c in per_clip)
                + " ms/clip)"
            )
        _marginal(stage, sizes, [results[s][stage] for s in sizes])
        growth = results[hi][stage]["rss"] / results[lo][stage]["rss"] - 1
        print(f"scale_{stage}_peak_rss_growth_{lo}_to_{hi}: {100 * growth:.0f} %")
        tree = results[hi][stage]["tree_peak_rss_mb"] / results[lo][stage]["tree_peak_rss_mb"] - 1
        print(f"scale_{stage}_tree_peak_rss_growth_{lo}_to_{hi}: {100 * tree:.0f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2000,6000,20000")
    parser.add_argument("--source", type=Path, default=DEFAULT)
    parser.add_argument("--beam_width", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="import/feature processes")
    parser.add_argument("--gen_workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--corpora",
        type=Path,
        default=Path("/work/scale-corpora"),
        help="cache of generated corpora, kept between runs (outside the repository)",
    )
    parser.add_argument(
        "--with_saved",
        action="store_true",
        help="summarise with the sizes earlier runs saved in CORPORA/results",
    )
    parser.add_argument(
        "--summary_only", action="store_true", help="only the summary of the saved sizes"
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="validate,features for the import figures alone (unchanged rerun and 1 %% new)",
    )
    parser.add_argument("--generate_only", action="store_true", help="fill the cache and stop")
    parser.add_argument(
        "--tmp", type=Path, default=None, help="folder for the runs (default: in --corpora)"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="folder for a cProfile of each 1 %% run"
    )
    parser.add_argument("--_stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_profile", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", dest="workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_corpus", dest="corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args._stage:
        args.stage = args._stage
        if args._profile:
            import cProfile

            import deepspeech_core.data.validation
            import deepspeech_core.features.cache  # noqa: F401  TensorFlow: not in the profile

            cProfile.runctx("run_stages(args)", globals(), {"args": args}, args._profile)
        else:
            run_stages(args)
        return
    if not (args.source / "validated.tsv").is_file():
        print(f"skipped: no FSDD release at {args.source}")
        return
    _load_source(args.source)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.generate_only:
        for size in sizes:
            corpora(size, args)
        return
    if args.summary_only:
        summary(_saved(args.corpora))
        return
    results = {}
    args.corpora.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.tmp or args.corpora) as tmp:
        for size in sizes:
            print(f"# {size} clips, load average {os.getloadavg()[0]:.1f}", flush=True)
            results[size] = one_size(size, Path(tmp), args)
            tag = "" if args.stages == ",".join(STAGES) else "-" + args.stages.replace(",", "-")
            saved = args.corpora / "results" / f"{size}{tag}.json"
            saved.parent.mkdir(exist_ok=True)
            saved.write_text(json.dumps(results[size], default=str))
            print(f"# done, load average {os.getloadavg()[0]:.1f}", flush=True)
            sys.stdout.flush()
            for d in (Path(tmp) / f"cv{size}", Path(tmp) / f"work{size}"):
                subprocess.run(["rm", "-rf", str(d)], check=False)
    if args.with_saved:  # sizes run by earlier invocations (one size per run on a busy day)
        results = _saved(args.corpora) | results
    summary(results)


def _saved(corpora: Path) -> dict[int, dict]:
    """Per-size results earlier runs saved in CORPORA/results."""
    return {
        int(saved.stem): json.loads(saved.read_text())
        for saved in sorted((corpora / "results").glob("*.json"))
        if saved.stem.isdigit()  # all stages (not a --stages validate,features run)
    }


if __name__ == "__main__":
    main()
