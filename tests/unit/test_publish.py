"""Publishing a model directory is one atomic step: a reader polling it, and a publisher killed at a
random instant, only ever see a whole old or a whole new directory."""

import os
import signal
import subprocess
import sys
import time

from lmstack import runtime

PUBLISHER = """
import os, sys, tempfile
from lmstack.runtime import publish_dir
dest, i = sys.argv[1], 0
while True:
    i += 1
    staged = tempfile.mkdtemp(dir=os.path.dirname(dest))
    for name in ("weights", "lmstack_model.json"):  # the lineage file last, as an export writes it
        with open(os.path.join(staged, name), "w") as f:
            f.write(str(i))
    publish_dir(staged, dest)
"""


def _whole(dest: str) -> bool:
    """Both files from one directory (opened once, as a loader resolves its model directory once)."""
    try:
        d = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return False
    try:
        texts = []
        for name in ("weights", "lmstack_model.json"):
            fd = os.open(name, os.O_RDONLY, dir_fd=d)
            with os.fdopen(fd) as f:
                texts.append(f.read())
        return texts[0] == texts[1] != ""
    except FileNotFoundError:
        return False
    finally:
        os.close(d)


def test_a_reader_and_a_killed_publisher_see_only_whole_directories(tmp_path):
    dest = str(tmp_path / "model")
    staged = tmp_path / "first"
    staged.mkdir()
    (staged / "weights").write_text("0")
    (staged / "lmstack_model.json").write_text("0")
    runtime.publish_dir(str(staged), dest)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", PUBLISHER, dest], env=env)
    try:
        seen, broken, deadline = set(), 0, time.time() + 3
        while time.time() < deadline or len(seen) < 20:
            if _whole(dest):
                seen.add(open(os.path.join(dest, "weights")).read())
            else:
                broken += 1
            assert time.time() < deadline + 20, "the publisher made no progress"
        assert broken == 0, f"{broken} reads found no model or a mixed one"
    finally:
        os.kill(child.pid, signal.SIGKILL)  # mid-write, at whatever point it had reached
        child.wait()
    assert _whole(dest)


def test_replaced_directories_go_once_their_grace_period_has_passed(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_REPLACED_GRACE_S", 0)
    for i in range(3):
        staged = tmp_path / f"s{i}"
        staged.mkdir()
        (staged / "lmstack_model.json").write_text(str(i))
        runtime.publish_dir(str(staged), str(tmp_path / "model"))
    left = sorted(os.listdir(tmp_path))
    assert len(left) == 2 and left[0].startswith(".replaced-model-") and left[1] == "model"
    assert (tmp_path / "model" / "lmstack_model.json").read_text() == "2"


def test_a_prepare_that_dies_half_way_leaves_no_manifest_train_would_accept(tmp_path, monkeypatch):
    """The manifest is the commit marker of prepared data: a re-prepare removes the old one first and
    writes the new one last, so a crash in between leaves none (train then prepares again)."""
    from builders import make_corpus, tiny_recipe
    from lmstack.artifacts import data_manifest_path, read_data_manifest
    from lmstack.tasks import get_spec
    from lmstack.train.prepared import prepare_fresh

    recipe = tiny_recipe(tmp_path, make_corpus(tmp_path / "c", docs=3))
    runtime.write_json(data_manifest_path(recipe), {"prepare_hash": "old", "blocks": {"train": 1, "val": 1}})
    spec = get_spec("lm")

    def dies(*_, **__):
        raise KeyboardInterrupt  # the process is stopped mid-prepare

    monkeypatch.setattr(runtime, "connect", lambda *_, **__: None)
    monkeypatch.setattr(type(spec), "prepare", dies)
    try:
        prepare_fresh(recipe, spec)
    except KeyboardInterrupt:
        pass
    assert read_data_manifest(recipe) is None
