"""Which errors are expected (the user can fix them) and which a retry could fix.

An expected error is one whose message already says what is wrong and what to do: a
bad corpus, bad flags, a busy directory, an incompatible checkpoint. The command line
prints its message as one line with an exit code per kind, and a Prefect retry of such
an error would only fail again (and print three more tracebacks), so tasks fail at once.

Errors are matched by class name along the exception's MRO, so this module imports
neither TensorFlow nor the stage modules that define them.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorKind(IntEnum):
    """The kind of an expected error; its value is the command's exit code."""

    CONFIG = 2  # flags, --config file, --augment spec (2 = click's usage-error code)
    DATA = 3  # corpus, CSVs, audio, feature cache
    BUSY = 4  # a work or checkpoint directory held by another run
    CHECKPOINT = 5  # no trained model, incompatible checkpoint or alphabet
    DEVICE = 6  # --require_gpu without a GPU, a bad distribution set-up
    TRAINING = 7  # training cannot go on (too many inf/NaN batches)
    EXPORT = 8  # the export directory or an export's check


# "module.Class" -> kind; subclasses inherit their base's kind.
_KINDS: dict[str, ErrorKind] = {
    "deepspeech_core.features.augmentation.AugmentationError": ErrorKind.CONFIG,
    "deepspeech_core.evaluate.decoders.DecoderError": ErrorKind.CONFIG,
    "pydantic_core._pydantic_core.ValidationError": ErrorKind.CONFIG,
    "yaml.error.YAMLError": ErrorKind.CONFIG,
    "deepspeech_flow.errors.ConfigError": ErrorKind.CONFIG,
    "deepspeech_core.workdir.input_overlap.OverlapError": ErrorKind.CONFIG,
    "deepspeech_core.evaluate.scorer_package.ScorerError": ErrorKind.CONFIG,
    "deepspeech_core.evaluate.kenlm_tools.KenLMToolError": ErrorKind.CONFIG,
    "deepspeech_core.evaluate.lm_tuning.LMTuningError": ErrorKind.CONFIG,
    "deepspeech_core.workdir.locking.LockUnsupportedError": ErrorKind.CONFIG,
    "deepspeech_core.data.validation.CorpusError": ErrorKind.DATA,
    "deepspeech_core.data.csv_reader.TableError": ErrorKind.DATA,
    "deepspeech_core.data.audio_files.AudioError": ErrorKind.DATA,
    "deepspeech_core.data.demo_corpus.DemoCorpusError": ErrorKind.DATA,
    "deepspeech_core.evaluate.evaluation.NothingToEvaluateError": ErrorKind.DATA,
    "deepspeech_flow.errors.DataError": ErrorKind.DATA,
    "deepspeech_core.workdir.locking.LockedError": ErrorKind.BUSY,
    "deepspeech_core.model.checkpoints.CheckpointError": ErrorKind.CHECKPOINT,
    "deepspeech_core.train.trainings.NoTrainedModelError": ErrorKind.CHECKPOINT,
    "deepspeech_core.model.deepspeech_checkpoint.DeepSpeechCheckpointError": ErrorKind.CHECKPOINT,
    "deepspeech_core.train.state.CheckpointStateError": ErrorKind.CHECKPOINT,
    "deepspeech_core.train.devices.DeviceError": ErrorKind.DEVICE,
    "deepspeech_core.train.loop.TrainingError": ErrorKind.TRAINING,
    "deepspeech_core.export.store.ExportStoreError": ErrorKind.EXPORT,
    "deepspeech_core.export.streaming_tflite.TFLiteMismatchError": ErrorKind.EXPORT,
    "deepspeech_core.export.deepspeech_graphs.DeepSpeechExportError": ErrorKind.EXPORT,
    "deepspeech_core.export.deepspeech_client.ClientError": ErrorKind.EXPORT,
    "deepspeech_core.export.deepspeech_client.ClientUnavailableError": ErrorKind.EXPORT,
}


def error_kind(exc: BaseException) -> ErrorKind | None:
    """The kind of an expected error, or None for an unexpected one (a bug, a crash)."""
    for cls in type(exc).__mro__:
        kind = _KINDS.get(f"{cls.__module__}.{cls.__qualname__}")
        if kind is not None:
            return kind
    return None


def retry_can_fix(exc: BaseException | None) -> bool:
    """False for an expected error: the same input fails the same way on every attempt.

    A crash, a killed worker or an out-of-memory error may pass on the next attempt,
    which resumes from the newest checkpoint.
    """
    return exc is None or error_kind(exc) is None
