"""Integration: fine-tune the real `default` model on real SST-2 data (slow: ~1-2 min on 2 cores)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_full_finetune_on_2000_sst2_examples_beats_76_percent(sst2_run):
    _, result = sst2_run  # the session's one real training (tests/conftest.py)
    acc = result.metrics["trained"]["validation"]["accuracy"]
    assert acc >= 0.76, f"SST-2 dev accuracy {acc:.4f} after 2,000 examples"
    adv = result.metrics["trained"]["advglue_sst2"]["accuracy"]  # AdvGLUE found beside the GLUE folder
    assert 0.0 <= adv < acc
    assert result.cost.train_examples == 2000 and result.cost.train_examples_per_s > 5
    # the frozen base encoder's baselines on the same 2,000 examples (MTEB logreg, cosine kNN)
    baselines = result.metrics["baselines"]["validation"]
    assert 0.65 < baselines["logreg"]["accuracy"] < 0.95 and 0.6 < baselines["knn"]["accuracy"] < 0.95
    assert result.meta["baselines"]["train_examples"] == 2000 and not result.meta["baselines"]["cached"]
