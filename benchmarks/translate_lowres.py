"""Low-resource zh->en on cmn.txt: does back-translation, source noise or a pretrained decoder LM help?

Every variant trains on the same 6,000 parallel pairs (translate.max_train_pairs: whole leak-free groups in
hash order) for the same number of steps and is scored on the same 1,000 held-out test pairs (beam 4). The
other ~20,600 training pairs play the monolingual corpus: their English is back-translated by a reverse
en->zh model trained on the 6,000 pairs; their sentences (both languages, unpaired) with the 6,000 pairs'
are lm_text/, the decoder LM's pretraining text. Variants:

  encdec      Marian 2+2 (the recipe's model), the baseline
  noise       + one noisy copy of every source (delete/swap/mask 0.1 each)
  bt          + back-translated English monolingual (the reverse model's beam-4 output as sources)
  dec         decoder-only GPT-2, 4 layers of the same width (about the same compute per step), from scratch
  dec_lm      the same decoder fine-tuned from an LM pretrained with lmstack on lm_text/

    LMSTACK_DATA=../shared/datasets .venv/bin/python benchmarks/translate_lowres.py [VARIANT ...] [--steps N]

Runs sequentially in one process on one Ray cluster (the 2-core machine cannot run two at once); a variant
whose model exists is only re-scored. Writes runs/mt6k/table.md and runs/mt6k/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from lmstack import runtime
from lmstack.config import Recipe, load_recipe

RECIPE = "jobs/recipes/translate_zh_en.yaml"
OUT = os.path.join("runs", "mt6k")
VARIANTS = ["encdec", "noise", "bt", "dec", "dec_lm"]
DEFAULT_STEPS = 800
DECODER = ["translate.arch=decoder", "model.n_layer=4"]


def tag(name: str, steps: int) -> str:
    """Run (and step-dependent data) directories: the name at the default budget, name_steps otherwise."""
    return name if steps == DEFAULT_STEPS else f"{name}_{steps}"


def recipe(name: str, data: str, steps: int, extra: list[str]) -> Recipe:
    return load_recipe(RECIPE, [
        f"name=mt6k_{name}", f"run_dir={OUT}/{tag(name, steps)}", f"data.output={OUT}/{data}",
        # lm_text for every variant: the tokenizer is trained on the same text, so all variants share it.
        "translate.max_train_pairs=6000", "translate.lm_text=true",
        f"train.max_steps={steps}", f"train.warmup_steps={max(steps // 8, 1)}",
        f"train.eval_every={max(steps // 4, 1)}", *extra,
    ])


def prepared(r: Recipe) -> None:
    from lmstack.tasks import get_spec

    if not runtime.exists(os.path.join(r.data_dir(), "manifest.json")):
        get_spec(r.task).prepare(r)


def trained(r: Recipe) -> dict:
    from lmstack.train.trainer import train

    path = os.path.join(r.resolved_run_dir(), "summary.json")
    if not os.path.exists(os.path.join(r.resolved_run_dir(), "model", "config.json")):
        t0 = time.time()
        prepared(r)
        out = train(r)
        out["wall_s"] = round(time.time() - t0, 1)
        runtime.write_json(path, out)
    return json.load(open(path))


def monolingual_english() -> str:
    """The unused pairs' English, one sentence per line: the back-translation corpus."""
    from lmstack.tasks.translate.data import read_pairs

    path = os.path.join(OUT, "mono_en.txt")
    if not os.path.exists(path):
        pairs, _ = read_pairs(os.path.join(OUT, "data", "train_unused.tsv"))
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(p["en"] + "\n" for p in pairs)
    return path


def pretrained_lm(steps: int) -> dict:
    lm = load_recipe("jobs/recipes/translate_lm.yaml", [
        f"run_dir={OUT}/{tag('lm', steps)}", f"data.paths=[{OUT}/data/lm_text]", f"tokenizer.path={OUT}/data/tokenizer",
        f"train.max_steps={steps}",
    ])
    return trained(lm)


def variant(name: str, steps: int, lm_steps: int, reverse_steps: int) -> tuple[Recipe, dict, dict]:
    """The variant's recipe, its train summary, and the compute it stands on (reverse model, LM)."""
    before: dict = {}
    if name == "encdec":
        r = recipe(name, "data", steps, [])
    elif name == "noise":
        r = recipe(name, "data_noise", steps, ["translate.augment.noise_copies=1"])
    elif name == "bt":
        reverse = trained(recipe("reverse", "data_enzh", reverse_steps, ["translate.directions=[en-zh]"]))
        before = {"reverse_train_wall_s": reverse.get("wall_s"), "reverse_val_loss": reverse.get("val_loss")}
        monolingual = [f"translate.augment.monolingual={monolingual_english()}", "translate.augment.monolingual_lang=en",
                       f"translate.augment.reverse_model={reverse['model_dir']}"]
        # The back-translated data depends on the reverse model only.
        r = recipe(name if reverse_steps == steps else f"{name}_rev{reverse_steps}", tag("data_bt", reverse_steps),
                   steps, monolingual)
    elif name == "dec":
        r = recipe(name, "data", steps, DECODER)
    else:
        lm = pretrained_lm(lm_steps)
        before = {"lm_steps": lm_steps, "lm_train_wall_s": lm.get("wall_s"), "lm_val_loss": lm.get("val_loss")}
        # dec_lm[_steps] at the default LM budget, dec_lm[_steps]_lm<N> otherwise
        r = recipe(name if lm_steps == steps else f"{name}_lm{lm_steps}", "data", steps,
                   [*DECODER, f"model.path={lm['model_dir']}"])
    return r, trained(r), before


