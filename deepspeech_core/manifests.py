"""What each stage returns: small pydantic records that name files, never arrays.

These travel through Prefect results and the CLI; everything heavy stays on disk under
the work directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from deepspeech_core.train.gpu_monitor import GpuSummary


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusManifest(_Manifest):
    corpus_dir: Path
    splits: dict[str, Path]
    rejected_csv: Path
    alphabet_path: Path
    report_path: Path
    counts: dict[str, int]
    rejected: dict[str, dict[str, int]]
    hours: dict[str, float]
    fingerprint: str
    reused: bool = False
    imported: int = 0  # clips converted by this run (the rest were imported before)


class FeatureCacheManifest(_Manifest):
    cache_dir: Path
    namespace: str
    indexes: dict[str, Path]
    alphabet_path: Path
    counts: dict[str, int]
    computed: int
    reused_clips: int
    fingerprint: str


class TrainedModelManifest(_Manifest):
    checkpoint_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    steps: int
    epochs: int
    resumed_from_step: int
    initialized_from: Path | None = None  # warm start / transfer learning source
    train_loss_history: list[float]
    dev_loss_history: list[float]
    dev_wer_history: list[float] = []  # --best_metric dev_wer: greedy WER on dev per epoch
    seconds: float
    gpu: GpuSummary | None = None  # the GPU monitor's summary of this attempt


class Metrics(_Manifest):
    """Corpus-level error rates of a set of clips (one test file, one duration range)."""

    wer: float
    cer: float
    loss: float
    samples: int


class EvaluationManifest(_Manifest):
    wer: float
    cer: float
    loss: float
    samples: int
    report_path: Path
    test_output_path: Path
    checkpoint: Path
    decoder: str = "greedy"
    per_file: dict[str, Metrics] = {}
    by_duration: dict[str, Metrics] = {}
    # Common Voice client_id -> metrics; gender/age/accent -> value -> metrics (where filled)
    by_speaker: dict[str, Metrics] = {}
    by_demographic: dict[str, dict[str, Metrics]] = {}
    examples: dict[str, list[dict]] = {}


class TFLiteModel(_Manifest):
    """One verified TFLite file of an export: its size and distance from the Keras model."""

    size_bytes: int
    max_abs_diff: float  # max |TFLite logit - Keras logit| over the verification clips
    error: float  # the same relative to the logits' scale: what the tolerance bounds
    tolerance: float


class DeepSpeechModelFile(_Manifest):
    """One checked output_graph file for DeepSpeech 0.9.3's clients (libdeepspeech)."""

    size_bytes: int
    runtime: str  # "tflite" (deepspeech-tflite builds) or "tensorflow" (deepspeech builds)
    graph_version: int
    beam_width: int
    max_abs_diff: float  # max |client graph - Keras| softmax probability on real clips
    error: float  # the same relative to the largest probability: what the tolerance bounds
    tolerance: float


class ExportManifest(_Manifest):
    export_dir: Path
    saved_model: Path
    metadata: Path
    alphabet: Path
    size_bytes: int
    version: str = ""
    current: Path | None = None
    tflite: dict[str, TFLiteModel] = {}  # by file name, in export_dir
    deepspeech: dict[str, DeepSpeechModelFile] = {}  # output_graph.* by file name
    model_card: Path | None = None
    promoted: bool = True
    promotion_reason: str = ""


class PipelineResult(_Manifest):
    """What a train-cv run returns: every stage's manifest that ran, and its seconds."""

    corpus: CorpusManifest | None = None
    features: FeatureCacheManifest | None = None
    training: TrainedModelManifest | None = None
    evaluation: EvaluationManifest | None = None
    export: ExportManifest | None = None
    stage_seconds: dict[str, float] = {}
