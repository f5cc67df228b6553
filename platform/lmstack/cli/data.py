"""Data tools: `lmstack data synth-speech TEXT_FILE --out DIR` (speech data spoken by espeak-ng)."""

from __future__ import annotations

import argparse
import sys

from lmstack.cli.common import print_json


def cmd_synth_speech(args: argparse.Namespace) -> None:
    from lmstack.tasks.speech import synth

    try:
        result = synth.synth_speech(args.text_file, args.out, voices=args.voices or synth.DEFAULT_VOICES,
                                    speeds=args.speeds or synth.DEFAULT_SPEEDS,
                                    pitches=args.pitches or synth.DEFAULT_PITCHES)
    except (synth.SynthUnavailable, ValueError, OSError) as err:  # missing espeak-ng, empty or unreadable text
        print(f"lmstack data synth-speech: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print_json(result)


def register(verbs) -> None:
    data = verbs.add_parser("data", help="data tools").add_subparsers(dest="data_verb", required=True)
    p = data.add_parser("synth-speech", help="speak every line of a text file with espeak-ng in several voices, "
                                             "speeds and pitches: wav files + a manifest a speech recipe reads")
    p.add_argument("text_file", help="UTF-8 text, one utterance per line")
    p.add_argument("--out", required=True, help="output directory (wav/ and manifest.jsonl)")
    p.add_argument("--voices", nargs="+", help="espeak-ng voices (default: six English voices)")
    p.add_argument("--speeds", nargs="+", type=int, help="words per minute (default: 140 175)")
    p.add_argument("--pitches", nargs="+", type=int, help="0..99 (default: 35 50 65)")
    p.set_defaults(fn=cmd_synth_speech)
