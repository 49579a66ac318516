"""libdeepspeech 0.9.3, the C library under every DeepSpeech client, driven through ctypes.

The PyPI wheels `deepspeech-tflite==0.9.3` (TFLite build: Android, iOS, Raspberry Pi) and
`deepspeech==0.9.3` (TensorFlow build: desktop, servers) each hold
`deepspeech/lib/libdeepspeech.so`, which needs no Python: `fetch_library` downloads the
wheel once with pip (for CPython 3.9, whatever Python runs here) and keeps only the
library in a cache directory. `LibDeepSpeech` calls its C API (native_client/deepspeech.h).

A client that dislikes a model can crash the whole process (a segmentation fault, not
an exception), so callers outside tests' and tools' control run it in a child process:
`run_client` starts `python -m deepspeech_core.export.deepspeech_client transcribe ...`, which
prints one JSON object per clip. This module imports neither TensorFlow nor numpy, so
the child starts in a fraction of a second and the TensorFlow build's own copy of
TensorFlow never meets ours.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

CLIENT_VERSION = "0.9.3"
Build = Literal["tflite", "tensorflow"]
WHEELS: dict[str, str] = {"tflite": "deepspeech-tflite", "tensorflow": "deepspeech"}
LIBRARY_MEMBER = "deepspeech/lib/libdeepspeech.so"
CACHE_ENV = "DEEPSPEECH_CLIENT_CACHE"


class ClientUnavailableError(RuntimeError):
    """libdeepspeech could not be fetched (no network, no registry); the message says why."""


class ClientError(RuntimeError):
    """libdeepspeech refused a model or failed to run it."""


def cache_dir() -> Path:
    """Where the libraries live: $DEEPSPEECH_CLIENT_CACHE, else ~/.cache/deepspeech-flow."""
    default = Path.home() / ".cache" / "deepspeech-flow" / f"deepspeech-{CLIENT_VERSION}"
    return Path(os.environ.get(CACHE_ENV) or default)


def library_path(build: Build, root: Path | None = None) -> Path:
    return (root or cache_dir()) / build / "libdeepspeech.so"


def fetch_library(build: Build, root: Path | None = None, timeout: float = 300) -> Path:
    """The cached libdeepspeech.so of `build`, downloading its 0.9.3 wheel the first time.

    The wheel is for CPython 3.9 on manylinux1 x86_64; only the C library is kept (it
    does not need the Python that the wheel was built for).
    """
    target = library_path(build, root)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    requirement = f"{WHEELS[build]}=={CLIENT_VERSION}"
    with tempfile.TemporaryDirectory(prefix="libdeepspeech-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--python-version",
            "3.9",
            "--only-binary=:all:",
            "--platform",
            "manylinux1_x86_64",
            "--dest",
            tmp,
            requirement,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ClientUnavailableError(
                f"pip download {requirement} took more than {timeout:.0f} s: is PyPI reachable?"
            ) from exc
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ClientUnavailableError(
                f"cannot download {requirement} from the package registry (pip said: "
                f"{done.stderr.strip()[-400:] or done.stdout.strip()[-400:]}). Check the network "
                f"or a pip index setting, or put libdeepspeech.so at {target} by hand."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            partial.write_bytes(wheel.read(LIBRARY_MEMBER))
            partial.chmod(0o755)
            os.replace(partial, target)  # another process may have won the race: same file
    return target


def _c_string(pointer: int | None, free) -> str:
    if not pointer:
        return ""
    try:
        return ctypes.string_at(pointer).decode("utf-8", errors="replace")
    finally:
        free(ctypes.c_void_p(pointer))


class LibDeepSpeech:
    """The C API of one libdeepspeech.so (native_client/deepspeech.h of 0.9.3)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        lib = ctypes.CDLL(str(self.path))
        void_p, c_int, c_uint = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint
        short_p = ctypes.POINTER(ctypes.c_short)
        signatures = {
            "DS_Version": ([], void_p),
            "DS_FreeString": ([void_p], None),
            "DS_ErrorCodeToErrorMessage": ([c_int], void_p),
            "DS_CreateModel": ([ctypes.c_char_p, ctypes.POINTER(void_p)], c_int),
            "DS_FreeModel": ([void_p], None),
            "DS_GetModelSampleRate": ([void_p], c_int),
            "DS_GetModelBeamWidth": ([void_p], c_uint),
            "DS_SetModelBeamWidth": ([void_p, c_uint], c_int),
            "DS_EnableExternalScorer": ([void_p, ctypes.c_char_p], c_int),
            "DS_SpeechToText": ([void_p, short_p, c_uint], void_p),
            "DS_CreateStream": ([void_p, ctypes.POINTER(void_p)], c_int),
            "DS_FeedAudioContent": ([void_p, short_p, c_uint], None),
            "DS_IntermediateDecode": ([void_p], void_p),
            "DS_FinishStream": ([void_p], void_p),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, restype
        self._lib = lib

    def version(self) -> str:
        return _c_string(self._lib.DS_Version(), self._lib.DS_FreeString)

    def error_message(self, code: int) -> str:
        return _c_string(self._lib.DS_ErrorCodeToErrorMessage(code), self._lib.DS_FreeString)

    def load(self, model: Path) -> DeepSpeechModel:
        handle = ctypes.c_void_p()
        code = self._lib.DS_CreateModel(str(model).encode(), ctypes.byref(handle))
        if code != 0:
            raise ClientError(
                f"libdeepspeech {self.version()} refused {model}: {self.error_message(code)} "
                f"(error 0x{code:04x})"
            )
        return DeepSpeechModel(self, handle)


def _pcm(samples: bytes):
    """int16 little-endian bytes as a (short*, count) pair the C API takes."""
    count = len(samples) // 2
    return (ctypes.c_short * count).from_buffer_copy(samples[: 2 * count]), count


class DeepSpeechModel:
    """A model loaded by libdeepspeech: `DS_SpeechToText` and the streaming calls."""

    def __init__(self, lib: LibDeepSpeech, handle: ctypes.c_void_p) -> None:
        self._api, self._lib, self._handle = lib, lib._lib, handle

    def close(self) -> None:
        if self._handle:
            self._lib.DS_FreeModel(self._handle)
            self._handle = ctypes.c_void_p()

    def __enter__(self) -> DeepSpeechModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def sample_rate(self) -> int:
        return int(self._lib.DS_GetModelSampleRate(self._handle))

    @property
    def beam_width(self) -> int:
        return int(self._lib.DS_GetModelBeamWidth(self._handle))

    def set_beam_width(self, beam_width: int) -> None:
        self._lib.DS_SetModelBeamWidth(self._handle, beam_width)

    def enable_scorer(self, scorer: Path) -> None:
        code = self._lib.DS_EnableExternalScorer(self._handle, str(scorer).encode())
        if code != 0:
            raise ClientError(
                f"libdeepspeech refused the scorer {scorer}: {self._api.error_message(code)}"
            )

    def speech_to_text(self, pcm16: bytes) -> str:
        buffer, count = _pcm(pcm16)
        return _c_string(
            self._lib.DS_SpeechToText(self._handle, buffer, count), self._lib.DS_FreeString
        )

    def stream(
        self, pcm16: bytes, chunk_samples: int, decode_every: int = 25
    ) -> tuple[str, list[str]]:
        """Feed `pcm16` in chunks: the final text, and the intermediate text after every
        `decode_every` chunks (a beam search over all audio so far: not after each one)."""
        stream = ctypes.c_void_p()
        code = self._lib.DS_CreateStream(self._handle, ctypes.byref(stream))
        if code != 0:
            raise ClientError(f"DS_CreateStream failed: {self._api.error_message(code)}")
        intermediate = []
        step = 2 * chunk_samples
        for chunk, start in enumerate(range(0, len(pcm16), step), start=1):
            buffer, count = _pcm(pcm16[start : start + step])
            self._lib.DS_FeedAudioContent(stream, buffer, count)
            if chunk % decode_every == 0:
                text = self._lib.DS_IntermediateDecode(stream)
                intermediate.append(_c_string(text, self._lib.DS_FreeString))
        final = _c_string(self._lib.DS_FinishStream(stream), self._lib.DS_FreeString)
        return final, intermediate


def read_wav_pcm16(path: Path) -> tuple[bytes, int]:
    """int16 mono samples (bytes) and the rate of a 16-bit mono wav, with the stdlib only."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ClientError(f"{path}: the client takes 16-bit mono wav files")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def _transcribe_main(args: argparse.Namespace) -> int:
    """The child process: load the model, print a JSON line per clip (and one at load)."""
    api = LibDeepSpeech(fetch_library(args.build))
    started = time.perf_counter()
    with api.load(Path(args.model)) as model:
        load_seconds = time.perf_counter() - started
        if args.beam_width:
            model.set_beam_width(args.beam_width)
        if args.scorer:
            model.enable_scorer(Path(args.scorer))
        header = {
            "version": api.version(),
            "sample_rate": model.sample_rate,
            "beam_width": model.beam_width,
            "load_seconds": round(load_seconds, 4),
        }
        print(json.dumps(header), flush=True)
        for path in args.files:
            pcm16, rate = read_wav_pcm16(Path(path))
            started = time.perf_counter()
            record: dict = {"file": path, "text": model.speech_to_text(pcm16)}
            record["seconds"] = time.perf_counter() - started
            record["audio_seconds"] = len(pcm16) / 2 / rate
            if args.stream_ms:
                chunk = rate * args.stream_ms // 1000
                record["stream"], record["intermediate"] = model.stream(pcm16, chunk)
            print(json.dumps(record), flush=True)
    return 0


class ClientRun:
    """What `run_client` saw: the load header and one record per clip."""

    def __init__(self, header: dict, records: list[dict]) -> None:
        self.header, self.records = header, records
        self.version = header["version"]
        self.sample_rate = int(header["sample_rate"])
        self.beam_width = int(header["beam_width"])


def run_client(
    build: Build,
    model: Path,
    wavs: Sequence[Path] = (),
    beam_width: int | None = None,
    stream_ms: int | None = None,
    scorer: Path | None = None,
    timeout: float = 600,
) -> ClientRun:
    """Run libdeepspeech on `model` and `wavs` (16-bit mono) in a child process.

    A crash of the client (it segfaults on a model it cannot read) becomes a ClientError
    naming the signal and the client's own messages, instead of killing the caller.
    """
    fetch_library(build)  # here, so a download failure is a ClientUnavailableError
    command = [
        sys.executable,
        "-m",
        "deepspeech_core.export.deepspeech_client",
        "transcribe",
        "--build",
        build,
        "--model",
        str(model),
    ]
    command += ["--beam_width", str(beam_width)] if beam_width else []
    command += ["--stream_ms", str(stream_ms)] if stream_ms else []
    command += ["--scorer", str(scorer)] if scorer else []
    command += [str(w) for w in wavs]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        how = (
            f"was killed by signal {-done.returncode}"
            if done.returncode < 0
            else f"exited with status {done.returncode}"
        )
        raise ClientError(
            f"libdeepspeech {CLIENT_VERSION} ({build} build) {how} on {model}: "
            f"{done.stderr.strip()[-1500:]}"
        )
    return ClientRun(lines[0], lines[1:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepspeech_core.export.deepspeech_client")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="download and cache both libdeepspeech builds")
    fetch.add_argument("--build", choices=[*WHEELS, "all"], default="all")
    run = commands.add_parser("transcribe", help="transcribe 16-bit mono wavs (JSON lines)")
    run.add_argument("--build", choices=list(WHEELS), required=True)
    run.add_argument("--model", required=True)
    run.add_argument("--beam_width", type=int)
    run.add_argument("--stream_ms", type=int)
    run.add_argument("--scorer")
    run.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "transcribe":
        return _transcribe_main(args)
    for build in WHEELS if args.build == "all" else [args.build]:
        try:
            path = fetch_library(build)  # type: ignore[arg-type]
        except ClientUnavailableError as exc:
            print(f"warning: {exc}", file=sys.stderr)  # the tests that need it skip
            continue
        print(f"libdeepspeech {CLIENT_VERSION} ({build} build): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
