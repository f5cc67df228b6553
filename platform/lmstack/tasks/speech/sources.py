"""Which utterances a data path holds: audio files named by a pattern (FSDD's `{digit}_{speaker}_{take}`)
or manifest rows (JSONL/CSV: audio path, text, speaker). Listing only; audio is read on Ray Data.

Prepare and `lmstack evaluate --model DIR --data WAV_DIR|MANIFEST` both list through here, with the
settings the export stores, so evaluation parses names and manifests the way training did.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from lmstack import runtime
from lmstack.data.read import DataSourceError, encodable
from lmstack.tasks.speech.audio import normalize_text
from lmstack.tasks.speech.config import AUDIO_SUFFIXES, DIGIT_WORDS, PATTERN_FIELD

MANIFEST_SUFFIXES = (".jsonl", ".csv")


@dataclass(frozen=True)
class SourceSettings:
    filename_pattern: str = "{digit}_{speaker}_{take}"
    audio_field: str = "audio"
    text_field: str = "text"
    speaker_field: str = "speaker"
    lowercase: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceSettings:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`{digit}_{speaker}_{take}` -> a regex with named groups; literal text matches itself."""
    out, at = [], 0
    for m in PATTERN_FIELD.finditer(pattern):
        out.append(re.escape(pattern[at:m.start()]))
        name = m.group(1)
        out.append(r"(?P<digit>\d)" if name == "digit" else f"(?P<{name}>[^_]+)")
        at = m.end()
    out.append(re.escape(pattern[at:]))
    return re.compile("".join(out))


def parse_name(stem: str, regex: re.Pattern[str]) -> tuple[str, str] | None:
    """(transcript, speaker) from a file name without suffix, or None when it does not match."""
    m = regex.fullmatch(stem)
    if m is None:
        return None
    groups = m.groupdict()
    text = DIGIT_WORDS[int(groups["digit"])] if "digit" in groups else groups["text"].replace("-", " ")
    return text, groups.get("speaker") or ""


def _walk(fs: pafs.FileSystem, root: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _display(path: str, uri_base: str, local_base: str) -> str:
    """The path as the user wrote its root (a URI stays a URI)."""
    return uri_base.rstrip("/") + path[len(local_base.rstrip("/")):] if runtime.is_uri(uri_base) else path


def list_utterances(paths: list[str], settings: SourceSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, rejects). A row: id, path, text, speaker. A reject: id, path, reason, detail."""
    regex = compile_pattern(settings.filename_pattern)
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for given in paths:
        fs, p = runtime.filesystem(given)
        kind = fs.get_file_info(p).type
        if kind == pafs.FileType.NotFound:
            raise DataSourceError(f"data.paths: {given} does not exist")
        if kind == pafs.FileType.Directory:
            found = _walk(fs, p)
            # A folder with manifests (e.g. `lmstack data synth-speech` output) is read through them only:
            # its audio files are what the manifests point at.
            files = [f for f in found if f.lower().endswith(MANIFEST_SUFFIXES)] or [
                f for f in found if f.lower().endswith(AUDIO_SUFFIXES)]
            if not files:
                raise DataSourceError(f"data.paths: {given} holds no {'/'.join(AUDIO_SUFFIXES)} or manifest files")
            for f in files:
                _add(_display(f, given, p), fs, f, regex, settings, rows, rejects, root=p)
        else:
            _add(given, fs, p, regex, settings, rows, rejects, root=os.path.dirname(p))
    return rows, rejects


def _add(shown: str, fs: pafs.FileSystem, path: str, regex: re.Pattern[str], settings: SourceSettings,
         rows: list[dict[str, Any]], rejects: list[dict[str, Any]], root: str) -> None:
    lower = path.lower()
    if lower.endswith(MANIFEST_SUFFIXES):
        _read_manifest(shown, fs, path, settings, rows, rejects)
        return
    if not lower.endswith(AUDIO_SUFFIXES):
        raise DataSourceError(f"data.paths: {shown} is neither audio ({'/'.join(AUDIO_SUFFIXES)}) nor a manifest "
                              f"({'/'.join(MANIFEST_SUFFIXES)})")
    utt_id = os.path.relpath(path, root) if not runtime.is_uri(shown) else shown
    stem = os.path.splitext(os.path.basename(path))[0]
    parsed = parse_name(stem, regex)
    if parsed is None:
        rejects.append({"id": utt_id, "path": shown, "reason": "name_pattern",
                        "detail": f"{stem!r} does not match {settings.filename_pattern!r}"})
        return
    text, speaker = parsed
    rows.append({"id": utt_id, "path": shown, "text": normalize_text(text, settings.lowercase), "speaker": speaker})


def _read_manifest(shown: str, fs: pafs.FileSystem, path: str, settings: SourceSettings,
                   rows: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> None:
    with fs.open_input_stream(path) as f:
        data = f.read()
    base = shown.rsplit("/", 1)[0] if runtime.is_uri(shown) else os.path.dirname(os.path.abspath(shown))
    records: list[tuple[int, Any]] = []
    if path.lower().endswith(".csv"):
        try:
            records = list(enumerate(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))), start=2))
        except UnicodeDecodeError as err:  # never U+FFFD inside a transcript
            records = [(0, f"not UTF-8 at byte {err.start}")]
        except csv.Error as err:
            records = [(0, f"malformed CSV: {err}")]
    else:
        for line_no, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((line_no, json.loads(line)))
            except UnicodeDecodeError as err:
                records.append((line_no, f"not UTF-8 at byte {err.start}"))
            except RecursionError:
                records.append((line_no, "not JSON: nested too deeply"))
            except ValueError as err:
                records.append((line_no, f"not JSON: {getattr(err, 'msg', str(err))}"))
    for line_no, rec in records:
        utt_id = f"{os.path.basename(shown)}:{line_no}"
        if not isinstance(rec, dict):
            rejects.append({"id": utt_id, "path": shown, "reason": "unreadable",
                            "detail": rec if isinstance(rec, str) else "a row must be an object"})
            continue
        audio, text = rec.get(settings.audio_field), rec.get(settings.text_field)
        missing = [k for k, v in ((settings.audio_field, audio), (settings.text_field, text)) if v in (None, "")]
        if missing:
            rejects.append({"id": utt_id, "path": shown, "reason": "missing_field",
                            "detail": f"line {line_no}: no {', '.join(missing)}"})
            continue
        if not all(encodable(str(v)) for v in (audio, text)):
            rejects.append({"id": utt_id, "path": shown, "reason": "unreadable",
                            "detail": f"line {line_no}: an invalid unicode escape (lone surrogate)"})
            continue
        audio = str(audio)
        if not (runtime.is_uri(audio) or os.path.isabs(audio)):
            audio = f"{base}/{audio}" if runtime.is_uri(base) else os.path.join(base, audio)
        rows.append({"id": utt_id, "path": audio, "text": normalize_text(str(text), settings.lowercase),
                     "speaker": str(rec.get(settings.speaker_field) or "")})



def read_bytes(path: str) -> bytes:
    fs, p = runtime.filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read()
