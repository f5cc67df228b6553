import json

import pyarrow.parquet as pq
import pytest

from conftest import make_corpus, tiny_recipe
from lmstack.tasks import get_spec

pytestmark = pytest.mark.usefixtures("ray_cluster")


def blocks(path):
    return [list(map(int, b)) for b in pq.read_table(path).column("input_ids").to_pylist()]


def test_prepare_end_to_end_accounts_for_every_document(tmp_path):
    data = make_corpus(tmp_path / "corpus")
    with open(data / "docs.jsonl", "a") as f:
        f.write("{broken\n")
        f.write('{"title": "no text"}\n')
        f.write('{"text": "tiny"}\n')
    dup = (data / "txt" / "0.txt").read_text()
    (data / "txt" / "copy.txt").write_text(dup)
    recipe = tiny_recipe(tmp_path, data)
    recipe.data.clean.min_chars = 20
    m = get_spec("lm").prepare(recipe, log=lambda *_: None)
    docs = m["documents"]
    assert docs["read"] == 60 + 3 + 6
    assert docs["rejected"] == 2
    assert docs["rejected_by_reason"] == {"malformed JSON": 1, "field 'text' missing from record": 1}
    assert docs["dropped_by_rule"]["too_short"] == 1
    assert docs["duplicates_exact"] == 1
    assert docs["kept"] == docs["read"] - 2 - 1 - 1
    assert m["recipe_hash"] == recipe.fingerprint("data", "tokenizer")

    out = tmp_path / "run" / "data"
    rejects = [json.loads(line) for f in sorted((out / "rejects").glob("*.json")) for line in f.open()]
    assert sorted(r["line"] for r in rejects) == [61, 62]
    assert all(r["source"].endswith("docs.jsonl") for r in rejects)

    train, val = blocks(out / "train"), blocks(out / "val")
    assert len(train) == m["blocks"]["train"] > 0 and len(val) == m["blocks"]["val"] > 0
    assert all(len(b) == 32 for b in train + val)
    assert m["tokens"]["train"] == 32 * len(train) + m["tokens_not_in_blocks"]["train"]
    # Deterministic: preparing again gives identical shards.
    get_spec("lm").prepare(recipe, log=lambda *_: None)
    assert blocks(out / "train") == train


def test_shakespeare_char_data_matches_nanogpt_split(tmp_path, shared_data):
    from lmstack.config import load_recipe

    recipe = load_recipe("jobs/recipes/shakespeare_char.yaml", [f"run_dir={tmp_path}"])
    m = get_spec("lm").prepare(recipe, log=lambda *_: None)
    assert m["documents"]["kept"] == 1
    assert m["tokenizer"]["vocab_size"] == 65 + 2  # 65 characters, EOS, UNK
    # 1,115,394 characters, split 90/10 at character level as nanoGPT does (+1 EOS per part).
    assert m["tokens"]["train"] + m["tokens"]["val"] == 1_115_394 + 2
    assert abs(m["tokens"]["val"] - 111_540) <= 2
