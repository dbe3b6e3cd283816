"""Shared fixtures and helpers, and the oracles (Python's own references, never kato_gpu code)."""

from __future__ import annotations

import time

import pytest

# The oracles live in the package (the benchmarks use the same ones); the tests import them from
# here as before.
from kato_gpu.bench.oracles import brute_force, kato_lcs, prediction_info, ref_difflib, ref_lcs, reference

__all__ = ["brute_force", "kato_lcs", "prediction_info", "ref_difflib", "ref_lcs", "reference", "wait_until"]


def wait_until(done, timeout: float = 20.0) -> bool:
    """Polls `done()` until it is true or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.01)
    return done()


@pytest.fixture
def encoder():
    from kato_gpu import SymbolVocabularyEncoder

    return SymbolVocabularyEncoder(None)


def pytest_report_header(config):
    import kato_gpu

    # CI runs the suite against the installed wheel, not the source tree; show which one this is.
    return f"kato_gpu {kato_gpu.__version__} from {kato_gpu.__file__}"
