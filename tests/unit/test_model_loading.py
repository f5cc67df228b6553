"""Every model directory a recipe names loads its weights from safetensors only; a pickle checkpoint
(pytorch_model.bin: loading it can run code) is refused in one line, by every route."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, MarianConfig, MarianMTModel

from lmstack.config import ModelConfig
from lmstack.models.factory import build_causal_lm
from lmstack.models.loading import UnsafeModelError


def _pickled(model, path):
    path.mkdir()
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    return str(path)


@pytest.fixture(scope="module")
def gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=40, n_positions=32))


@pytest.mark.parametrize("impl", ["hf", "lmstack"])
def test_model_path_refuses_a_pickle_checkpoint(tmp_path, gpt2, impl):
    path = _pickled(gpt2, tmp_path / "m")
    with pytest.raises(UnsafeModelError, match=r"model.path .*no model.safetensors \(weights found: pytorch_model.bin\)"):
        build_causal_lm(ModelConfig(path=path, impl=impl), 40, 32, 0)
    gpt2.save_pretrained(tmp_path / "safe", safe_serialization=True)
    model = build_causal_lm(ModelConfig(path=str(tmp_path / "safe"), impl=impl), 40, 32, 0)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_translate_and_classify_from_model_refuse_a_pickle_checkpoint(tmp_path, gpt2):
    from lmstack.tasks.classify.models import sequence_classifier
    from lmstack.tasks.translate.model import build_seq2seq

    marian = MarianMTModel(MarianConfig(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1,
                                        encoder_attention_heads=2, decoder_attention_heads=2,
                                        encoder_ffn_dim=32, decoder_ffn_dim=32, pad_token_id=0))
    with pytest.raises(UnsafeModelError, match="model.path"):
        build_seq2seq(ModelConfig(path=_pickled(marian, tmp_path / "mt")), {})

    class Recipe:  # the two fields sequence_classifier reads
        class finetune:
            from_model = _pickled(gpt2, tmp_path / "lm")

        model = ModelConfig(dropout=0.1)

    with pytest.raises(UnsafeModelError, match="finetune.from_model"):
        sequence_classifier(Recipe, {"labels": ["a", "b"], "pad_id": 0})


def test_serving_generate_and_compress_refuse_a_pickle_checkpoint(tmp_path, gpt2):
    from lmstack.compress.load import load_model as compress_load
    from lmstack.tasks.lm.engine import load_model as serve_load

    path = _pickled(gpt2, tmp_path / "m")
    (tmp_path / "m" / "lmstack_model.json").write_text('{"task": "lm"}')
    for load in (serve_load, compress_load):
        with pytest.raises(UnsafeModelError, match="no model.safetensors"):
            load(path)
