"""Integration: prepare -> train with 2 workers -> checkpoint -> resume -> export -> generate."""

import json
import os
import signal
import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_corpus, tiny_recipe
from lmstack.data.prepare import prepare
from lmstack.evaluate.split import evaluate
from lmstack.models.generate import generate
from lmstack.train.trainer import train

pytestmark = pytest.mark.usefixtures("ray_cluster")
quiet = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepared")
    data = make_corpus(tmp / "corpus", docs=80)
    recipe = tiny_recipe(tmp, data)
    prepare(recipe, log=quiet)
    return recipe


def recipe_in(prepared, run_dir, **train_fields):
    recipe = prepared.model_copy(deep=True)
    recipe.data.output = prepared.data_dir()
    recipe.run_dir = str(run_dir)
    for key, value in train_fields.items():
        setattr(recipe.train, key, value)
    return recipe


def checkpoint_step(path):
    state = torch.load(os.path.join(path, "train_state.pt"), weights_only=False)
    return state["progress"]["step"]


def metrics_rows(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path)]


def test_train_export_resume_and_generate(prepared, tmp_path):
    recipe = recipe_in(prepared, tmp_path / "run", max_steps=20)
    summary = train(recipe, log=quiet)
    assert summary["steps"] == 20 and summary["val_loss"] < 3.5  # ln(vocab ~ 40) = 3.7 untrained
    assert {"val_loss", "val_ppl", "val_bpb", "steps", "model_dir", "wall_time_s"} <= set(summary)
    rows = metrics_rows(recipe.run_dir)
    assert [r["step"] for r in rows if "val_loss" in r] == [10, 20]
    ckpts = sorted(p for p in os.listdir(tmp_path / "run" / "train") if p.startswith("checkpoint_2"))
    assert len(ckpts) == 2

    # Plain transformers loads the export and generates.
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"], local_files_only=True)
    tok = AutoTokenizer.from_pretrained(summary["model_dir"], local_files_only=True)
    assert model.config.model_type == "gpt2" and tok.eos_token == "<|endoftext|>"
    text = generate(summary["model_dir"], "the ", max_new_tokens=50, seed=0)
    assert 0 < len(text) <= 50  # one character per token; EOS samples decode to nothing

    # Same run directory, more steps: resumes from step 20 instead of starting again.
    recipe.train.max_steps = 30
    again = train(recipe, log=quiet)
    assert again["steps"] == 30
    evals = {r["step"]: r["val_loss"] for r in metrics_rows(recipe.run_dir) if "val_loss" in r}
    assert list(evals) == [10, 20, 30]
    # Kept on disk: the best K by val_loss, plus the latest (what a resume needs).
    kept = {checkpoint_step(tmp_path / "run" / "train" / p)
            for p in os.listdir(tmp_path / "run" / "train") if p.startswith("checkpoint_2")}
    best_k = set(sorted(evals, key=evals.get)[: recipe.train.keep_checkpoints])
    assert kept == best_k | {30}

    # `lmstack evaluate` on the export sees the same validation data as training did.
    evaluated = evaluate(recipe, log=quiet)
    assert evaluated["val_loss"] == pytest.approx(again["val_loss"], rel=0.1)
    assert os.path.exists(tmp_path / "run" / "evaluate" / "metrics.json")


class WorkerKiller(threading.Thread):
    """kill -9 one Ray Train worker once metrics.jsonl shows `step`."""

    def __init__(self, run_dir, step):
        super().__init__(daemon=True)
        self.run_dir, self.step, self.killed = run_dir, step, None

    def run(self):
        # The GCS actor table; ray.util.state would need the dashboard, which tests do not start.
        from ray._private.state import actors

        deadline = time.time() + 300
        while time.time() < deadline and self.killed is None:
            if any(r.get("step", 0) >= self.step for r in metrics_rows(self.run_dir)):
                alive = [a for a in actors().values()
                         if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]
                if alive:
                    self.killed = alive[-1]["Pid"]
                    os.kill(self.killed, signal.SIGKILL)
            time.sleep(0.05)


def test_interrupted_run_resumes_to_same_loss(prepared, tmp_path):
    steps = dict(max_steps=40, eval_every=10, log_every=5)
    straight = train(recipe_in(prepared, tmp_path / "straight", **steps), log=quiet)

    crashed = recipe_in(prepared, tmp_path / "crashed", max_failures=0, **steps)
    killer = WorkerKiller(crashed.run_dir, 10)
    killer.start()
    with pytest.raises(Exception):  # noqa: B017 - the worker crash surfaces as Ray's error type
        train(crashed, log=quiet)
    killer.join()
    assert killer.killed
    interrupted_at = max(r["step"] for r in metrics_rows(crashed.run_dir))
    assert interrupted_at < 40
    resumed = train(crashed, log=quiet)
    assert resumed["steps"] == 40
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=0.03)


def test_killed_worker_is_replaced(prepared, tmp_path):
    recipe = recipe_in(prepared, tmp_path / "ft", max_steps=40, max_failures=2)
    killer = WorkerKiller(recipe.run_dir, 10)
    killer.start()
    summary = train(recipe, log=quiet)
    killer.join()
    assert killer.killed and summary["steps"] == 40


def test_run_dir_of_another_model_fails_before_training(tmp_path):
    from lmstack.config import validate_recipe
    from lmstack.train.trainer import check_resumable

    raw = tiny_recipe(tmp_path, tmp_path / "corpus").model_dump(mode="json")
    run_dir = str(tmp_path / "run")
    check_resumable(validate_recipe(raw, "a.yaml"), run_dir)  # first start: records what it trains
    more_steps = {**raw, "train": {**raw["train"], "max_steps": raw["train"]["max_steps"] * 2, "num_workers": 1}}
    check_resumable(validate_recipe(more_steps, "a.yaml"), run_dir)  # same model: resumable
    wider = {**raw, "model": {**raw["model"], "n_embd": raw["model"]["n_embd"] * 2}}
    with pytest.raises(ValueError, match=r"run.* holds a run of recipe .* whose model section\(s\) differ"):
        check_resumable(validate_recipe(wider, "a.yaml"), run_dir)
