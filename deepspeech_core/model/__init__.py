"""The DeepSpeech 0.9.3 acoustic model: the network, its CTC loss, the checkpoint
directories that describe it, and DeepSpeech's own checkpoints as a starting point.
"""
