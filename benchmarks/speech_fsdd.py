"""Spoken digits on FSDD with a speaker the model never hears: the transformer CTC model against the
BiLSTM CTC baseline (jobs/recipes/speech_fsdd.yaml, speech_fsdd_lstm.yaml), from one run.

Per model: prepare (Ray Data), train in process on the prepared Parquet with the speech task's own
loss / eval_counts / metrics / export (the same calls `lmstack train` makes; the loop is a plain one so
the figure does not depend on the trainer's Ray overhead), pick the best step by validation WER
(speaker `nicolas`), export, then score the held-out test speaker (`theo`) with `evaluate_file`
(what `lmstack evaluate --model DIR --data WAV_DIR` prints): greedy, beam, beam + character LM.
Prints one JSON table: accuracy, WER, CER, parameters, train time, decode latency.

    nice -n 10 .venv/bin/python benchmarks/speech_fsdd.py [--archs transformer,lstm]
        [--variants aug,noaug,synth] [--steps 1500] [--threads 2] [--out runs/bench_speech_fsdd]

Variants: aug (the recipes as written: speed/noise copies + SpecAugment), noaug (no augmentation),
synth (aug + espeak-ng synthetic speakers of the ten digits as extra training speakers); --speeds
replaces the speed-perturbation factors of aug and synth.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"transformer": ROOT / "jobs/recipes/speech_fsdd.yaml", "lstm": ROOT / "jobs/recipes/speech_fsdd_lstm.yaml"}
SYNTH_VOICES = ["en-us", "en", "en-us+f3", "en+m3", "en-gb-scotland", "en-029", "en+f4", "en-us+m5"]


def lr_at(step: int, lr: float, min_lr: float, warmup: int, total: int) -> float:
    import math

    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def load_split(data_dir: str, split: str) -> dict[str, torch.Tensor]:
    import ray.data

    ds = ray.data.read_parquet(os.path.join(data_dir, split), columns=["features", "n_frames", "labels", "label_len"])
    batch = ds.take_batch(ds.count(), batch_format="numpy")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def batches(data: dict[str, torch.Tensor], size: int, perm: torch.Tensor | None = None):
    n = len(data["n_frames"])
    order = perm if perm is not None else torch.arange(n)
    for start in range(0, n, size):
        idx = order[start:start + size]
        yield {k: v[idx] for k, v in data.items()}


def evaluate(spec, model, info, val) -> dict[str, float]:
    model.eval()
    loss_sum, count, counts = 0.0, 0, None
    with torch.no_grad():
        for b in batches(val, 64):
            loss, n = spec.loss(model, b)
            loss_sum += float(loss) * n
            count += n
            c = spec.eval_counts(model, b)
            counts = c if counts is None else counts + c
    model.train()
    return spec.metrics(loss_sum, count, info, counts=counts)


def train(spec, recipe, info, train_data, val, log) -> tuple[torch.nn.Module, list[dict], float, dict]:
    cfg = recipe.train
    torch.manual_seed(cfg.seed)
    model = spec.build_model(recipe, info)
    groups = spec.param_groups(model, recipe)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    metric, mode = spec.select_metric
    best, best_state, history = None, None, []
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    step, epoch = 0, 0
    model.train()
    while step < cfg.max_steps:
        perm = torch.randperm(len(train_data["n_frames"]), generator=gen)
        for b in batches(train_data, cfg.batch_size, perm):
            if len(b["n_frames"]) < cfg.batch_size:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
            loss, _ = spec.loss(model, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or 1e9)
            opt.step()
            step += 1
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                m = evaluate(spec, model, info, val)
                row = {"step": step, "epoch": epoch, "train_loss": round(loss.item(), 4),
                       **{k: round(v, 4) for k, v in m.items()}, "elapsed_s": round(time.perf_counter() - started, 1)}
                history.append(row)
                log(json.dumps(row))
                value = m[metric] + 1e-6 * m["val_loss"]  # ties on WER go to the lower loss
                if best is None or (value < best if mode == "min" else value > best):
                    best, best_state = value, copy.deepcopy(model.state_dict())
            if step >= cfg.max_steps:
                break
        epoch += 1
    train_s = time.perf_counter() - started
    model.load_state_dict(best_state)
    best_row = min(history, key=lambda r: r[metric] + 1e-6 * r["val_loss"])
    return model.eval(), history, train_s, best_row


def latency(model_dir: str, wav_dir: str, n: int = 60) -> dict[str, float]:
    """Median / p90 milliseconds to transcribe one utterance (read + features + forward + decode)."""
    from lmstack.tasks.speech.predict import load

    sm = load(model_dir)
    files = sorted(os.listdir(wav_dir))[:n]
    out = {}
    for name, opts in (("greedy", {"method": "greedy"}), ("beam8", {"method": "beam", "beam_width": 8})):
        times = []
        for f in files:
            t = time.perf_counter()
            sm.transcribe([sm.read(os.path.join(wav_dir, f))], **opts)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[f"latency_ms_{name}_p50"] = round(statistics.median(times), 2)
        out[f"latency_ms_{name}_p90"] = round(times[int(0.9 * (len(times) - 1))], 2)
    return out


def speaker_dir(recordings: str, speaker: str, tmp: str) -> str:
    d = os.path.join(tmp, speaker)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(recordings):
        if f.split("_")[1:2] == [speaker] and not os.path.exists(os.path.join(d, f)):
            os.symlink(os.path.join(recordings, f), os.path.join(d, f))
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="transformer,lstm")
    ap.add_argument("--variants", default="aug", help="comma list of aug, noaug, synth")
    ap.add_argument("--steps", type=int, default=None, help="override train.max_steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--speeds", help="override speech.augment.speeds, e.g. 0.8,0.9,1.1,1.2 (not for noaug)")
    ap.add_argument("--out", default=str(ROOT / "runs/bench_speech_fsdd"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("LMSTACK_DATA", str(ROOT.parent / "shared/datasets"))
    os.environ.setdefault("LMSTACK_PROGRESS", "0")

    import ray

    from lmstack import runtime
    from lmstack.config import load_recipe
    from lmstack.tasks import get_spec
    from lmstack.tasks.speech.model import count_parameters
    from lmstack.tasks.speech.predict import evaluate_file

    spec = get_spec("speech")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    recordings = os.path.join(os.environ["LMSTACK_DATA"], "fsdd/recordings")
    tmp = tempfile.mkdtemp(prefix="speech_bench_")
    results = []
    for variant in args.variants.split(","):
        for arch in args.archs.split(","):
            tag = f"{variant}-speeds{args.speeds.replace(',', '_')}" if args.speeds and variant != "noaug" else variant
            overrides = [f"run_dir={args.out}/{tag}-{arch}", f"data.output={args.out}/data-{tag}"]
            if args.speeds and variant != "noaug":
                overrides.append(f"speech.augment.speeds=[{args.speeds}]")
            if args.steps:
                overrides.append(f"train.max_steps={args.steps}")
            if variant == "noaug":
                overrides += ["speech.augment.speeds=[]", "speech.augment.noise_copies=0",
                              "speech.augment.time_masks=0", "speech.augment.freq_masks=0"]
            if variant == "synth":
                synth_out = os.path.join(args.out, "synth_digits")
                if not os.path.exists(os.path.join(synth_out, "manifest.jsonl")):
                    from lmstack.tasks.speech.config import DIGIT_WORDS
                    from lmstack.tasks.speech.synth import synth_speech

                    text = os.path.join(tmp, "digits.txt")
                    Path(text).write_text("\n".join(DIGIT_WORDS) + "\n")
                    log(json.dumps(synth_speech(text, synth_out, SYNTH_VOICES, [130, 165, 200], [30, 50, 70])))
                overrides.append(f"speech.train_only_paths=[{synth_out}]")
            recipe = load_recipe(RECIPES[arch], overrides)
            manifest_path = os.path.join(recipe.data_dir(), "manifest.json")
            prepared = os.path.exists(manifest_path) and runtime.read_json(manifest_path).get(
                "prepare_hash") == spec.prepare_hash(recipe)
            runtime.connect(num_cpus=2)
            t = time.perf_counter()
            info = runtime.read_json(manifest_path) if prepared else spec.prepare(recipe, log=log)
            prepare_s = time.perf_counter() - t
            train_data, val = load_split(recipe.data_dir(), "train"), load_split(recipe.data_dir(), "val")
            ray.shutdown()  # the rest runs in this process: free the cluster's memory and CPUs
            log(f"== {variant} {arch}: train {len(train_data['n_frames'])} rows, val {len(val['n_frames'])}")
            model, history, train_s, best = train(spec, recipe, info, train_data, val, log)
            model_dir = os.path.join(recipe.resolved_run_dir(), "model")
            os.makedirs(model_dir, exist_ok=True)
            spec.export(model, model_dir)
            spec.export_assets(info, model_dir)
            runtime.write_json(os.path.join(model_dir, "lmstack_model.json"),
                               {"task": "speech", "recipe": recipe.model_dump(mode="json"), "metrics": best,
                                "steps": recipe.train.max_steps})
            test_dir = speaker_dir(recordings, recipe.speech.test_speakers[0], tmp)
            row = {"variant": tag, "arch": arch, "params": count_parameters(model),
                   "train_rows": len(train_data["n_frames"]), "steps": recipe.train.max_steps,
                   "best_step": best["step"], "val_wer": best["val_wer"], "val_accuracy": best["val_accuracy"],
                   "prepare_s": round(prepare_s, 1), "train_s": round(train_s, 1)}
            for name, opts in (("greedy", {}), ("beam", {"ctc_decode": "beam", "beam_width": 8}),
                               ("beam_lm", {"ctc_decode": "beam", "beam_width": 8, "lm_weight": args.lm_weight})):
                r = evaluate_file(model_dir, test_dir, **opts)
                row.update({f"test_{name}_accuracy": round(r["accuracy"], 4), f"test_{name}_wer": round(r["wer"], 4),
                            f"test_{name}_cer": round(r["cer"], 4)})
                row["test_files"] = r["files"]
            row.update(latency(model_dir, test_dir))
            log(json.dumps(row))
            results.append(row)
    print(json.dumps({"benchmark": "speech_fsdd", "threads": args.threads, "test_speaker": "theo",
                      "val_speaker": "nicolas", "results": results}, indent=1))


if __name__ == "__main__":
    main()
