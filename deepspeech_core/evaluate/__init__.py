"""The evaluate stage: CTC decoders (greedy, beam search, with a language model, UTF-8
safe), error rates, reports by file, duration and speaker; and the language models
the decoders use (ARPA, KenLM tools, DeepSpeech .scorer packages, alpha/beta tuning).
"""
