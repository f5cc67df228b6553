"""prepare's per-file accounting: read = kept + rejected + dropped + duplicates, records and bytes."""

import pytest

from lmstack.data.prepare import _file_accounts
from lmstack.data.read import AccountingError

BY_STATUS = {("a.jsonl", "ok"): (5, 500), ("a.jsonl", "reject:malformed JSON"): (1, 30),
             ("a.jsonl", "drop:too_short"): (2, 8), ("b.txt", "ok"): (1, 100)}


def test_every_file_adds_up_by_fate():
    files = _file_accounts(BY_STATUS, kept={"a.jsonl": (4, 400), "b.txt": (1, 100)}, dups={"a.jsonl": (1, 100)})
    a = files["a.jsonl"]
    assert a["read"] == {"records": 8, "bytes": 538}
    assert (a["kept"], a["rejected"], a["dropped"], a["duplicates"]) == (
        {"records": 4, "bytes": 400}, {"records": 1, "bytes": 30}, {"records": 2, "bytes": 8},
        {"records": 1, "bytes": 100})
    assert files["b.txt"]["duplicates"] == {"records": 0, "bytes": 0}


def test_a_row_lost_between_stages_stops_prepare():
    with pytest.raises(AccountingError, match="a.jsonl: 8 records read but 7 accounted"):
        _file_accounts(BY_STATUS, kept={"a.jsonl": (4, 400), "b.txt": (1, 100)}, dups={})
