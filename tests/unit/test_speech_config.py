"""The speech recipe section: defaults, one-line errors naming the key, the shipped recipes, and the
prepare fingerprint (model and decoding changes do not force a re-prepare; data changes do)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstack.config import RecipeError, load_recipe, validate_recipe
from lmstack.tasks import get_spec

ROOT = Path(__file__).resolve().parents[2]


def raw(**speech) -> dict:
    return {"name": "s", "task": "speech", "data": {"paths": ["x"]}, "speech": speech}


@pytest.mark.parametrize("speech, key", [
    ({"filename_pattern": "{speaker}_{take}"}, "speech.filename_pattern"),
    ({"val_speakers": ["a"], "test_speakers": ["a"]}, "speech"),
    ({"augment": {"speeds": [1.0]}}, "speech.augment.speeds"),
    ({"arch": "rnn"}, "speech.arch"),
    ({"decode": {"beam_width": 0}}, "speech.decode.beam_width"),
    ({"vocab": "aab"}, "speech.vocab"),
    ({"sample_rate": 8000}, "speech.sample_rate"),  # belongs under speech.features
])
def test_bad_speech_sections_name_the_key(speech, key):
    with pytest.raises(RecipeError) as err:
        validate_recipe(raw(**speech), "r.yaml")
    assert str(err.value).startswith(f"r.yaml: {key}")


def test_speech_section_defaults_and_heads_check():
    r = validate_recipe({"name": "s", "task": "speech", "data": {"paths": ["x"]}}, "r.yaml")
    assert r.speech.arch == "transformer" and r.speech.features.n_mels == 40
    with pytest.raises(RecipeError, match="n_head"):
        validate_recipe({**raw(arch="conformer"), "model": {"n_embd": 30, "n_head": 4}}, "r.yaml")


def test_shipped_recipes_load(monkeypatch):
    monkeypatch.setenv("LMSTACK_DATA", "/data")
    for name in ("speech_fsdd", "speech_fsdd_lstm", "speech_fsdd_tune"):
        r = load_recipe(ROOT / "jobs" / "recipes" / f"{name}.yaml")
        assert r.task == "speech" and r.data.paths == ["/data/fsdd/recordings"]
        assert set(r.speech.val_speakers).isdisjoint(r.speech.test_speakers)


def test_prepare_hash_ignores_the_model_but_not_the_data():
    spec = get_spec("speech")
    base = validate_recipe(raw(), "r")
    assert spec.prepare_hash(base) == spec.prepare_hash(validate_recipe(raw(arch="lstm"), "r"))
    assert spec.prepare_hash(base) == spec.prepare_hash(validate_recipe(raw(augment={"time_masks": 2}), "r"))
    assert spec.prepare_hash(base) != spec.prepare_hash(validate_recipe(raw(augment={"speeds": [0.9]}), "r"))
    assert spec.prepare_hash(base) != spec.prepare_hash(validate_recipe(raw(val_speakers=["a"]), "r"))
