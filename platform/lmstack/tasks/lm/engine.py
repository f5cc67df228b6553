"""Batched sampling for causal language models, with per-row temperature, top-p, stop and length.

Plain torch with the model's KV cache: one forward over the left-padded prompts, then one token per
step for every row still running. Independent of Ray so the benchmark's plain FastAPI app and the
Serve deployment do exactly the same work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from lmstack.artifacts import MODEL_MANIFEST
from lmstack.models.loading import load_pretrained, require_safetensors


@dataclass
class GenRequest:
    prompt: str
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class GenResult:
    text: str
    finish_reason: str  # "stop" (EOS or a stop sequence) | "length"
    prompt_tokens: int
    completion_tokens: int


def load_model(model_dir: str, device: str = "cpu") -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Weights only from safetensors: a directory with only pickled weights is refused, because
    unpickling a file from a model directory runs whatever code it carries."""
    require_safetensors(model_dir)  # before the tokenizer: the refusal names the weights
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = load_pretrained(AutoModelForCausalLM, model_dir)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok


def context_size(model: torch.nn.Module) -> int:
    cfg = model.config
    return int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024)


class Engine:
    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        self.model_dir = model_dir
        self.device = device
        self.model, self.tok = load_model(model_dir, device)
        self.context = context_size(self.model)
        self.eos = self.tok.eos_token_id
        self.has_manifest = os.path.exists(os.path.join(model_dir, MODEL_MANIFEST))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # Pretrained-only models have no chat template: a plain transcript the model continues.
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def problem(self, prompt: str, max_tokens: int) -> str | None:
        """Why a request cannot be served whole (OpenAI answers 400 rather than cutting the prompt)."""
        n = len(self.tok(prompt, add_special_tokens=False)["input_ids"])
        if n + max_tokens > self.context:
            return (f"this model's maximum context length is {self.context} tokens; the request holds {n + max_tokens} "
                    f"({n} in the prompt, {max_tokens} for the completion): shorten the prompt or lower max_tokens")
        return None

    def _encode(self, prompt: str, max_tokens: int) -> tuple[list[int], int]:
        """Prompt ids cut from the left so prompt + completion fit the context; the budget left."""
        max_tokens = max(1, min(max_tokens, self.context - 1))
        ids = self.tok(prompt, add_special_tokens=False)["input_ids"] or [self.eos]
        return ids[-(self.context - max_tokens):], max_tokens

    @torch.no_grad()
    def generate(self, reqs: list[GenRequest]) -> list[GenResult]:
        results: list[GenResult | None] = [None] * len(reqs)
        for step in self._steps(reqs):
            for i, res in step.items():
                results[i] = res
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def stream(self, req: GenRequest) -> Iterator[tuple[str, GenResult | None]]:
        """(text delta, final result or None) per step. Text that could be the start of a stop
        sequence is held back until it is known not to be one."""
        hold = max((len(s) for s in req.stop), default=1) - 1
        sent = 0
        for step in self._steps([req], partial=True):
            res = step[0]
            if res.finish_reason == "":
                safe = max(sent, len(res.text) - hold)
                if safe > sent:
                    yield res.text[sent:safe], None
                    sent = safe
                continue
            yield res.text[sent:], res
            return

    def _steps(self, reqs: list[GenRequest], partial: bool = False) -> Iterator[dict[int, GenResult]]:
        encoded = [self._encode(r.prompt, r.max_tokens) for r in reqs]
        budgets = [b for _, b in encoded]
        lens = [len(ids) for ids, _ in encoded]
        width = max(lens)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - n) + e for (e, _), n in zip(encoded, lens, strict=True)])
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in lens])
        temps = torch.tensor([r.temperature for r in reqs]).unsqueeze(1)
        top_ps = torch.tensor([r.top_p for r in reqs]).unsqueeze(1)
        gens = [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in reqs]
        out: list[list[int]] = [[] for _ in reqs]
        running = list(range(len(reqs)))
        past, cache_arg = None, "cache"
        inputs = ids.to(self.device)
        attn = mask.to(self.device)
        for step in range(max(budgets)):
            pos = (attn.cumsum(-1) - 1).clamp(min=0, max=self.context - 1)
            if past is not None:
                pos = pos[:, -1:]
            kwargs = {cache_arg: past} if past is not None else {}
            logits = self.model(input_ids=inputs, attention_mask=attn, position_ids=pos, use_cache=True, **kwargs)
            # transformers 5 names the KV cache `cache`; older releases `past_key_values`.
            cache_arg = "cache" if "cache" in logits else "past_key_values"
            past = logits[cache_arg]
            nxt = self._pick(logits.logits[:, -1, :].float().cpu(), temps, top_ps, gens)
            finished: dict[int, GenResult] = {}
            for i in running:
                token = int(nxt[i])
                if token != self.eos:
                    out[i].append(token)
                text = self.tok.decode(out[i], skip_special_tokens=True)
                cut = _first_stop(text, reqs[i].stop)
                if token == self.eos or cut is not None:
                    finished[i] = GenResult(text[:cut] if cut is not None else text, "stop", lens[i], len(out[i]))
                elif len(out[i]) >= budgets[i] or step == max(budgets) - 1:
                    finished[i] = GenResult(text, "length", lens[i], len(out[i]))
                elif partial:
                    finished[i] = GenResult(text, "", lens[i], len(out[i]))
            done = {i: r for i, r in finished.items() if r.finish_reason}
            running = [i for i in running if i not in done]
            if finished:
                yield finished
            if not running:
                return
            # Finished rows keep decoding padding (cheaper than reshaping the cache); their output is ignored.
            inputs = nxt.unsqueeze(1).to(self.device)
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)

    @staticmethod
    def _pick(logits: torch.Tensor, temps: torch.Tensor, top_ps: torch.Tensor,
              gens: list[torch.Generator | None]) -> torch.Tensor:
        greedy = logits.argmax(-1)
        scaled = logits / temps.clamp(min=1e-5)
        probs = torch.softmax(scaled, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Nucleus: keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_ps
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        picks = []
        for row in range(logits.shape[0]):
            if float(temps[row]) == 0.0:
                picks.append(greedy[row])
                continue
            j = torch.multinomial(sorted_p[row], 1, generator=gens[row])
            picks.append(order[row, j[0]])
        return torch.stack(picks)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None
