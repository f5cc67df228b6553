import random

import pytest

from lmstack.config import DedupConfig
from lmstack.data.dedup import estimated_jaccard, exact_duplicate_ids, minhash, near_duplicate_ids, shingles

rng = random.Random(7)
VOCAB = [f"w{i}" for i in range(400)]


def doc(n=120):
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def edit(text, changes):
    words = text.split()
    for i in rng.sample(range(len(words)), changes):
        words[i] = "changed"
    return " ".join(words)


def true_jaccard(a, b, k=5):
    sa, sb = shingles(a, k), shingles(b, k)
    return len(sa & sb) / len(sa | sb)


def test_minhash_estimates_jaccard():
    a = doc()
    b = edit(a, 3)
    est = estimated_jaccard(minhash(a, 256, 5), minhash(b, 256, 5))
    assert abs(est - true_jaccard(a, b)) < 0.1
    assert estimated_jaccard(minhash(a, 128, 5), minhash(doc(), 128, 5)) < 0.1


@pytest.mark.usefixtures("ray_cluster")
def test_exact_and_near_duplicates_on_ray():
    import ray.data

    originals = [doc() for _ in range(30)]
    rows = [{"doc_id": i, "text": t} for i, t in enumerate(originals)]
    rows.append({"doc_id": 100, "text": originals[0]})  # exact copy of 0
    rows.append({"doc_id": 101, "text": edit(originals[1], 2)})  # near copy of 1 (J ~ 0.85)
    rows.append({"doc_id": 102, "text": edit(originals[2], 40)})  # heavily edited: not a duplicate
    ds = ray.data.from_items(rows, override_num_blocks=4)
    assert exact_duplicate_ids(ds) == {100}
    assert true_jaccard(originals[1], rows[-2]["text"]) > 0.8 > true_jaccard(originals[2], rows[-1]["text"])
    assert near_duplicate_ids(ds, DedupConfig(near=True, threshold=0.7)) == {100, 101}
