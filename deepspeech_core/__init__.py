"""deepspeech_core: the DeepSpeech training library behind the train-cv pipeline.

Everything here is plain Python + TensorFlow: usable from a notebook or a test, and
never imports Prefect (the tasks/ layer wraps it).
"""

__version__ = "0.1.0"
