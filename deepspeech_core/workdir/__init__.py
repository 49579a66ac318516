"""What every stage does to the work directory: atomic file writes, one owner per
directory (locks), the user's inputs kept outside what a run writes, and what a work
directory holds (`deepspeech-flow status`).
"""
