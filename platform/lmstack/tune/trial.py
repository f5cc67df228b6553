"""One Tune trial = one normal lmstack training run in its own run directory.

Ray Train V2 cannot itself be a Tune trainable, so a small Tune Trainable launches the
TorchTrainer in a thread and relays its reports, which arrive through a Ray queue from a Train
callback. It is a class (not a function trainable) because Tune waits for a class's cleanup():
when a scheduler stops a trial, cleanup aborts the TorchTrainer so its workers' placement group
is released. Killing the trial instead leaks the placement group on clusters without a dashboard
(Train's cleaner cannot query actor state there), and stopped trials would hold CPUs forever.

A report that came with a Train checkpoint makes a tiny Tune checkpoint: a pointer to the Train
checkpoint. PBT hands a trial another trial's pointer; a restored search finds its Train run by it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import ray
from ray import tune
from ray.train import UserCallback

from lmstack import runtime
from lmstack.config import Recipe, validate_recipe
from lmstack.tune.space import apply_params

POINTER = "lmstack_pointer.json"
ABORT_TIMEOUT_S = 60


def trial_recipe(base_raw: dict[str, Any], params: dict[str, Any], run_dir: str) -> Recipe:
    raw = apply_params(base_raw, params)
    raw["run_dir"] = run_dir
    raw["tune"] = None
    return validate_recipe(raw, f"trial {os.path.basename(run_dir)}")


class Forward(UserCallback):
    """Runs in the Train controller: hands each report (and the controller's handle) to the trial."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put({
            "metrics": dict(metrics[0]),
            "checkpoint": checkpoint.path if checkpoint else None,
            "controller": ray.get_runtime_context().current_actor,
        })