def hypotheses(key: str, model_dir: str, sources: list[str]) -> list[str]:
    """The model's beam-4 test translations, decoded once and kept beside the run."""
    from lmstack.tasks.translate.spec import predict

    path = os.path.join(OUT, key, "test_hyps.txt")
    if not os.path.exists(path):
        hyps = [r["translation"].replace("\n", " ") for r in predict(model_dir, sources, direction="zh-en")]
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(h + "\n" for h in hyps)
    return open(path, encoding="utf-8").read().splitlines()


def significance(results: dict, baseline: str) -> dict[str, dict]:
    """Paired bootstrap resampling (sacrebleu, 1,000 samples) of every run against `baseline`: p-values and
    95% confidence half-widths; p < 0.05 is the usual bar for "better" on one test set."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    from lmstack.tasks.translate.data import read_pairs

    pairs, _ = read_pairs(os.path.join(OUT, "data", "test.tsv"))
    sources, refs = [p["zh"] for p in pairs], [p["en"] for p in pairs]
    named = [(k, hypotheses(k, results[k].get("model_dir") or os.path.join(OUT, k, "model"), sources))
             for k in [baseline, *sorted(set(results) - {baseline})]]
    _, scores = PairedTest(named, {"BLEU": BLEU(), "chrF": CHRF()}, [refs], test_type="bs", n_samples=1000)()
    out = {}
    for i, name in enumerate(scores["System"]):
        b, c = scores["BLEU"][i], scores["chrF2"][i]
        out[name] = {"bleu_ci": round(float(b.ci), 2), "bleu_p": b.p_value, "chrf_p": c.p_value}
    return out


def main() -> None:
    from lmstack.tasks.translate.serving import load
    from lmstack.tasks.translate.spec import evaluate_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", help=f"a subset of {VARIANTS} (default: all)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                    help=f"training steps of every model (default {DEFAULT_STEPS}; LM pretraining included)")
    ap.add_argument("--lm-steps", type=int, help="LM pretraining steps for dec_lm (default: --steps)")
    ap.add_argument("--reverse-steps", type=int, help="steps of bt's reverse model (default: --steps)")
    ap.add_argument("--report", action="store_true", help="train nothing: tabulate results.json with significance")
    args = ap.parse_args()
    if unknown := set(args.variants) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(unknown)}; known: {VARIANTS}")
    runtime.connect()
    prepared(recipe("encdec", "data", DEFAULT_STEPS, []))  # the shared split, tokenizer and lm_text
    results_path = os.path.join(OUT, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for name in [] if args.report else args.variants or VARIANTS:
        r, summary, before = variant(name, args.steps, args.lm_steps or args.steps, args.reverse_steps or args.steps)
        scores = evaluate_file(summary["model_dir"], os.path.join(OUT, "data", "test.tsv"), direction="zh-en")
        params = sum(p.numel() for p in load(summary["model_dir"])[0].parameters())
        manifest = runtime.read_json(os.path.join(r.data_dir(), "manifest.json"))
        key = os.path.basename(r.resolved_run_dir())
        results[key] = {"bleu": scores["bleu"], "chrf": scores["chrf"], "val_loss": summary.get("val_loss"),
                         "params": params, "train_rows": manifest["examples"]["train"],
                         "augmented": manifest.get("augmented"), "train_wall_s": summary.get("wall_s"),
                         "decode_s": scores["seconds"], "steps": args.steps, "model_dir": summary["model_dir"],
                         **before}
        print(json.dumps({key: results[key]}), flush=True)
        runtime.write_json(results_path, results)
    sig = significance(results, "encdec") if "encdec" in results else {}
    lines = ["| variant | steps | train rows | BLEU (± 95% CI) | p vs encdec | chrF | p vs encdec | val loss | params | "
             "train wall (s) | + reverse model / LM wall (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        extra = r.get("reverse_train_wall_s") or r.get("lm_train_wall_s") or 0
        g = sig.get(name, {})
        p_bleu = "" if g.get("bleu_p") is None else f"{g['bleu_p']:.3f}"
        p_chrf = "" if g.get("chrf_p") is None else f"{g['chrf_p']:.3f}"
        lines.append(f"| {name} | {r.get('steps', DEFAULT_STEPS)} | {r['train_rows']:,} | {r['bleu']:.2f} "
                     f"(± {g.get('bleu_ci', float('nan')):.2f}) | {p_bleu} | {r['chrf']:.2f} | {p_chrf} | "
                     f"{(r['val_loss'] or float('nan')):.3f} | {r['params'] or 0:,} | {r['train_wall_s'] or 0:.0f} | "
                     f"{extra:.0f} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(OUT, "table.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
