"""The export stage: versioned, self-describing exports (SavedModel, streaming TFLite,
DeepSpeech 0.9.3 client graphs), promotion of the current model, and transcribing
with an export (our models or DeepSpeech's client library).
"""
