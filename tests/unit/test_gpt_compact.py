"""lmstack's compact decoder against transformers' own GPT-2 / Llama on the same weights, and its FLOPs count."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmstack.config import ModelConfig
from lmstack.models import flops
from lmstack.models.factory import build_causal_lm, causal_lm_config
from lmstack.models.gpt import CompactCausalLM, UnsupportedConfig, decoder_layers

VOCAB, CONTEXT = 53, 24
SHAPES = {
    "gpt2_tied": dict(family="gpt2"),
    "gpt2_untied": dict(family="gpt2", tie_embeddings=False),
    "llama_gqa_tied": dict(family="llama", n_kv_head=2, rope_theta=500.0),
    "llama_untied": dict(family="llama", tie_embeddings=False, intermediate_size=80),
}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny shapes: one thread is fastest and does not fight the other jobs on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _compact(**shape) -> CompactCausalLM:
    shape = {"n_layer": 2, **shape}
    cfg = ModelConfig(impl="lmstack", n_head=4, n_embd=32, **shape)
    return build_causal_lm(cfg, VOCAB, CONTEXT, eos_id=0)


@pytest.fixture(params=sorted(SHAPES))
def exported(request, tmp_path):
    torch.manual_seed(0)
    model = _compact(**SHAPES[request.param]).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mix-up of any parameter shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), local_files_only=True).eval()
    return request.param, model, hf, tmp_path


def test_export_is_a_plain_transformers_model_with_equal_logits_and_loss(exported):
    name, model, hf, path = exported
    want = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[SHAPES[name]["family"]]
    assert type(hf).__name__ == want
    assert json.loads((path / "config.json").read_text())["architectures"] == [want]
    assert hf.config.tie_word_embeddings == SHAPES[name].get("tie_embeddings", True)
    if name == "llama_gqa_tied":
        assert hf.config.num_key_value_heads == 2 and hf.config.rope_parameters["rope_theta"] == 500.0
    ids = torch.randint(0, VOCAB, (3, CONTEXT), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(input_ids=ids, labels=ids), hf(input_ids=ids, labels=ids)
    assert ours.logits.shape == (3, CONTEXT, VOCAB)
    assert ours.logits.std() > 0.05  # not a degenerate comparison
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-5, atol=1e-6)
    # The loss is next-token cross-entropy computed directly from the logits.
    direct = torch.nn.functional.cross_entropy(theirs.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(ours.loss, direct, rtol=1e-5, atol=1e-6)


def test_left_padding_mask_matches_transformers(exported):
    _, model, hf, _ = exported
    ids = torch.randint(1, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    # Position 4 (padding) would predict token 5: padding positions see only themselves here, garbage in both.
    labels = ids.masked_fill(mask == 0, -100)
    labels[0, 5] = -100
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, labels=labels)
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)
    keep = mask.bool()
    torch.testing.assert_close(ours.logits[keep], theirs.logits[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-5, atol=1e-6)


def test_round_trip_through_the_directory_and_the_factory(exported):
    name, model, _, path = exported
    again = build_causal_lm(ModelConfig(impl="lmstack", path=str(path)), VOCAB, CONTEXT, eos_id=0)
    assert isinstance(again, CompactCausalLM)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
    tied = SHAPES[name].get("tie_embeddings", True)
    assert (again.lm_head.weight is again.get_input_embeddings().weight) == tied
    bigger = build_causal_lm(ModelConfig(impl="lmstack", path=str(path)), VOCAB + 3, CONTEXT, eos_id=0)
    assert bigger.get_input_embeddings().num_embeddings == VOCAB + 3 == bigger.config.vocab_size
    assert bigger(input_ids=torch.tensor([[VOCAB + 2]])).logits.shape[-1] == VOCAB + 3


def test_a_few_optimizer_steps_reduce_the_loss_with_dropout_and_checkpointing():
    torch.manual_seed(0)
    for shape in (dict(family="gpt2", dropout=0.1), dict(family="llama", n_kv_head=2, dropout=0.1)):
        model = _compact(**shape).train()
        model.gradient_checkpointing_enable()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        ids = torch.randint(0, VOCAB, (8, 16), generator=torch.Generator().manual_seed(3))
        losses = []
        for _ in range(15):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        assert losses[-1] < losses[0] - 0.5, (shape, losses)


def test_unsupported_config_is_refused_with_the_field():
    cfg = causal_lm_config(ModelConfig(family="llama", n_embd=32, n_head=4), VOCAB, CONTEXT, 0)
    cfg.rope_parameters = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(UnsupportedConfig, match="rope_parameters"):
        CompactCausalLM(cfg)


def test_hf_impl_is_unchanged_by_default():
    model = build_causal_lm(ModelConfig(n_layer=1, n_head=2, n_embd=16), VOCAB, CONTEXT, eos_id=0)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert len(decoder_layers(model)) == 1
    assert len(decoder_layers(_compact(family="llama"))) == 2


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
def test_torch_compile_captures_one_graph_on_cpu_and_matches_eager():
    """fullgraph=True fails on any graph break, which is what "compile-friendly" means. The backend is
    aot_eager (Dynamo capture + AOTAutograd, no C++ build) to stay within seconds on a shared CPU;
    LMSTACK_TEST_INDUCTOR=1 uses inductor, as train.compile does (timed in benchmarks/gpu_mfu.py --smoke)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    backend = "inductor" if os.environ.get("LMSTACK_TEST_INDUCTOR") == "1" else "aot_eager"
    for shape in (dict(family="llama", n_kv_head=2), dict(family="gpt2", dropout=0.1)):
        model = _compact(n_layer=1, **shape)  # one block: compilation time grows with depth
        ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(4))
        model.eval()
        eager = model(input_ids=ids, labels=ids).loss
        compiled = torch.compile(model, backend=backend, fullgraph=True)
        torch.testing.assert_close(compiled(input_ids=ids, labels=ids).loss, eager, rtol=1e-4, atol=1e-5)
        model.train()
        loss = compiled(input_ids=ids, labels=ids).loss
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_flops_per_token_against_a_hand_count():
    # GPT-2 shape, tied: per block 4C^2+4C (qkv, proj) + 8C^2+5C (mlp) + 4C (two LayerNorms); ln_f 2C;
    # the tied head V*C counts once; positions are a lookup and do not count.
    c, layers, heads, vocab, t = 32, 2, 4, VOCAB, CONTEXT
    model = _compact(family="gpt2")
    n = layers * (12 * c * c + 13 * c) + 2 * c + vocab * c
    assert flops.matmul_params(model) == n
    attention = 12 * layers * heads * (c // heads) * t
    assert flops.model_flops_per_token(model, t) == 6 * n + attention
    # Untied: the input embedding becomes a lookup; the head is its own matmul of the same size.
    assert flops.matmul_params(_compact(family="gpt2", tie_embeddings=False)) == n
    # The same count for transformers' module of the same shape.
    hf = AutoModelForCausalLM.from_config(causal_lm_config(ModelConfig(n_layer=2, n_head=4, n_embd=32), vocab, t, 0))
    assert flops.model_flops_per_token(hf, t) == 6 * n + attention


def test_peak_and_mfu(monkeypatch):
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    assert flops.peak_flops("cpu") is None
    assert flops.mfu(1000.0, 10**9, None) is None
    assert flops.mfu(1000.0, 10**9, 1e13) == pytest.approx(0.1)
    assert flops.mfu(1000.0, 10**9, 1e12, n_devices=2) == pytest.approx(0.5)
    monkeypatch.setenv(flops.PEAK_ENV, "2e12")
    assert flops.peak_flops("cpu") == 2e12
    assert dict(flops.PEAK_BF16)["H100"] == 989e12 and dict(flops.PEAK_BF16)["A100"] == 312e12


def _benchmark(name: str):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_mfu_arguments_refusal_and_cpu_smoke(capsys):
    bench = _benchmark("gpu_mfu")
    args = bench.parse_args([])
    assert (args.strategies, args.compiles, args.batch, args.shape["n_embd"]) == (["ddp", "fsdp"], [False, True], 16,
                                                                                  768)
    args = bench.parse_args(["--strategy", "fsdp", "--compile", "on", "--batch", "4"])
    assert (args.strategies, args.compiles, args.batch) == (["fsdp"], [True], 4)
    with pytest.raises(SystemExit):
        bench.parse_args(["--strategy", "zero3"])
    assert "CUDA" in bench.refusal(bench.parse_args([]), cuda_available=False)
    assert bench.refusal(bench.parse_args(["--smoke"]), cuda_available=False) is None
    if not torch.cuda.is_available():
        assert bench.main([]) == 2
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["refused"]
    assert bench.main(["--smoke", "--strategy", "ddp", "--compile", "off"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    model = _benchmark("gpu_mfu").build(bench.parse_args(["--smoke"]), torch.device("cpu"))
    assert row["flops_per_token"] == flops.model_flops_per_token(model, bench.SMOKE["seq"])
    assert row["tokens_per_s"] > 0 and math.isfinite(row["loss"]) and row["mfu"] is None  # no CPU peak


def test_vs_nanogpt_skips_without_a_checkout(tmp_path, capsys):
    bench = _benchmark("vs_nanogpt")
    assert bench.main([]) == 0
    assert "never downloaded" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"]
    assert bench.main(["--nanogpt", str(tmp_path)]) == 0
    assert "lacks train.py" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"]
    assert bench.parse_args(["--nanogpt", "x", "--mode", "model"]).arms == "nanogpt,lmstack"
