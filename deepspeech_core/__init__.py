"""deepspeech_core: the DeepSpeech training library behind the train-cv pipeline.

Everything here is plain Python + TensorFlow: usable from a notebook or a test, and
never imports Prefect (the tasks/ layer wraps it).

One sub-package per stage: data (validate), features, model and train, evaluate,
export; workdir for what every stage does to the work directory. On top: config
(the parameters), manifests (what each stage returns), progress, stopping and
error_kinds (how a caller follows, stops and reports a stage).
"""

__version__ = "0.1.0"
