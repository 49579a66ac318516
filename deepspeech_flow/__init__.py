"""The deepspeech-flow command line."""
