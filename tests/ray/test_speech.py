"""Speech on a real Ray cluster: Ray Data prepare (speaker-disjoint split, rejects with reasons), Ray Train
through `lmstack.train.trainer.train`, the `lmstack evaluate` CLI round trip, and the official openai
client against /v1/audio/transcriptions over real HTTP (bad uploads included).

The data are generated: each digit word is a sequence of one tone per letter, with per-speaker pitch
and speed, so a tiny model learns it in a few dozen steps. espeak-ng speech is exercised where espeak-ng is installed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.usefixtures("ray_cluster")
RATE = 8000
DIGITS = {0: "zero", 1: "one", 2: "two"}  # FSDD-style names: the digit's English word is the transcript
# Each letter is a tone of its own, so a tiny CTC model maps sounds to characters in a few dozen steps.
LETTER_HZ = {"z": 400.0, "e": 700.0, "r": 1000.0, "o": 1400.0, "n": 1800.0, "t": 2300.0, "w": 2900.0}
SPEAKERS = {"ann": (1.0, 1.0), "bob": (1.03, 0.95), "cid": (0.98, 1.04), "dee": (1.01, 1.02)}  # pitch, speed
TAKES = 4
ROOT = Path(__file__).resolve().parents[2]


def utterance(digit: int, speaker: str, take: int) -> np.ndarray:
    pitch, speed = SPEAKERS[speaker]
    rng = np.random.default_rng(zlib.crc32(f"{digit}/{speaker}/{take}".encode()))
    n = int(0.08 * RATE / speed * rng.uniform(0.9, 1.1))
    t = np.arange(n) / RATE
    tones = [0.4 * np.sin(2 * np.pi * LETTER_HZ[c] * pitch * t) for c in DIGITS[digit]]
    wave = np.concatenate([np.zeros(400), *tones, np.zeros(400)])
    return (wave + 0.01 * rng.standard_normal(len(wave))).astype(np.float32)


def make_corpus(root: Path) -> Path:
    wavs = root / "wavs"
    wavs.mkdir(parents=True)
    for speaker in SPEAKERS:
        for digit in DIGITS:
            for take in range(TAKES):
                sf.write(wavs / f"{digit}_{speaker}_{take}.wav", utterance(digit, speaker, take), RATE)
    good = (wavs / "0_ann_0.wav").read_bytes()
    (wavs / "1_ann_90.wav").write_bytes(good[:30])  # truncated inside the header
    (wavs / "2_ann_91.wav").write_text("this is a text file, not audio\n")
    sf.write(wavs / "0_bob_92.wav", np.zeros(RATE // 2, np.float32), RATE)  # silence
    return wavs


def recipe_for(tmp: Path, wavs: Path, **extra):
    from lmstack.config import validate_recipe

    raw = {
        "name": "speech_tiny", "task": "speech", "run_dir": str(tmp / "run"), "data": {"paths": [str(wavs)]},
        "speech": {"val_speakers": ["dee"], "test_speakers": ["cid"], "max_seconds": 2.0, "subsample": 2,
                   "features": {"sample_rate": RATE, "n_mels": 16}, "augment": {"speeds": [0.9]}},
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "dropout": 0.0},
        "train": {"num_workers": 1, "in_process": True, "batch_size": 8, "max_steps": 60, "lr": 5e-3, "min_lr": 5e-4,
                  "warmup_steps": 5, "weight_decay": 0.0, "eval_every": 30, "eval_batches": None, "log_every": 10},
        **extra,
    }
    return validate_recipe(raw, "test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from lmstack.tasks import get_spec

    tmp = tmp_path_factory.mktemp("speech")
    wavs = make_corpus(tmp)
    recipe = recipe_for(tmp, wavs)
    spec = get_spec("speech")
    manifest = spec.prepare(recipe, log=lambda *_: None)
    try:
        from lmstack.train.trainer import train
    except ImportError as err:  # the trainer is being rewritten (issue 13)
        pytest.skip(f"lmstack.train.trainer.train is not importable: {err}")
    summary = train(recipe, log=lambda *_: None)
    return {"tmp": tmp, "wavs": wavs, "recipe": recipe, "manifest": manifest, "summary": summary,
            "model": summary["model_dir"]}


def test_prepare_splits_by_speaker_and_sets_rejects_aside(trained):
    import pyarrow.parquet as pq
    import ray.data

    recipe, manifest = trained["recipe"], trained["manifest"]
    data = Path(recipe.data_dir())
    speakers = {s: set(pq.read_table(data / s, columns=["speaker"])["speaker"].to_pylist())
                for s in ("train", "val", "test")}
    assert speakers == {"train": {"ann", "bob"}, "val": {"dee"}, "test": {"cid"}}
    per_speaker = len(DIGITS) * TAKES
    assert manifest["examples"] == {"train": 2 * 2 * per_speaker, "val": per_speaker, "test": per_speaker}
    rejects = [json.loads(line) for line in (data / "rejects" / "rejects.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["reason"]) for r in rejects) == [
        ("0_bob_92.wav", "silence"), ("1_ann_90.wav", "unreadable"), ("2_ann_91.wav", "unreadable")]
    assert manifest["rejected_by_reason"] == {"silence": 1, "unreadable": 2}
    batch = ray.data.read_parquet(str(data / "train")).take_batch(4)
    assert batch["features"].shape[1:] == (manifest["splits"]["train"]["max_frames"], 16)


def test_train_exports_a_model_that_evaluates_like_validation(trained, tmp_path):
    summary, model = trained["summary"], Path(trained["model"])
    assert {"model.safetensors", "speech_model.json", "speech_features.json", "lmstack_model.json"} <= {
        p.name for p in model.iterdir()}
    assert summary["val_accuracy"] >= 0.5  # three tone words, one unheard speaker: learnable in 60 steps
    from lmstack.tasks import get_spec

    val_dir = tmp_path / "dee"
    val_dir.mkdir()
    for f in trained["wavs"].glob("*_dee_*.wav"):
        shutil.copy(f, val_dir / f.name)
    result = get_spec("speech").evaluate_file(str(model), str(val_dir))
    n = len(DIGITS) * TAKES
    assert result["files"] == n
    # Same utterances, same greedy decoding; features were float16 on disk, so allow one utterance.
    assert abs(result["accuracy"] - summary["val_accuracy"]) <= 1 / n + 1e-9
    assert abs(result["wer"] - summary["val_wer"]) <= 1 / n + 1e-9


def test_evaluate_cli_round_trip(trained):
    from lmstack.tasks import get_spec

    cli = ROOT / ".venv" / "bin" / "lmstack"
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "lmstack"]
    done = subprocess.run([*cmd, "evaluate", "--model", trained["model"], "--data", str(trained["wavs"])],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "LMSTACK_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    direct = get_spec("speech").evaluate_file(trained["model"], str(trained["wavs"]))
    assert printed["files"] == direct["files"] == len(SPEAKERS) * len(DIGITS) * TAKES
    assert printed["rejected"] == 3
    for key in ("accuracy", "wer", "cer"):
        assert printed[key] == pytest.approx(direct[key])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(trained):
    from ray import serve

    from lmstack.serve.app import deploy

    port = free_port()
    deploy({"models": [{"name": "digits", "path": trained["model"], "version": "v1", "num_cpus": 0.5}],
            "feedback_dir": str(trained["tmp"] / "feedback"), "limits": {"max_body_bytes": 200_000}}, port=port)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_openai_client_transcribes_like_predict(trained, served):
    import openai
    import requests

    from lmstack.tasks import get_spec

    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0)
    files = sorted(trained["wavs"].glob("*_cid_[0-2].wav"))
    expected = get_spec("speech").predict(trained["model"], [str(f) for f in files])
    for f, want in zip(files, expected, strict=True):
        with open(f, "rb") as fh:
            got = client.audio.transcriptions.create(model="digits", file=fh)
        assert got.text == want["text"]
    with open(files[0], "rb") as fh:
        text = client.audio.transcriptions.create(model="digits", file=fh, response_format="text")
    assert text.strip() == expected[0]["text"]
    with open(files[0], "rb") as fh:
        verbose = client.audio.transcriptions.create(model="digits", file=fh, response_format="verbose_json",
                                                     language="en")
    assert verbose.text == expected[0]["text"]
    assert verbose.duration == pytest.approx(sf.info(str(files[0])).duration, abs=0.01)
    # The response id takes feedback: a correction is a new (audio, text) training pair.
    with open(files[0], "rb") as fh:
        r = requests.post(f"{served}/v1/audio/transcriptions", files={"file": ("x.wav", fh, "audio/wav")},
                          data={"model": "digits"}, timeout=60)
    assert r.status_code == 200 and r.json()["id"] == r.headers["x-lmstack-request-id"]
    fb = requests.post(f"{served}/v1/feedback", json={"request_id": r.json()["id"], "correction": "zero"}, timeout=30)
    assert fb.status_code == 201, fb.text
    assert (trained["tmp"] / "feedback" / "audio" / f"{r.json()['id']}.wav").read_bytes() == files[0].read_bytes()


def test_concurrent_requests_are_batched(trained, served):
    from concurrent.futures import ThreadPoolExecutor

    import requests

    wav = (trained["wavs"] / "1_cid_0.wav").read_bytes()

    def one(_):
        return requests.post(f"{served}/v1/audio/transcriptions", files={"file": ("a.wav", wav)},
                             data={"model": "digits"}, timeout=60).json()["text"]

    with ThreadPoolExecutor(12) as pool:
        texts = list(pool.map(one, range(24)))
    assert len(set(texts)) == 1  # one audio, one transcript, whichever batch it rode in


@pytest.mark.parametrize("name, content, model, status", [
    ("notes.wav", b"hello, this is text and not a wave file", "digits", 400),
    ("empty.wav", b"", "digits", 400),
    ("long.wav", "long", "digits", 400),  # over the model's max_seconds
    ("large.wav", "large", "digits", 413),  # over the server's body limit
    ("ok.wav", "ok", "nope", 404),
])
def test_bad_uploads_are_4xx_with_openai_errors(trained, served, tmp_path, name, content, model, status):
    import io

    import openai

    if content == "long":
        buf = io.BytesIO()
        sf.write(buf, 0.3 * np.sin(np.arange(3 * RATE) / 3.0).astype(np.float32), RATE, format="WAV")
        content = buf.getvalue()
    elif content == "large":
        content = b"RIFF" + b"\0" * 300_000
    elif content == "ok":
        content = (trained["wavs"] / "1_cid_0.wav").read_bytes()
    path = tmp_path / name
    path.write_bytes(content)
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as err, open(path, "rb") as fh:
        client.audio.transcriptions.create(model=model, file=fh)
    assert err.value.status_code == status
    body = err.value.response.json()
    assert set(body["error"]) >= {"message", "type", "code"} and body["error"]["message"]


def test_missing_fields_and_wrong_formats_are_400(served, trained):
    import requests

    wav = (trained["wavs"] / "1_cid_0.wav").read_bytes()
    url = f"{served}/v1/audio/transcriptions"
    cases = [({"files": {"file": ("a.wav", wav)}}, "model"),
             ({"data": {"model": "digits"}}, "file"),
             ({"files": {"file": ("a.wav", wav)}, "data": {"model": "digits", "response_format": "srt"}},
              "response_format"),
             ({"json": {"model": "digits"}}, None)]
    for kwargs, param in cases:
        r = requests.post(url, timeout=30, **kwargs)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param


@pytest.fixture(scope="module")
def espeak_manifest(tmp_path_factory):
    from lmstack.tasks.speech.synth import SynthUnavailable, synth_speech

    tmp = tmp_path_factory.mktemp("espeak")
    (tmp / "words.txt").write_text("zero\none\ntwo\n")
    try:
        return synth_speech(str(tmp / "words.txt"), str(tmp / "synth"), voices=["en-us", "en+f3", "en-gb-scotland"],
                            speeds=[150], pitches=[40, 60])
    except SynthUnavailable as err:
        pytest.skip(f"espeak-ng part skipped: {err}")


def test_espeak_speech_prepares_through_its_manifest(espeak_manifest, tmp_path):
    from lmstack.tasks import get_spec

    assert espeak_manifest["utterances"] == 3 * 3 * 2 and espeak_manifest["failed"] == 0
    recipe = recipe_for(tmp_path, Path(espeak_manifest["manifest"]).parent,
                        speech={"val_speakers": ["espeak-en-gb-scotland-s150-p40"], "max_seconds": 3.0,
                                "features": {"sample_rate": 16000, "n_mels": 16}})
    manifest = get_spec("speech").prepare(recipe, log=lambda *_: None)
    assert manifest["rejected"] == 0
    assert manifest["examples"] == {"train": 15, "val": 3}  # 22.05 kHz espeak audio resampled to 16 kHz
    assert manifest["splits"]["val"]["speakers"] == ["espeak-en-gb-scotland-s150-p40"]
