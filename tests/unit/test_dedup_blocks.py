"""Near/exact dedup bodies on empty batches (a file whose records were all rejected gives empty blocks):
they must have the schema of full ones, or Ray's shuffle refuses to concatenate them."""

import numpy as np
import pyarrow as pa
from ray.data.block import BlockAccessor

from lmstack.config import DedupConfig
from lmstack.data.dedup import band_rows, bucket_dups

CFG = DedupConfig(near=True, num_perm=32, bands=8)


def _batch(texts, ids):
    return {"text": np.asarray(texts, dtype=object), "doc_id": np.asarray(ids, dtype=np.int64)}


def test_empty_and_full_band_blocks_concatenate():
    full = BlockAccessor.batch_to_block(band_rows(_batch(["a few words of text here"], [7]), CFG))
    empty = BlockAccessor.batch_to_block(band_rows(_batch([], []), CFG))
    assert empty.num_rows == 0 and empty.schema == full.schema
    both = pa.concat_tables([full, empty])  # HEAD: ArrowInvalid "Schema at index 1 was different"
    assert both.num_rows == CFG.bands


def test_bucket_dups_on_a_shuffled_group():
    text = "the same words repeated in two documents for the test"
    block = BlockAccessor.batch_to_block(band_rows(_batch([text, text, "other words entirely apart"], [5, 3, 9]), CFG))
    group = BlockAccessor.for_block(block.filter(pa.compute.equal(block["band"], block["band"][0]))).to_numpy()
    assert list(bucket_dups(group, 0.8)["doc_id"]) == [5]
    assert list(bucket_dups({"doc_id": np.zeros(0, np.int64), "sig": np.zeros((0, 32), np.uint32)}, 0.8)["doc_id"]) == []
