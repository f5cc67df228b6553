"""Speech models and the task spec without Ray: forward shapes, CTC loss falls over a few steps,
SpecAugment, eval counts and metrics, export/load round trip and predict/evaluate on files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from lmstack.config import validate_recipe
from lmstack.tasks import get_spec
from lmstack.tasks.speech.audio import Features
from lmstack.tasks.speech.augment import spec_augment
from lmstack.tasks.speech.decode import CharVocab
from lmstack.tasks.speech.metrics import score
from lmstack.tasks.speech.model import CTCModel, arch_config

VOCAB = " abcdefghijklmnopqrstuvwxyz'"
RATE = 8000
WORDS = {"ab": (300.0, 900.0), "ba": (900.0, 300.0)}  # a word is two tones, one per half


def recipe(tmp_path, arch: str = "transformer", **speech):
    return validate_recipe({
        "name": "t", "task": "speech", "run_dir": str(tmp_path / "run"), "data": {"paths": [str(tmp_path)]},
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "dropout": 0.0},
        "train": {"lr": 3e-3, "weight_decay": 0.0},
        "speech": {"arch": arch, "subsample": 2, "features": {"sample_rate": RATE, "n_mels": 16}, **speech},
    }, "test")


def info() -> dict:
    return {"vocab": VOCAB, "features": Features(sample_rate=RATE, n_mels=16).to_dict(),
            "source": {"filename_pattern": "{text}_{speaker}_{take}"}, "max_seconds": 5.0, "silence_dbfs": -50.0,
            "lm_text": None}


def word_wave(word: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    half = int(0.25 * RATE)
    t = np.arange(half) / RATE
    parts = [0.4 * np.sin(2 * np.pi * f * t) for f in WORDS[word]]
    return (np.concatenate(parts) + 0.01 * rng.standard_normal(2 * half)).astype(np.float32)


def batch_of(words: list[str]) -> dict[str, torch.Tensor]:
    feats = Features(sample_rate=RATE, n_mels=16)
    mels = [feats.log_mel(word_wave(w, i)) for i, w in enumerate(words)]
    t = max(len(m) for m in mels)
    x = np.zeros((len(words), t + 7, 16), np.float16)  # padded past the longest, as a Parquet split is
    for i, m in enumerate(mels):
        x[i, : len(m)] = m
    vocab = CharVocab(VOCAB)
    labels = np.zeros((len(words), 6), np.int16)
    for i, w in enumerate(words):
        labels[i, : len(w)] = vocab.encode(w)
    return {"features": torch.from_numpy(x), "n_frames": torch.tensor([len(m) for m in mels], dtype=torch.int32),
            "labels": torch.from_numpy(labels), "label_len": torch.tensor([len(w) for w in words], dtype=torch.int32)}


@pytest.mark.parametrize("arch", ["transformer", "conformer", "lstm", "gru"])
def test_forward_shapes_and_padding_does_not_leak(arch):
    torch.manual_seed(0)
    model = CTCModel(arch_config(arch, 16, 29, 32, 2, 2, 2, 0.0, 4, 7)).eval()
    x = torch.randn(2, 40, 16)
    lp, lengths = model(x, torch.tensor([40, 21]))
    assert lp.shape == (2, 10, 29) and lengths.tolist() == [10, 6]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 10), atol=1e-5)
    # The second utterance alone (no padding) scores the same on its valid frames.
    alone, _ = model(x[1:, :21], torch.tensor([21]))
    torch.testing.assert_close(lp[1, :6], alone[0, :6], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_ctc_loss_decreases_and_metrics_count_edits(tmp_path, arch):
    torch.manual_seed(0)
    spec = get_spec("speech")
    model = spec.build_model(recipe(tmp_path, arch), info())
    words = ["ab", "ba"] * 4
    batch = batch_of(words)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(40):
        loss, n = spec.loss(model, batch)
        assert n == len(words)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        counts = spec.eval_counts(model, batch)
        loss, n = spec.loss(model, batch)
    m = spec.metrics(float(loss) * n, n, info(), counts=counts)
    # Directly: greedy transcripts of the same batch scored by jiwer.
    from lmstack.tasks.speech.decode import decode_batch

    with torch.no_grad():
        lp, lens = model(batch["features"].float(), batch["n_frames"])
    hyps = decode_batch(lp.numpy(), lens.tolist(), CharVocab(VOCAB))
    direct = score(words, hyps)
    assert (m["val_wer"], m["val_cer"], m["val_accuracy"]) == pytest.approx(
        (direct["wer"], direct["cer"], direct["accuracy"]))
    assert m["val_loss"] == pytest.approx(float(loss))


def test_spec_augment_masks_only_training_frames():
    x = torch.ones(2, 50, 16)
    g = torch.Generator().manual_seed(0)
    y = spec_augment(x, torch.tensor([50, 30]), time_masks=2, time_width=10, freq_masks=2, freq_width=4, generator=g)
    assert y.shape == x.shape and (y == 0).any() and torch.equal(x, torch.ones(2, 50, 16))
    per_band = (y[0] == 0).all(0).sum()  # masked bands are masked on every frame
    assert 0 < per_band <= 8


def test_export_load_predict_and_evaluate_round_trip(tmp_path):
    from lmstack.tasks.speech.predict import SpeechModel

    torch.manual_seed(0)
    spec = get_spec("speech")
    model = spec.build_model(recipe(tmp_path, decode={"method": "greedy"}), info())
    words = ["ab", "ba"] * 4
    batch = batch_of(words)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss, _ = spec.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path / "model"
    lm_text = tmp_path / "lm.txt"
    lm_text.write_text("ab\nba\n")
    spec.export(model, str(out))
    spec.export_assets({**info(), "lm_text": str(lm_text)}, str(out))
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "speech_model.json", "speech_features.json",
                                                "speech_lm.json"}
    loaded = spec.load_exported(str(out))
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    wav_dir = tmp_path / "wavs"
    wav_dir.mkdir()
    for i, w in enumerate(words):
        sf.write(wav_dir / f"{w}_spk_{i}.wav", word_wave(w, i), RATE)
    (wav_dir / "ab_spk_99.wav").write_text("not audio")
    sm = SpeechModel(str(out))
    expected = sm.transcribe([word_wave(w, i) for i, w in enumerate(words)])
    got = spec.predict(str(out), [str(wav_dir / f"{w}_spk_{i}.wav") for i, w in enumerate(words)])
    assert [g["text"] for g in got] == expected
    result = spec.evaluate_file(str(out), str(wav_dir))
    direct = score(words, expected)
    assert result["files"] == 8 and result["rejected"] == 1 and result["rejected_by_reason"] == {"unreadable": 1}
    assert (result["accuracy"], result["wer"], result["cer"]) == pytest.approx(
        (direct["accuracy"], direct["wer"], direct["cer"]))
    beam = spec.evaluate_file(str(out), str(wav_dir), ctc_decode="beam", beam_width=4, lm_weight=0.5)
    assert beam["decode"] == "beam" and beam["files"] == 8
    json.dumps(result)  # printed as JSON by `lmstack evaluate`
