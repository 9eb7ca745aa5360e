"""LeadSelection: the one lead-selection model every lead plugin uses (no database needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prosaas_core.leads import MAX_LEAD_IDS, LeadSelection


def _error(data) -> str:
    with pytest.raises(ValidationError) as info:
        LeadSelection.model_validate(data)
    return str(info.value)


def test_each_mode_alone_is_valid():
    assert LeadSelection.model_validate({"lead_ids": [3, 1, 3]}).describe() == "2 leads"
    assert LeadSelection.model_validate({"all": True}).describe() == "all leads"
    sel = LeadSelection.model_validate({"filter": {"status": "new", "import_id": 4}})
    assert sel.describe() == "leads matching status=new import_id=4"


def test_empty_filter_is_an_error_that_says_how_to_select_all():
    assert 'send {"all": true}' in _error({"filter": {}})
    assert "empty filter" in _error({"filter": {"status": []}})


def test_exactly_one_mode():
    assert "one of lead_ids, filter" in _error({})
    assert "one of lead_ids, filter" in _error({"all": False})
    assert "got lead_ids, all" in _error({"lead_ids": [1], "all": True})
    assert "got filter, all" in _error({"filter": {"source": "web"}, "all": True})


def test_limits_and_unknown_fields():
    _error({"lead_ids": list(range(1, MAX_LEAD_IDS + 2))})
    LeadSelection.model_validate({"lead_ids": list(range(1, MAX_LEAD_IDS + 1))})
    assert "lead_ids" in _error({"lead_ids": []})
    assert "lead_ids" in _error({"lead_ids": [0]})
    assert "colour" in _error({"filter": {"colour": "red"}})
    assert "everything" in _error({"everything": True})
    assert "created_before" in _error({"filter": {"created_before": "yesterday"}})


def test_batch_sizes_adapt_toward_the_target_transaction_time():
    from prosaas_core.leads import MAX_BATCH_SIZE, MIN_BATCH_SIZE, TARGET_TXN_MS, next_batch_size

    assert next_batch_size(1000, TARGET_TXN_MS) == 1000
    assert next_batch_size(1000, TARGET_TXN_MS * 1.25) == 800
    assert next_batch_size(1000, TARGET_TXN_MS / 10) == 2000  # at most doubled per step
    assert next_batch_size(1000, TARGET_TXN_MS * 10) == 500  # at most halved per step
    assert next_batch_size(MIN_BATCH_SIZE, 10_000) == MIN_BATCH_SIZE
    assert next_batch_size(MAX_BATCH_SIZE, 0.0) == MAX_BATCH_SIZE
