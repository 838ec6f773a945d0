"""Decoding: formats are converted (not rejected); unusable files raise one clear AudioError."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.audio.decode import check_audio, load_audio
from ser.errors import AudioError, SerError

SR = 16000


def tone(seconds: float, sr: int, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.shape[0])))
    return float(np.argmax(spec) * sr / y.shape[0])


def test_16bit_mono_at_the_target_rate_is_read_as_is(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    pcm = np.round(tone(0.5, SR) * 32767).astype(np.int16)
    sf.write(path, pcm, SR, subtype="PCM_16")
    y, duration = load_audio(path, sr=SR)
    assert y.dtype == np.float32 and y.shape == (8000,)
    np.testing.assert_array_equal(y, pcm.astype(np.float32) / 32768.0)
    assert duration == pytest.approx(0.5)


def test_stereo_44k1_is_averaged_and_resampled(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left, right = tone(1.0, 44100, hz=440.0, amp=0.6), tone(1.0, 44100, hz=440.0, amp=0.2)
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    y, duration = load_audio(path, sr=SR)
    assert y.ndim == 1 and y.dtype == np.float32
    assert abs(y.shape[0] - SR) <= 1
    assert duration == pytest.approx(1.0)
    assert peak_hz(y, SR) == pytest.approx(440.0, abs=2.0)
    # the average of 0.6 and 0.2 amplitudes: RMS of a 0.4 sine
    assert float(np.sqrt(np.mean(y[1000:-1000] ** 2))) == pytest.approx(0.4 / np.sqrt(2), rel=0.01)


def test_stereo_channels_are_averaged_sample_by_sample(tmp_path: Path) -> None:
    path = tmp_path / "lr.wav"
    rng = np.random.default_rng(0)
    data = (rng.uniform(-0.5, 0.5, size=(4000, 2))).astype(np.float32)
    sf.write(path, data, SR, subtype="FLOAT")
    y, _ = load_audio(path, sr=SR)
    np.testing.assert_allclose(y, data.mean(axis=1), atol=1e-7)


def test_8bit_pcm_is_scaled_to_plus_minus_one(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    src = tone(0.5, SR, amp=0.8)
    sf.write(path, src, SR, subtype="PCM_U8")
    y, _ = load_audio(path, sr=SR)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, src, atol=1.5 / 128)
    assert 0.7 < np.abs(y).max() <= 1.0


@pytest.mark.parametrize("rate, hz, subtype", [(22050, 1000.0, "FLOAT"), (48000, 700.0, "PCM_16")])
def test_other_rates_are_resampled(tmp_path: Path, rate: int, hz: float, subtype: str) -> None:
    """32-bit float at 22.05 kHz and 16-bit at 48 kHz: converted to SR, pitch kept."""
    path = tmp_path / f"{rate}.wav"
    sf.write(path, tone(1.0, rate, hz=hz), rate, subtype=subtype)
    y, duration = load_audio(path, sr=SR)
    assert abs(y.shape[0] - SR) <= 1 and duration == pytest.approx(1.0)
    assert peak_hz(y, SR) == pytest.approx(hz, abs=2.0)


def test_only_max_seconds_are_kept_but_the_full_duration_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, tone(3.0, 44100), 44100, subtype="PCM_16")
    y, duration = load_audio(path, sr=SR, max_seconds=1.0)
    assert abs(y.shape[0] - SR) <= 1
    assert duration == pytest.approx(3.0)


def _expect_error(path: Path, match: str, **kw: object) -> AudioError:
    with pytest.raises(AudioError, match=match) as info:
        load_audio(path, sr=SR, **kw)
    assert str(path) in str(info.value), "the message must name the file"
    assert isinstance(info.value, SerError)
    return info.value


def test_a_text_file_named_wav_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "1001_DFA_ANG_XX.wav"
    path.write_text("this is not audio\n")
    _expect_error(path, "cannot decode audio")


def test_a_zero_byte_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _expect_error(path, r"empty file \(0 bytes\)")


def test_a_silent_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(SR, dtype=np.int16), SR, subtype="PCM_16")
    _expect_error(path, "silent")


def test_a_wav_with_no_frames_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noframes.wav"
    sf.write(path, np.zeros(0, dtype=np.int16), SR, subtype="PCM_16")
    _expect_error(path, "no audio samples")


def test_nan_samples_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    data = tone(0.25, SR)
    data[100] = np.nan
    sf.write(path, data, SR, subtype="FLOAT")
    _expect_error(path, "NaN or Inf")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nowhere.wav", "file not found")


def test_a_clip_shorter_than_one_frame_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.wav"
    sf.write(path, tone(0.005, SR), SR, subtype="PCM_16")  # 80 samples
    _expect_error(path, "shorter than one analysis frame", min_samples=256)


def test_check_audio_wants_mono_finite_non_silent() -> None:
    check_audio(tone(0.1, SR))
    with pytest.raises(AudioError, match="mono"):
        check_audio(np.zeros((2, 100), dtype=np.float32) + 0.1)
    with pytest.raises(AudioError, match="silent"):
        check_audio(np.zeros(100, dtype=np.float32))
    with pytest.raises(AudioError, match="Inf"):
        check_audio(np.array([0.1, np.inf], dtype=np.float32))


# -- more formats: converted, not rejected ---------------------------------------------------------


def test_24bit_pcm_keeps_its_resolution(tmp_path: Path) -> None:
    path = tmp_path / "s24.wav"
    src = tone(0.25, SR, amp=0.3)
    sf.write(path, src, SR, subtype="PCM_24")
    y, _ = load_audio(path, sr=SR)
    np.testing.assert_allclose(y, src, atol=1.5 / 2**23)  # 16-bit could not get this close


@pytest.mark.parametrize("fmt, subtype, tol", [("FLAC", "PCM_16", 1.5 / 32768), ("OGG", "VORBIS", None),
                                               ("MP3", "MPEG_LAYER_III", None)])
def test_compressed_formats_decode_where_libsndfile_has_them(tmp_path: Path, fmt: str, subtype: str,
                                                             tol: float | None) -> None:
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) has no {fmt} {subtype}")
    path = tmp_path / f"clip.{fmt.lower()}"
    src = tone(1.0, 22050, hz=440.0, amp=0.4)
    sf.write(path, src, 22050, format=fmt, subtype=subtype)
    y, duration = load_audio(path, sr=SR)
    assert y.dtype == np.float32 and duration == pytest.approx(1.0, abs=0.06)  # MP3 adds padding
    assert peak_hz(y, SR) == pytest.approx(440.0, abs=3.0)
    if tol is not None:  # lossless: the same samples after resampling both
        ref, _ = load_audio(_wav_copy(tmp_path, src, 22050), sr=SR)
        np.testing.assert_allclose(y, ref, atol=1e-3)


def _wav_copy(tmp_path: Path, y: np.ndarray, sr: int) -> Path:
    path = tmp_path / "ref.wav"
    sf.write(path, y, sr, subtype="PCM_16")
    return path


# -- more bad files: one clear AudioError each ---------------------------------------------------


@pytest.mark.parametrize("keep", [4, 12, 20, 40])
def test_a_truncated_header_is_refused(tmp_path: Path, keep: int) -> None:
    whole = tmp_path / "whole.wav"
    sf.write(whole, tone(0.5, SR), SR, subtype="PCM_16")
    path = tmp_path / "cut.wav"
    path.write_bytes(whole.read_bytes()[:keep])  # the 44-byte header, cut short
    err = _expect_error(path, "cannot decode audio")
    assert "truncated" in str(err)


def test_a_file_cut_in_its_data_reports_what_is_there(tmp_path: Path) -> None:
    whole = tmp_path / "whole.wav"
    sf.write(whole, tone(1.0, SR), SR, subtype="PCM_16")
    path = tmp_path / "half.wav"
    path.write_bytes(whole.read_bytes()[: 44 + SR])  # header + half a second of 16-bit samples
    y, duration = load_audio(path, sr=SR)
    assert y.shape == (SR // 2,) and duration == pytest.approx(0.5)


def test_inf_samples_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "inf.wav"
    data = tone(0.25, SR)
    data[50] = -np.inf
    sf.write(path, data, SR, subtype="FLOAT")
    _expect_error(path, "NaN or Inf")


def test_nan_in_one_channel_of_a_resampled_stereo_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan_stereo.wav"
    data = np.stack([tone(0.25, 44100), tone(0.25, 44100)], axis=1)
    data[1000, 1] = np.nan
    sf.write(path, data, 44100, subtype="FLOAT")
    _expect_error(path, "NaN or Inf")  # caught before the resampler could spread it


def test_a_folder_named_like_a_wav_is_refused(tmp_path: Path) -> None:
    (tmp_path / "odd.wav").mkdir()
    _expect_error(tmp_path / "odd.wav", "is a folder")


def test_a_permission_denied_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root here, where chmod 000 does not stop reads: the denial is simulated by
    making ``open`` inside ser.audio.decode fail the way the kernel does (see the next test for chmod)."""
    import ser.audio.decode

    path = tmp_path / "locked.wav"
    sf.write(path, tone(0.1, SR), SR, subtype="PCM_16")

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(ser.audio.decode, "open", denied, raising=False)
    _expect_error(path, "permission denied")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod 000 does not stop root from reading (simulated above)")
