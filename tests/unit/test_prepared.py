"""When verbs prepare data: missing, made from other settings, or left half-written by a crash."""

from __future__ import annotations

import json

import pytest

from lmstack import runtime
from lmstack.config import validate_recipe
from lmstack.tasks import get_spec
from lmstack.train.prepared import ensure_prepared


class Died(RuntimeError):
    pass


class CountingLM(type(get_spec("lm"))):
    """The lm spec with a prepare that records its calls, writes shards, and can die before its manifest."""

    def __init__(self, die: bool = False):
        self.calls, self.die = 0, die

    def prepare(self, recipe, log=print):
        self.calls += 1
        runtime.write_text(runtime.join(recipe.data_dir(), "train", "part-0.parquet"), "shard")
        if self.die:
            raise Died
        manifest = {"task": "lm", "prepare_hash": self.prepare_hash(recipe)}
        runtime.write_json(runtime.join(recipe.data_dir(), "manifest.json"), manifest)
        return manifest


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "connect", lambda *a, **k: None)  # these specs never touch Ray
    (tmp_path / "corpus.txt").write_text("some text\n")
    return validate_recipe({"name": "p", "run_dir": str(tmp_path / "run"),
                            "data": {"paths": [str(tmp_path / "corpus.txt")]}}, "p.yaml")


def test_prepared_once_then_reused_and_again_when_settings_change(recipe):
    spec = CountingLM()
    ensure_prepared(recipe, spec, log=lambda *_: None)
    ensure_prepared(recipe, spec, log=lambda *_: None)
    assert spec.calls == 1
    moved = recipe.model_copy(update={"data": recipe.data.model_copy(update={"output": recipe.data_dir()})})
    ensure_prepared(moved, spec, log=lambda *_: None)  # the same data written where it already is
    assert spec.calls == 1
    other = recipe.model_copy(update={"data": recipe.data.model_copy(update={"block_size": 64})})
    ensure_prepared(other, spec, log=lambda *_: None)
    assert spec.calls == 2


def test_a_prepare_that_dies_leaves_no_manifest_to_trust(recipe):
    ensure_prepared(recipe, CountingLM(), log=lambda *_: None)
    other = recipe.model_copy(update={"data": recipe.data.model_copy(update={"block_size": 64})})
    with pytest.raises(Died):
        ensure_prepared(other, CountingLM(die=True), log=lambda *_: None)
    assert not runtime.exists(runtime.join(recipe.data_dir(), "manifest.json"))  # the old one is gone too
    again = CountingLM()
    ensure_prepared(recipe, again, log=lambda *_: None)  # so the next verb prepares instead of trusting it
    assert again.calls == 1
    assert json.loads(open(runtime.join(recipe.data_dir(), "manifest.json")).read())["task"] == "lm"


def test_a_data_path_that_matches_nothing_is_one_line_before_any_work(recipe, tmp_path):
    from lmstack.data.read import DataSourceError

    bad = recipe.model_copy(update={"data": recipe.data.model_copy(update={"paths": [str(tmp_path / "no*.txt")]})})
    with pytest.raises(DataSourceError, match="no\\*.txt' matches no files"):
        ensure_prepared(bad, CountingLM(), log=lambda *_: None)
