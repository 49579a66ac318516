"""One Prefect task per pipeline stage: thin wrappers that call deepspeech_core, report
(logs, artifacts) and return a small manifest."""
