"""Transcribing audio files with an exported model (SavedModel, streaming TFLite, or
DeepSpeech's own client library on output_graph.tflite / output_graph.pb).

Audio is read, downmixed and resampled exactly as the training data was; the model's
logits are decoded with the same decoders as the evaluate stage, so an exported model
transcribes a clip as evaluation did. The TFLite path feeds the model one window of
`n_steps` frames at a time with its LSTM state carried over, as DeepSpeech's streaming
client does, so a long recording needs no more model memory than a short one. The
`deepspeech` backends hand the export's output_graph file to libdeepspeech 0.9.3 (run
in a child process, see `deepspeech_client`): what a DeepSpeech app will say, decoded
by its own beam search.
"""

from __future__ import annotations

import json
import tempfile
import wave
from pathlib import Path
from typing import Literal

import numpy as np
import tensorflow as tf

from deepspeech_core.config import DecoderConfig, FeatureConfig
from deepspeech_core.data.alphabet import alphabet_from_record
from deepspeech_core.data.audio_files import read_audio
from deepspeech_core.evaluate.decoders import make_decoder
from deepspeech_core.export.deepspeech_client import Build, run_client
from deepspeech_core.export.deepspeech_graphs import PB_FILE, TFLITE_FILE
from deepspeech_core.export.store import resolve_model_dir
from deepspeech_core.export.streaming_tflite import FP32_FILE, QUANT_FILE, TFLiteStreamer
from deepspeech_core.features.mfcc import MfccExtractor

Backend = Literal["saved_model", "tflite", "tflite_quant", "deepspeech", "deepspeech_tensorflow"]
TFLITE_FILES = {"tflite": FP32_FILE, "tflite_quant": QUANT_FILE}
# backend -> (libdeepspeech build, the export's file it loads)
CLIENT_FILES: dict[str, tuple[Build, str]] = {
    "deepspeech": ("tflite", TFLITE_FILE),
    "deepspeech_tensorflow": ("tensorflow", PB_FILE),
}
BACKENDS = ("saved_model", *TFLITE_FILES, *CLIENT_FILES)


class Transcriber:
    """An exported model plus a decoder; `transcribe_file` is the whole job."""

    def __init__(
        self,
        model_dir: Path,
        backend: Backend = "saved_model",
        decoder: DecoderConfig | None = None,
    ) -> None:
        self.model_dir = resolve_model_dir(Path(model_dir))
        self.metadata = json.loads((self.model_dir / "metadata.json").read_text())
        self.features = FeatureConfig.model_validate(self.metadata["features"])
        self.sample_rate = self.features.audio_sample_rate
        self.alphabet = alphabet_from_record(self.metadata)
        self.backend = backend
        self.decoder_config = decoder or DecoderConfig(beam_width=1)
        if backend in CLIENT_FILES:
            build, name = CLIENT_FILES[backend]
            self._client_model = self.model_dir / name
            if not self._client_model.is_file():
                raise FileNotFoundError(
                    f"{self._client_model} does not exist: this export has no DeepSpeech "
                    "client model (exported before they existed, or with --no_export_tflite); "
                    "export again or use --backend saved_model"
                )
            self._client_build = build
            # Unless --beam_width is given, the client keeps the width the file carries
            # (metadata_beam_width, --export_beam_width): what an app that sets none uses.
            given = decoder is not None and "beam_width" in decoder.model_fields_set
            self._client_beam_width = self.decoder_config.beam_width if given else None
            return
        self.decoder = make_decoder(self.alphabet, self.decoder_config)
        if backend == "saved_model":
            self._saved = tf.saved_model.load(str(self.model_dir / "saved_model"))
        else:
            path = self.model_dir / TFLITE_FILES[backend]
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} does not exist: this export has no {backend} model (exported "
                    "with --no_export_tflite?); use --backend saved_model"
                )
            self._streamer = TFLiteStreamer(path)
            self._mfccs = MfccExtractor(self.features)  # the feature cache's own function

    def logits(self, pcm16: np.ndarray) -> np.ndarray:
        """[frames, classes] for int16 samples at the model's sample rate."""
        if self.backend == "saved_model":
            return self._saved.serve_pcm16(tf.constant(pcm16, tf.int16))["logits"].numpy()
        return self._streamer.logits(self._mfccs(pcm16))

    def transcribe_samples(self, pcm16: np.ndarray) -> str:
        if self.backend in CLIENT_FILES:
            return self._client_transcribe(pcm16)
        return self.decoder.decode(self.logits(pcm16))

    def _client_transcribe(self, pcm16: np.ndarray) -> str:
        """libdeepspeech's DS_SpeechToText on the samples (a 16-bit wav in a temp dir)."""
        cfg = self.decoder_config
        with tempfile.TemporaryDirectory(prefix="deepspeech-client-") as tmp:
            wav = Path(tmp) / "clip.wav"
            with wave.open(str(wav), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(self.sample_rate)
                out.writeframes(np.asarray(pcm16, "<i2").tobytes())
            run = run_client(
                self._client_build,
                self._client_model,
                [wav],
                beam_width=self._client_beam_width,
                scorer=cfg.scorer_path,
            )
        return run.records[0]["text"]

    def transcribe_file(self, path: Path) -> str:
        """Any format SoX/libsndfile reads, resampled and downmixed as training data was."""
        return self.transcribe_samples(read_audio(Path(path), self.sample_rate).samples)
