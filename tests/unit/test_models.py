import math

import pytest
import torch

from lmstack.config import ModelConfig, TrainConfig
from lmstack.models import build_causal_lm, load_causal_lm
from lmstack.train.checkpoint import Progress
from lmstack.train.loop import early_stop
from lmstack.train.schedule import lr_at


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_families_build_from_recipe_fields_and_round_trip(tmp_path, family):
    cfg = ModelConfig(family=family, n_layer=2, n_head=2, n_embd=16, n_kv_head=1 if family == "llama" else None)
    model = build_causal_lm(cfg, vocab_size=50, context=32, eos_id=49)
    assert model.config.model_type == family
    ids = torch.randint(0, 50, (2, 8))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 8, 50) and math.isfinite(out.loss.item())
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    again = build_causal_lm(ModelConfig(path=str(tmp_path / "m")), vocab_size=50, context=32, eos_id=49)
    assert torch.equal(again(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm(str(tmp_path / "missing"))


def test_schedule_warms_up_then_decays_to_min():
    lrs = [lr_at(s, 1e-3, 1e-4, 10, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[100] == pytest.approx(1e-4)


def test_early_stopping_patience():
    cfg = TrainConfig(early_stopping={"patience": 2, "min_delta": 0.01})
    progress = Progress()
    decisions = [early_stop(cfg, progress, {"val_loss": v}) for v in (3.0, 2.5, 2.495, 2.6, 2.4, 2.45, 2.41)]
    assert decisions == [False, False, False, True, False, False, True]
    assert progress.best_metric == 2.4
