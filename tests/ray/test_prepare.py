import json
import os

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
    # A stray JSON file whose records are all rejected: empty blocks without a schema then meet near
    # dedup's band shuffle (it crashed prepare with "Schema at index 1 was different").
    (data / "stray.json").write_text('{"name": "config"}\n{"debug": true}\n')
    recipe = tiny_recipe(tmp_path, data)
    recipe.data.clean.min_chars = 20
    recipe.data.dedup.near = True
    m = get_spec("lm").prepare(recipe, log=lambda *_: None)
    docs = m["documents"]
    assert docs["read"] == 60 + 3 + 6 + 2
    assert docs["rejected"] == 4
    assert docs["rejected_by_reason"] == {"malformed JSON": 1, "field 'text' missing from record": 3}
    assert docs["dropped_by_rule"]["too_short"] == 1
    assert docs["duplicates_exact"] == 1
    assert docs["kept"] == docs["read"] - 4 - 1 - 1 - docs["duplicates_near"]
    assert m["recipe_hash"] == recipe.fingerprint("data", "tokenizer")
    # Per file, records and bytes: read = kept + rejected + dropped + duplicates; bytes are the file's.
    files = m["files"]
    assert set(files) == {str(p) for p in data.rglob("*") if p.is_file()}
    for name, f in files.items():
        assert f["read"]["bytes"] == os.path.getsize(name)
        for unit in ("records", "bytes"):
            assert f["read"][unit] == sum(f[k][unit] for k in ("kept", "rejected", "dropped", "duplicates"))
    assert files[str(data / "stray.json")]["rejected"]["records"] == 2
    assert sum(f["duplicates"]["records"] for f in files.values()) == 1 + docs["duplicates_near"]

    out = tmp_path / "run" / "data"
    rejects = [json.loads(line) for f in sorted((out / "rejects").glob("*.json")) for line in f.open()]
    assert sorted(r["line"] for r in rejects) == [1, 2, 61, 62]

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

