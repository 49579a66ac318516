import numpy as np
import pytest
import soundfile

from deepspeech_core.data.audio_files import AudioError, is_model_ready_wav, read_audio, write_wav


def _tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def test_reads_common_voice_mp3_as_16k_mono(tiny_cv):
    mp3 = next((tiny_cv / "clips").glob("*.mp3"))
    audio = read_audio(mp3, 16000)
    assert audio.source_rate == 48000
    assert audio.sample_rate == 16000
    assert audio.samples.dtype == np.int16
    assert audio.samples.ndim == 1
    assert 0.5 < audio.duration < 10
    assert np.abs(audio.samples).max() > 1000  # speech, not silence


def test_resamples_and_downmixes(tmp_path):
    src = tmp_path / "stereo.flac"
    soundfile.write(src, _tone(44100, 1.0, channels=2), 44100)
    audio = read_audio(src, 16000)
    assert audio.source_channels == 2
    assert abs(len(audio.samples) - 16000) <= 2
    out = tmp_path / "out.wav"
    write_wav(out, audio.samples, 16000)
    assert is_model_ready_wav(out, 16000)
    assert not is_model_ready_wav(src, 16000)


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "missing_file"),
        (b"", "unreadable_audio"),
        (b"this is not audio" * 50, "unreadable_audio"),
    ],
)
def test_bad_files_say_why(tmp_path, content, reason):
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=f"^{reason}: ") as info:
        read_audio(path, 16000)
    assert info.value.reason == reason


def test_zero_samples_is_empty_audio(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="^empty_audio: empty.wav has no samples") as info:
        read_audio(path, 16000)
    assert info.value.reason == "empty_audio"
