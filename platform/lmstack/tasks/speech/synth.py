"""Speech data from text: every line of a text file spoken by espeak-ng in several voices, speeds and
pitches -> <out>/wav/*.wav + <out>/manifest.jsonl (audio, text, speaker), a manifest that a speech
recipe reads directly (e.g. speech.train_only_paths, as extra synthetic speakers for FSDD digits)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from typing import Any

DEFAULT_VOICES = ("en-us", "en", "en-us+f3", "en+m3", "en-gb-scotland", "en-029")
DEFAULT_SPEEDS = (140, 175)  # words per minute (espeak-ng's default is 175)
DEFAULT_PITCHES = (35, 50, 65)  # 0..99 (default 50)


class SynthUnavailable(RuntimeError):
    """espeak-ng is not installed."""


def espeak_binary() -> str:
    found = shutil.which("espeak-ng")
    if not found:
        raise SynthUnavailable("synth-speech needs espeak-ng, which is not installed: "
                               "`apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng`")
    return found


def speaker_name(voice: str, speed: int, pitch: int) -> str:
    return f"espeak-{voice.replace('+', '-')}-s{speed}-p{pitch}"


def _speak(binary: str, text: str, voice: str, speed: int, pitch: int, path: str) -> str | None:
    """Write one wav; returns an error line instead of raising (a bad voice name must not stop the rest)."""
    done = subprocess.run([binary, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, "--", text],
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 or not os.path.exists(path) or os.path.getsize(path) <= 44:
        return (done.stderr.strip().splitlines() or [f"espeak-ng exited with {done.returncode}"])[0]
    return None


def synth_speech(text_file: str, out_dir: str, voices: list[str] | tuple[str, ...] = DEFAULT_VOICES,
                 speeds: list[int] | tuple[int, ...] = DEFAULT_SPEEDS,
                 pitches: list[int] | tuple[int, ...] = DEFAULT_PITCHES, workers: int = 2
                 ) -> dict[str, Any]:
    """Speak every non-empty line of `text_file` with every (voice, speed, pitch) (espeak-ng is
    deterministic: variety comes from these three). Returns counts and the manifest's path."""
    binary = espeak_binary()
    with open(text_file, encoding="utf-8") as f:
        lines = [" ".join(line.split()) for line in f]
    texts = [t for t in lines if t]
    if not texts:
        raise ValueError(f"{text_file}: no text lines to speak")
    wav_dir = os.path.join(out_dir, "wav")
    os.makedirs(wav_dir, exist_ok=True)
    jobs = []
    for (i, text), voice, speed, pitch in product(enumerate(texts), voices, speeds, pitches):
        speaker = speaker_name(voice, speed, pitch)
        digest = hashlib.sha1(f"{i}|{text}".encode()).hexdigest()[:10]
        jobs.append((text, voice, int(speed), int(pitch), speaker, os.path.join(wav_dir, f"{speaker}_{i}_{digest}.wav")))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        errors = list(pool.map(lambda j: _speak(binary, j[0], j[1], j[2], j[3], j[5]), jobs))
    rows, failed = [], []
    for (text, voice, speed, pitch, speaker, path), err in zip(jobs, errors, strict=True):
        if err:
            failed.append({"text": text, "voice": voice, "error": err})
            continue
        rows.append({"audio": os.path.relpath(path, out_dir), "text": text, "speaker": speaker,
                     "voice": voice, "speed": speed, "pitch": pitch})
    manifest = os.path.join(out_dir, "manifest.jsonl")
    with open(manifest, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    report = {"manifest": manifest, "utterances": len(rows), "failed": len(failed),
              "speakers": len({r["speaker"] for r in rows}), "texts": len(set(texts))}
    # Not .jsonl/.csv: a recipe reading this folder must see only the manifest.
    with open(os.path.join(out_dir, "synth_report.json"), "w", encoding="utf-8") as f:
        json.dump({**report, "failures": failed}, f, ensure_ascii=False, indent=1)
    return report
