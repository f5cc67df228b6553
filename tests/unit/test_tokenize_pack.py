import numpy as np
import pytest

from lmstack.data.pack import TokenizePack, in_validation, pack_ids
from lmstack.data.tokenizer import char_tokenizer, load_tokenizer, train_bpe

TEXT = ["Hello, world!\nSecond line\twith tab.", "ünïcödé text 中文 and emoji 🙂", "  leading spaces"]


def test_bpe_round_trip_and_save_load(tmp_path):
    tok = train_bpe(TEXT * 20, vocab_size=300)
    for text in TEXT:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    tok.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(str(tmp_path / "tok"))
    assert again.encode(TEXT[1]) == tok.encode(TEXT[1])
    assert again.eos_token == "<|endoftext|>"


def test_char_round_trip_and_unknown():
    tok = char_tokenizer("".join(TEXT))
    for text in TEXT:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)
        assert tok.decode(ids) == text
    assert tok.encode("@", add_special_tokens=False) == [tok.unk_token_id]


def test_pack_invariants():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    blocks, left = pack_ids(docs, eos_id=0, block_size=4)
    assert blocks.shape == (3, 4)
    assert left == (3 + 1 + 2 + 1 + 4 + 1) - 12
    assert blocks.ravel().tolist() == [1, 2, 3, 0, 4, 5, 0, 6, 7, 8, 9, 0]


def test_hash_split_is_deterministic_and_near_fraction():
    ids = range(20000)
    share = np.mean([in_validation(i, 0.1) for i in ids])
    assert 0.09 < share < 0.11
    assert [in_validation(i, 0.1) for i in range(100)] == [in_validation(i, 0.1) for i in range(100)]


def test_k_folds_are_disjoint_and_cover_every_document():
    ids = range(3000)
    folds = [{i for i in ids if in_validation(i, 0.1, folds=4, fold=f)} for f in range(4)]
    assert set().union(*folds) == set(ids)
    assert sum(len(f) for f in folds) == len(ids)  # disjoint
    assert all(600 < len(f) < 900 for f in folds)  # roughly a quarter each


@pytest.mark.parametrize("split", ["tail", "hash"])
def test_tokenize_pack_counts(tmp_path, split):
    tok = char_tokenizer("".join(TEXT))
    tok.save_pretrained(tmp_path / "tok")
    body = TokenizePack(str(tmp_path / "tok"), block_size=8, val_fraction=0.25, split=split)
    out = body({"text": np.array(TEXT * 4, dtype=object), "doc_id": np.arange(12)})
    n_chars = sum(len(t) for t in TEXT * 4)
    eos = 24 if split == "tail" else 12  # tail: both halves of each document end with EOS
    assert out["train_tokens"][0] + out["val_tokens"][0] == n_chars + eos
    blocks = [b for b, s in zip(out["input_ids"], out["split"], strict=True) if s in ("train", "val")]
    assert sum(len(b) for b in blocks) + out["train_leftover"][0] + out["val_leftover"][0] == n_chars + eos
    assert out["train_bytes"][0] + out["val_bytes"][0] == sum(len(t.encode()) for t in TEXT * 4)
