"""The features stage: DeepSpeech's MFCCs, cached per clip in content-addressed shards;
and the input pipeline that reads them (frame counts, augmentation, feature
normalisation, batches).
"""
