"""lmstack vs nanoGPT on nanoGPT's CPU tinyshakespeare setting (4 x 4 x 128, context 64, batch 12, 2,000 steps).

    python benchmarks/vs_nanogpt.py --nanogpt /path/to/nanoGPT [--mode full|model] [--steps 2000]

--mode full (default): nanoGPT's own `train.py config/train_shakespeare_char.py ...` (its CPU command line) and
    lmstack's recipe (`lmstack prepare` + `lmstack train`, Ray start-up included), one after the other, as
    subprocesses; val loss and wall time of each and the ratios.
--mode model: the model code alone, in this process: a plain loop of --steps steps per arm (nanoGPT's
    model.py, lmstack's recipe model, optionally transformers' GPT-2 and the _best recipe), run interleaved
    in chunks on the same batches under the same load, so the timing ratio is paired; then the same fixed
    validation batches for every arm.

The nanoGPT checkout is never downloaded: without --nanogpt (or when the path has no train.py/model.py) the
script prints why it skips. Its data is prepared by its own data/shakespeare_char/prepare.py from
$LMSTACK_DATA/tinyshakespeare/input.txt (copied next to it, so prepare.py does not download). The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "jobs", "recipes", "shakespeare_char.yaml")
BEST = os.path.join(ROOT, "jobs", "recipes", "shakespeare_char_best.yaml")
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nanogpt", help="a local nanoGPT checkout (never downloaded)")
    p.add_argument("--mode", choices=["full", "model"], default="full")
    p.add_argument("--recipe", default=RECIPE, help="lmstack's recipe (full mode; the lmstack arm of model mode)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="full mode: a recipe override for `lmstack train`, e.g. model.impl=lmstack (repeatable)")
    p.add_argument("--best-recipe", default=BEST, help="the recipe of the 'best' arm (model mode)")
    p.add_argument("--arms", default="nanogpt,lmstack",
                   help="model mode: comma-separated from nanogpt, lmstack, hf, best")
    p.add_argument("--steps", type=int, default=2000, help="training steps of every run (nanoGPT's setting: 2000)")
    p.add_argument("--chunk", type=int, default=50, help="model mode: steps per arm between switches")
    p.add_argument("--eval-batches", type=int, default=200, help="model mode: fixed validation batches")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--work-dir", default=None, help="full mode: where runs go (default: a temporary dir)")
    return p.parse_args(argv)


def skip_reason(path: str | None) -> str | None:
    if not path:
        return "no --nanogpt checkout given (it is never downloaded)"
    missing = [f for f in ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py",
                           "data/shakespeare_char/prepare.py") if not os.path.isfile(os.path.join(path, f))]
    return f"nanoGPT checkout {path!r} lacks {', '.join(missing)}" if missing else None


def prepare_nanogpt_data(path: str) -> str:
    """nanoGPT's own prepare.py on the shared copy of input.txt (so it does not download)."""
    data = os.path.join(path, "data", "shakespeare_char")
    if all(os.path.isfile(os.path.join(data, f)) for f in ("train.bin", "val.bin", "meta.pkl")):
        return data
    if not os.path.isfile(os.path.join(data, "input.txt")):
        source = os.path.join(os.environ.get("LMSTACK_DATA", ""), "tinyshakespeare", "input.txt")
        if not os.path.isfile(source):
            raise SystemExit(f"no {source}: set LMSTACK_DATA to the shared datasets directory")
        shutil.copyfile(source, os.path.join(data, "input.txt"))
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, stdout=subprocess.DEVNULL)
    return data


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- full mode ---------------------------------------------------------------------------------------
def run_nanogpt(path: str, out_dir: str, threads: int | None, steps: int) -> dict[str, Any]:
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    argv = [a for a in NANOGPT_ARGS if not a.startswith(("--max_iters=", "--lr_decay_iters="))]
    argv += [f"--max_iters={steps}", f"--lr_decay_iters={steps}", f"--out_dir={out_dir}"]
    if steps < 250:  # a short check run: a final eval, and the warmup inside the run (as run_lmstack does)
        argv += [f"--eval_interval={steps}", f"--warmup_iters={steps // 10}"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=path, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"nanoGPT train.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", proc.stdout)
    step, _, val = evals[-1]
    return {"val_loss": float(val), "best_val_loss": min(float(v) for _, _, v in evals), "step": int(step),
            "wall_s": round(wall, 1)}