def test_a_chmod_000_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.wav"
    sf.write(path, tone(0.1, SR), SR, subtype="PCM_16")
    path.chmod(0)
    try:
        _expect_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_a_ten_minute_clip_is_cut_in_bounded_memory(tmp_path: Path) -> None:
    """Only max_seconds are decoded: peak allocation stays near one short clip, far below the
    38 MB that ten minutes of float32 samples would take."""
    import tracemalloc

    path = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        block = np.round(tone(10.0, SR) * 32767).astype(np.int16)
        for _ in range(60):
            f.write(block)
    tracemalloc.start()
    try:
        y, duration = load_audio(path, sr=SR, max_seconds=4.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert duration == pytest.approx(600.0) and y.shape == (4 * SR,)
    assert peak < 2_000_000, f"peak {peak / 1e6:.1f} MB"


def test_outputs_never_overwrite_audio(tmp_path: Path) -> None:
    from ser.audio.decode import refuse_audio_overwrite, refuse_output_inside

    wav = tmp_path / "take.WAV"
    wav.write_bytes(b"RIFF")
    with pytest.raises(SerError, match="existing audio file"):
        refuse_audio_overwrite(wav)
    refuse_audio_overwrite(tmp_path / "feats.h5")       # not audio
    refuse_audio_overwrite(tmp_path / "new.wav")        # does not exist yet
    with pytest.raises(SerError, match="lies inside"):
        refuse_output_inside(tmp_path / "corpus" / "report", tmp_path / "corpus")
    refuse_output_inside(tmp_path / "report", tmp_path / "corpus")
