"""Publishing and loading exported directories."""

from __future__ import annotations

import json
import os

from lmstack import runtime
from lmstack.artifacts import cache_per_export


def export(tmp_path, dest, weights: str) -> None:
    staged = tmp_path / f"staged-{weights}"
    staged.mkdir()
    (staged / "weights.json").write_text(json.dumps({"w": weights}))
    runtime.publish_dir(str(staged), str(dest))


def test_publish_replaces_whole_and_leaves_nothing_beside(tmp_path):
    dest = tmp_path / "model"
    export(tmp_path, dest, "v1")
    (dest / "stale.bin").write_text("from an older export")
    export(tmp_path, dest, "v2")
    assert sorted(os.listdir(dest)) == ["weights.json"]  # no stale file mixed in
    assert json.loads((dest / "weights.json").read_text())["w"] == "v2"
    # No staging directory left over; the replaced one stays beside for a grace period (a loader may still be
    # reading it) and goes at a later publish.
    left = sorted(os.listdir(tmp_path))
    assert left[-1] == "model" and [n.split("-")[:2] for n in left[:-1]] == [[".replaced", "model"]]


def test_a_re_export_to_the_same_path_is_loaded_again(tmp_path):
    loads = []

    @cache_per_export()
    def load(path):
        loads.append(path)
        return json.loads(open(os.path.join(path, "weights.json")).read())["w"]

    dest = tmp_path / "model"
    export(tmp_path, dest, "v1")
    assert load(str(dest)) == "v1" and load(str(dest)) == "v1" and len(loads) == 1  # cached
    export(tmp_path, dest, "v2")
    assert load(str(dest)) == "v2" and len(loads) == 2  # same path, new export: loaded again