def run_lmstack(recipe: str, run_dir: str, steps: int, extra: list[str]) -> dict[str, Any]:
    cli = [sys.executable, "-m", "lmstack"]
    timings = {}
    overrides = {"prepare": [], "train": [f"train.max_steps={steps}", *extra]}
    if steps < 250:
        overrides["train"] += [f"train.eval_every={steps}", f"train.log_every={steps}",
                               f"train.warmup_steps={steps // 10}"]
    for verb in ("prepare", "train"):
        start = time.perf_counter()
        proc = subprocess.run([*cli, verb, recipe, *overrides[verb], "--run-dir", run_dir], capture_output=True,
                              text=True)
        timings[verb] = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"lmstack {verb} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    last = [r for r in rows if "val_loss" in r][-1]
    return {"val_loss": last["val_loss"], "best_val_loss": summary.get("val_loss"), "step": last.get("step"),
            "prepare_s": round(timings["prepare"], 1), "train_s": round(timings["train"], 1),
            "wall_s": round(timings["prepare"] + timings["train"], 1)}


def full(args: argparse.Namespace) -> dict[str, Any]:
    work = args.work_dir or tempfile.mkdtemp(prefix="vs_nanogpt_")
    prepare_nanogpt_data(args.nanogpt)
    before = load_avg()
    nano = run_nanogpt(args.nanogpt, os.path.join(work, "nanogpt"), args.threads, args.steps)
    lm = run_lmstack(args.recipe, os.path.join(work, "lmstack"), args.steps, args.override)
    return {
        "mode": "full", "steps": args.steps, "overrides": args.override, "nanogpt": nano, "lmstack": lm,
        "ratio_train_time": round(lm["train_s"] / nano["wall_s"], 3),
        "ratio_time_with_prepare": round(lm["wall_s"] / nano["wall_s"], 3),
        "val_loss_delta": round(lm["val_loss"] - nano["val_loss"], 4),
        "load_avg_before": before, "load_avg_after": load_avg(), "work_dir": work,
    }


# -- model mode --------------------------------------------------------------------------------------
class Arm:
    """One model with its optimizer and lr schedule, stepped on batches it is given."""

    def __init__(self, name: str, model, optimizer, lr_at, forward):
        self.name, self.model, self.optimizer, self.lr_at, self.forward = name, model, optimizer, lr_at, forward
        self.step_no, self.chunk_s, self.total_s, self.last_loss = 0, [], 0.0, math.nan

    def train_chunk(self, batches, clip: float) -> None:
        import torch

        start = time.perf_counter()
        for x, y in batches:
            for g in self.optimizer.param_groups:
                g["lr"] = self.lr_at(self.step_no) * g.get("lr_scale", 1.0)
            loss = self.forward(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step_no += 1
        self.last_loss = loss.item()
        self.total_s += time.perf_counter() - start
        self.chunk_s.append((time.perf_counter() - start) / len(batches))

    def evaluate(self, batches) -> float:
        import torch

        self.model.eval()
        with torch.no_grad():
            losses = [float(self.forward(x, y)) for x, y in batches]
        self.model.train()
        return sum(losses) / len(losses)


def _nanogpt_arm(path: str, vocab: int, steps: int):
    spec = importlib.util.spec_from_file_location("nanogpt_model", os.path.join(path, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.GPTConfig(block_size=64, vocab_size=vocab, n_layer=4, n_head=4, n_embd=128, dropout=0.0,
                           bias=False)  # train.py's defaults with its CPU command line
    model = module.GPT(cfg)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")

    def lr_at(it: int, warmup: int = 100, decay: int = steps, lr: float = 1e-3, min_lr: float = 1e-4) -> float:
        if it < warmup:  # nanoGPT's get_lr
            return lr * (it + 1) / (warmup + 1)
        if it > decay:
            return min_lr
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / (decay - warmup))) * (lr - min_lr)

    return Arm("nanogpt", model, opt, lr_at, lambda x, y: model(x, y)[1])


def _recipe_arm(name: str, recipe_path: str, vocab: int, steps: int, impl: str | None):
    import torch
    import torch.nn.functional as F

    import lmstack.tasks  # noqa: F401 - registers the task sections the recipe may name
    from lmstack.config import load_recipe
    from lmstack.models import build_causal_lm, default_param_groups
    from lmstack.train.schedule import lr_at

    recipe = load_recipe(recipe_path, [f"model.impl={impl}"] if impl else None)
    cfg = recipe.train
    model = build_causal_lm(recipe.model, vocab, recipe.data.block_size, eos_id=0)
    opt = torch.optim.AdamW(default_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))

    def forward(x, y):  # the same 64 targets per row as nanoGPT
        logits = model(input_ids=x).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    arm = Arm(name, model, opt, lambda s: lr_at(s, cfg.lr, cfg.min_lr, cfg.warmup_steps, steps), forward)
    arm.clip = cfg.grad_clip
    return arm


