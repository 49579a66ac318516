"""The validate stage: a Common Voice release or DeepSpeech CSVs in, clean split CSVs
of model-ready wavs out, every rejected row with its reason; and what it reads with
(alphabet, sentence normalisation, tsv/CSV rows, audio files) and the small corpora
espeak-ng speaks for the demo and the tests.
"""
