"""Tokens/s, MFU and peak memory of a GPT-2 124M-shaped training step on one CUDA device (or several
under torchrun): bf16 autocast, fused AdamW, synthetic tokens, ddp or FSDP2, torch.compile on or off.

    python benchmarks/gpu_mfu.py                         # ddp+fsdp x compile off+on, lmstack's compact module
    python benchmarks/gpu_mfu.py --impl hf --compile off # transformers' GPT2LMHeadModel for comparison
    torchrun --nproc_per_node=8 benchmarks/gpu_mfu.py    # several GPUs: tokens/s and MFU over all of them
    python benchmarks/gpu_mfu.py --smoke                 # a tiny CPU run of the same code paths (tests)

It refuses to run on a machine without CUDA unless --smoke is given. MFU uses lmstack.models.flops:
6N + 12*L*H*Q*T FLOPs per token (PaLM appendix B, nanoGPT) over the device's dense bf16 peak (H100 SXM:
989 TFLOP/s). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, vocab=50304, seq=1024)  # vocab padded to a multiple of 64
SMOKE = dict(n_layer=2, n_head=2, n_embd=32, vocab=256, seq=32)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategy", choices=["ddp", "fsdp", "both"], default="both")
    p.add_argument("--compile", choices=["on", "off", "both"], default="both")
    p.add_argument("--impl", choices=["lmstack", "hf"], default="lmstack")
    p.add_argument("--batch", type=int, default=None, help="sequences per device per step (default 16; smoke 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30; smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first, compilation included "
                                                             "(default 10; smoke 1)")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny shape on CPU: exercises the code, measures nothing")
    args = p.parse_args(argv)
    defaults = dict(batch=2, steps=2, warmup=1) if args.smoke else dict(batch=16, steps=30, warmup=10)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.batch, args.steps) < 1 or args.warmup < 0:
        p.error("--batch and --steps must be >= 1, --warmup >= 0")
    args.shape = SMOKE if args.smoke else GPT2_SMALL
    args.strategies = ["ddp", "fsdp"] if args.strategy == "both" else [args.strategy]
    args.compiles = [False, True] if args.compile == "both" else [args.compile == "on"]
    return args


def refusal(args: argparse.Namespace, cuda_available: bool) -> str | None:
    if args.smoke or cuda_available:
        return None
    return ("gpu_mfu.py measures a CUDA device and none is available here; run it on a GPU machine "
            "(or pass --smoke for a tiny CPU run of the same code paths)")


def _process_group(device) -> tuple[int, int]:
    """(rank, world): torchrun's when launched by it, else a one-process group (FSDP2 needs a mesh)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        if "MASTER_PORT" not in os.environ:  # not under torchrun: any free local port
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return dist.get_rank(), dist.get_world_size()


def build(args: argparse.Namespace, device):
    from lmstack.config import ModelConfig
    from lmstack.models import build_causal_lm

    s = args.shape
    cfg = ModelConfig(family="gpt2", impl=args.impl, n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"])
    model = build_causal_lm(cfg, s["vocab"], s["seq"], eos_id=0).to(device)
    if args.activation_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def run_one(args: argparse.Namespace, strategy: str, compiled: bool, device) -> dict[str, Any]:
    import torch

    from lmstack.models import flops
    from lmstack.models.gpt import decoder_layers

    torch.manual_seed(0)
    rank, world = _process_group(device)
    model = build(args, device)
    flops_per_token = flops.model_flops_per_token(model, args.shape["seq"])
    n_params = sum(p.numel() for p in model.parameters())
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16 compute and gradient reduction, fp32 master weights (as autocast does for ddp).
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if device.type == "cuda" else MixedPrecisionPolicy()
        for block in decoder_layers(model):
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    elif world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                          else None)
    step_model = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda")
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and strategy == "ddp"
                else contextlib.nullcontext())
    gen = torch.Generator(device=device).manual_seed(rank)
    batch = torch.randint(0, args.shape["vocab"], (args.batch, args.shape["seq"]), device=device, generator=gen)

    def step() -> float:
        with autocast:
            loss = step_model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - start
    tokens_per_s = args.batch * args.shape["seq"] * args.steps * world / elapsed
    peak = flops.peak_flops(device)
    util = flops.mfu(tokens_per_s, flops_per_token, peak, n_devices=world)
    return {
        "strategy": strategy, "compile": compiled, "impl": args.impl, "world": world,
        "activation_checkpointing": args.activation_checkpointing, "params": n_params,
        "batch_per_device": args.batch, "seq": args.shape["seq"], "tokens_per_s": round(tokens_per_s, 1),
        "ms_per_step": round(1e3 * elapsed / args.steps, 2), "warmup_s": round(warm_s, 1),
        "flops_per_token": flops_per_token, "peak_flops": peak, "mfu": None if util is None else round(util, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "loss": round(loss.item(), 4),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    reason = refusal(args, torch.cuda.is_available())
    if reason:
        print(reason, file=sys.stderr)
        print(json.dumps({"refused": reason}))
        return 2
    if torch.cuda.is_available() and not args.smoke:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    results = []
    for strategy in args.strategies:
        for compiled in args.compiles:
            row = run_one(args, strategy, compiled, device)
            results.append(row)
            if int(os.environ.get("RANK", 0)) == 0:
                print(f"{strategy:4} compile={'on ' if compiled else 'off'} {row['tokens_per_s']:>12,.0f} tok/s "
                      f"mfu={row['mfu']} peak_mem={row['peak_mem_gib']} GiB ({row['ms_per_step']} ms/step)",
                      file=sys.stderr, flush=True)
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({"results": results, "smoke": args.smoke}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