def model_mode(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = prepare_nanogpt_data(args.nanogpt)
    with open(os.path.join(data, "meta.pkl"), "rb") as f:
        import pickle

        vocab = pickle.load(f)["vocab_size"]
    train = np.memmap(os.path.join(data, "train.bin"), dtype=np.uint16, mode="r")
    val = np.memmap(os.path.join(data, "val.bin"), dtype=np.uint16, mode="r")
    block, batch = 64, 12

    def batches(source, n: int, gen: torch.Generator):
        out = []
        for _ in range(n):  # nanoGPT's get_batch: random windows, targets shifted by one
            ix = torch.randint(len(source) - block, (batch,), generator=gen)
            x = torch.stack([torch.from_numpy(source[i:i + block].astype(np.int64)) for i in ix])
            y = torch.stack([torch.from_numpy(source[i + 1:i + 1 + block].astype(np.int64)) for i in ix])
            out.append((x, y))
        return out

    arms = []
    for name in args.arms.split(","):
        torch.manual_seed(1337)  # every arm starts from its own seeded init, as its script would
        if name == "nanogpt":
            arms.append(_nanogpt_arm(args.nanogpt, vocab, args.steps))
        elif name in ("lmstack", "hf"):
            arms.append(_recipe_arm(name, args.recipe, vocab, args.steps, "lmstack" if name == "lmstack" else "hf"))
        elif name == "best":
            arms.append(_recipe_arm(name, args.best_recipe, vocab, args.steps, None))
        else:
            raise SystemExit(f"unknown arm {name!r}")
    gen = torch.Generator().manual_seed(1337)
    before, start = load_avg(), time.perf_counter()
    done = 0
    while done < args.steps:
        chunk = batches(train, min(args.chunk, args.steps - done), gen)  # the same batches for every arm
        order = arms if (done // args.chunk) % 2 == 0 else arms[::-1]  # alternate who goes first
        for arm in order:
            arm.train_chunk(chunk, getattr(arm, "clip", 1.0) or 1e9)
        done += len(chunk)
        print(f"step {done}: " + ", ".join(f"{a.name} {1e3 * a.chunk_s[-1]:.1f} ms/step loss {a.last_loss:.3f}"
                                           for a in arms) + f"; load {load_avg()[0]}", file=sys.stderr, flush=True)
    val_batches = batches(val, args.eval_batches, torch.Generator().manual_seed(2024))
    result: dict[str, Any] = {"mode": "model", "steps": args.steps, "threads": torch.get_num_threads(), "arms": {}}
    for arm in arms:
        result["arms"][arm.name] = {
            "ms_per_step_median": round(1e3 * statistics.median(arm.chunk_s), 2),
            "train_s": round(arm.total_s, 1),
            "val_loss": round(arm.evaluate(val_batches), 4),
            "last_train_loss": round(arm.last_loss, 4),
        }
    if "nanogpt" in result["arms"]:
        base = next(a for a in arms if a.name == "nanogpt")
        for arm in arms:
            if arm is not base:  # paired: the same chunk under the same load
                ratios = [a / b for a, b in zip(arm.chunk_s, base.chunk_s, strict=True)]
                result["arms"][arm.name]["time_ratio_vs_nanogpt"] = round(statistics.median(ratios), 3)
    result.update(load_avg_before=before, load_avg_after=load_avg(), wall_s=round(time.perf_counter() - start, 1))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = skip_reason(args.nanogpt)
    if reason:
        print(json.dumps({"skipped": reason}))
        return 0
    result = full(args) if args.mode == "full" else model_mode(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
