"""The train stage: the training loop (resumable at the next batch), what a checkpoint
holds besides the weights, where each training lives, devices and the GPU monitor.
"""