class LmstackTrial(tune.Trainable):
    """Configured by make_trainable with the base recipe, the data manifest and the search root."""

    base_raw: dict[str, Any] = {}
    info: dict[str, Any] = {}
    root: str = ""
    keys: list[str] = []
    fold_infos: list[dict[str, Any]] = []  # cross-validation: one manifest per fold, else empty
    metric: str = "val_loss"
    mode: str = "min"

    def setup(self, config: dict[str, Any]) -> None:
        self.run_dir = runtime.join(self.root, "trials", self.trial_id)
        self.recipe = trial_recipe(self.base_raw, {k: config[k] for k in self.keys}, self.run_dir)
        self.run_name, self.init = "train", None
        self.thread: threading.Thread | None = None
        self.controller = None
        self.outcome: dict[str, Any] = {}
        self.last: dict[str, Any] = {}
        self.pointer: dict[str, Any] | None = None
        self.stop_event: threading.Event | None = None

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, POINTER)) as f:
            ptr = json.load(f)
        if ptr["trial_id"] == self.trial_id or ptr["path"] is None:
            self.run_name, self.init = ptr["run_name"], None  # Train resumes this run from its storage
        else:  # PBT exploit: continue from the donor's weights in a fresh Train run
            self.run_name, self.init = f"pbt_{ptr['trial_id']}_{ptr['step']}", ptr["path"]

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        # Before the first Train checkpoint (PBT may ask early) the pointer names only the run.
        ptr = self.pointer or {"trial_id": self.trial_id, "run_name": self.run_name, "path": None, "step": 0}
        with open(os.path.join(checkpoint_dir, POINTER), "w") as f:
            json.dump(ptr, f)

    def _start(self) -> None:
        from ray.util.queue import Queue

        from lmstack.train.trainer import build_trainer

        runtime.makedirs(self.run_dir)
        _log_start(self.run_dir, self.run_name, self.init)
        self.queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
        if self.fold_infos:
            self._start_folds()
            return
        if self.recipe.train.in_process:
            self._start_in_process()
            return
        trainer = build_trainer(self.recipe, self.info, run_name=self.run_name, callbacks=[Forward(self.queue)])
        if self.init is not None:
            # V2 has no resume_from_checkpoint; the loop starts from this when its run has none.
            trainer.train_loop_config["init_checkpoint"] = self.init

        def fit() -> None:
            self.outcome["error"] = trainer.fit().error

        self._run_in_thread(fit, "lmstack-trial-fit")

    def _start_in_process(self) -> None:
        """train.in_process: the loop runs in this trial's own process (no Train worker group per trial,
        which is most of a small model's trial); reports reach step() through the same queue."""
        from lmstack.train.local import fit_in_process

        self.stop_event = threading.Event()

        def relay(metrics: dict[str, Any], checkpoint: str | None) -> None:
            self.queue.put({"metrics": dict(metrics), "checkpoint": checkpoint, "controller": None})

        def fit() -> None:
            fit_in_process(self.recipe, self.info, self.run_dir, name=self.run_name, init_checkpoint=self.init,
                           on_report=relay, stop=self.stop_event)

        self._run_in_thread(fit, "lmstack-trial-in-process")

    def _start_folds(self) -> None:
        """Cross-validation: the folds train one after another; the trial reports once, at the end."""
        from lmstack.tune.cv import run_folds

        def fit() -> None:
            self.last = run_folds(self.recipe, self.fold_infos, self.run_dir, self.metric, self.mode)

        self._run_in_thread(fit, "lmstack-trial-folds")

    def _run_in_thread(self, work, name: str) -> None:
        """Run `work` beside the trial; its error is raised again from step(), and "done" always follows."""

        def run() -> None:
            try:
                work()
            except BaseException as err:  # noqa: BLE001 - raised again from step()
                self.outcome["error"] = err
            finally:
                self.queue.put({"done": True})

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def step(self) -> dict[str, Any]:
        if self.thread is None:
            self._start()
        item = self.queue.get(block=True)
        if item.get("done"):
            self.thread.join()
            if self.outcome.get("error") is not None:
                raise self.outcome["error"]
            return {**self.last, "done": True}
        self.controller = item["controller"]
        self.last = item["metrics"]
        if item["checkpoint"] is None:
            return dict(self.last)
        self.pointer = {"trial_id": self.trial_id, "run_name": self.run_name, "path": item["checkpoint"],
                        "step": self.last.get("step")}
        return {**self.last, "checkpoint_path": item["checkpoint"], "should_checkpoint": True}

    def cleanup(self) -> None:
        """Stopped before the TorchTrainer finished (a scheduler's decision): abort it and wait."""
        if self.thread is None or not self.thread.is_alive():
            return
        if self.stop_event is not None:  # in process: the loop stops at its next report
            self.stop_event.set()
            self._drain_until(lambda: not self.thread.is_alive())
            return
        if self.controller is None:
            return
        ref = self.controller.abort.remote()
        self._drain_until(lambda: bool(ray.wait([ref], timeout=0.5)[0]))
        self.thread.join(timeout=10)

    def _drain_until(self, done) -> None:
        """Empty the queue until `done()`: the run may be blocked handing us a report."""
        from ray.util.queue import Empty

        deadline = time.time() + ABORT_TIMEOUT_S
        while time.time() < deadline:
            try:
                while True:
                    self.queue.get_nowait()
            except Empty:
                pass
            if done():
                break
            time.sleep(0.1)


def make_trainable(base_raw: dict[str, Any], info: dict[str, Any], root: str, keys: list[str],
                   fold_infos: list[dict[str, Any]] | None = None, metric: str = "val_loss",
                   mode: str = "min") -> type:
    """A Trainable class closed over the base recipe (tune section removed)."""
    return type("LmstackTrial", (LmstackTrial,), {"base_raw": base_raw, "info": info, "root": root,
                                                  "keys": keys, "fold_infos": fold_infos or [],
                                                  "metric": metric, "mode": mode})


def _log_start(run_dir: str, run_name: str, init: str | None) -> None:
    """starts.jsonl: one line per time this trial started, so a resumed search shows what reran."""
    path = runtime.join(run_dir, "starts.jsonl")
    old = runtime.read_text(path) if runtime.exists(path) else ""
    line = json.dumps({"time": time.time(), "run_name": run_name, "init_checkpoint": init})
    runtime.write_text(path, old + line + "\n")
