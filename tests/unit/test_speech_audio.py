"""Speech audio (no Ray): reading, rejects with reasons, resampling, log-mel shape, file-name patterns,
manifests and the speaker-disjoint split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from lmstack.tasks.speech.audio import (
    AudioReject,
    Features,
    ctc_frames_needed,
    oov_chars,
    read_audio,
    resample,
)
from lmstack.tasks.speech.prepare import assign_split
from lmstack.tasks.speech.sources import SourceSettings, compile_pattern, list_utterances, parse_name

RATE = 8000


def tone(seconds: float, freq: float = 440.0, rate: int = RATE, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_read_resamples_and_mixes_to_mono(tmp_path):
    stereo = np.stack([tone(0.5), tone(0.5, 880.0)], axis=1)
    sf.write(tmp_path / "a.wav", stereo, 16000)
    wave = read_audio(str(tmp_path / "a.wav"), RATE)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == pytest.approx(0.25 * RATE, abs=2)  # 0.5 s of 16 kHz samples read as 8 kHz: 8000 -> 4000/2
    sf.write(tmp_path / "b.flac", tone(0.5, rate=16000), 16000)
    assert len(read_audio(str(tmp_path / "b.flac"), RATE)) == 4000


def test_resample_keeps_a_tone_at_its_frequency():
    x = tone(1.0, 500.0, rate=22050)
    y = resample(x, 22050, RATE)
    assert len(y) == RATE
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * RATE / len(y)
    assert peak_hz == pytest.approx(500.0, abs=2)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_text("not audio at all, just text"), "unreadable"),
    (lambda p: p.write_bytes(_wav_bytes(tone(0.5))[:30]), "unreadable"),  # cut inside the header
    (lambda p: sf.write(p, np.zeros(4000, np.float32), RATE), "silence"),
    (lambda p: sf.write(p, np.zeros(0, np.float32), RATE), "empty"),
    (lambda p: sf.write(p, tone(3.0), RATE), "too_long"),
])
def test_bad_audio_is_rejected_with_its_reason(tmp_path, make, reason):
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(AudioReject) as err:
        read_audio(str(path), RATE, max_seconds=2.0, silence_dbfs=-50)
    assert err.value.reason == reason


def test_truncated_data_chunk_reads_what_is_there(tmp_path):
    """A WAV cut mid-data (header intact) still decodes the samples present: not a crash, not empty."""
    raw = _wav_bytes(tone(0.5))
    wave = read_audio(raw[: len(raw) // 2], RATE)
    assert 0 < len(wave) < 4000


def _wav_bytes(wave: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, wave, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_log_mel_shape_and_normalization():
    f = Features(sample_rate=RATE, n_mels=32, win_ms=25, hop_ms=10)
    assert (f.win_length, f.hop_length, f.n_fft) == (200, 80, 256)
    mel = f.log_mel(tone(1.0))
    assert mel.shape == (f.frames(RATE), 32) == (101, 32)
    np.testing.assert_allclose(mel.mean(0), 0, atol=1e-4)  # per-utterance normalization per band
    raw = Features(sample_rate=RATE, n_mels=32, normalize="none").log_mel(tone(1.0, 1000.0))
    band = int(np.argmax(raw.mean(0)))  # the 1 kHz tone's energy sits in the band around 1 kHz
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=129, num_mel_filters=32, min_frequency=20, max_frequency=4000,
                         sampling_rate=RATE, norm="slaney", mel_scale="slaney")
    assert band == int(np.argmax(fb[round(1000 / (RATE / 256))]))


def test_vocabulary_checks():
    assert oov_chars("hello, wörld!", " abcdefghijklmnopqrstuvwxyz") == ",ö!"
    assert ctc_frames_needed([1, 2, 2, 3]) == 5  # a blank must separate the repeated 2s


def test_fsdd_pattern_and_listing(tmp_path):
    regex = compile_pattern("{digit}_{speaker}_{take}")
    assert parse_name("7_george_12", regex) == ("seven", "george")
    assert parse_name("notes", regex) is None
    for name in ("3_ann_0", "3_bob_1"):
        sf.write(tmp_path / f"{name}.wav", tone(0.3), RATE)
    (tmp_path / "readme_x.wav").write_text("x")
    rows, rejects = list_utterances([str(tmp_path)], SourceSettings())
    assert [(r["text"], r["speaker"]) for r in rows] == [("three", "ann"), ("three", "bob")]
    assert [(r["id"], r["reason"]) for r in rejects] == [("readme_x.wav", "name_pattern")]


def test_manifest_rows_and_their_rejects(tmp_path):
    sf.write(tmp_path / "a.wav", tone(0.3), RATE)
    lines = [{"audio": "a.wav", "text": "Hello  World", "speaker": "s1"}, {"audio": "a.wav"}, "{bad json"]
    (tmp_path / "m.jsonl").write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    rows, rejects = list_utterances([str(tmp_path / "m.jsonl")], SourceSettings())
    assert rows == [{"id": "m.jsonl:1", "path": str(tmp_path / "a.wav"), "text": "hello world", "speaker": "s1"}]
    assert [r["reason"] for r in rejects] == ["missing_field", "unreadable"]
    (tmp_path / "m.csv").write_text("audio,text\na.wav,two\n")
    rows, _ = list_utterances([str(tmp_path / "m.csv")], SourceSettings())
    assert [(r["text"], r["speaker"]) for r in rows] == [("two", "")]


def test_split_is_speaker_disjoint():
    utts = [(spk, f"{spk}-{i}") for spk in ("a", "b", "c", "d", "e", "f", "g", "h") for i in range(20)]
    named = {u: assign_split(s, u, ["b"], ["c"], 0.5) for s, u in utts}
    assert {u.split("-")[0] for u, s in named.items() if s == "val"} == {"b"}
    assert {u.split("-")[0] for u, s in named.items() if s == "test"} == {"c"}
    hashed: dict[str, set[str]] = {}
    for s, u in utts:
        hashed.setdefault(s, set()).add(assign_split(s, u, [], [], 0.4))
    assert all(len(splits) == 1 for splits in hashed.values())  # a speaker never straddles splits
    assert {"train", "val"} == set().union(*hashed.values())
