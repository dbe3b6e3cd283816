"""pytest plugin that runs KATO's own encoder tests (``tests/tests/gpu/test_encoder.py`` of a KATO
checkout, unmodified) against kato_gpu's public API.

KATO's files import ``kato.gpu.encoder.SymbolVocabularyEncoder`` and check ``kato.gpu.GPU_AVAILABLE``;
this plugin, loaded with ``-p kato_shim`` before any of them is collected, puts modules of those
names in ``sys.modules`` that hand out kato_gpu's classes. It also provides the ``mongodb`` fixture
that KATO defines elsewhere: a fresh mongomock database per test, with ``metadata`` and
``patterns_kb`` collections. Every collected test must run and pass: a skip or an empty run fails
the session, so the suite cannot go quietly green.
"""

from __future__ import annotations

import sys
import types

import pytest

import kato_gpu


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that its submodules import
    module.__dict__.update(attrs)
    return module


def _install() -> None:
    encoder = _module("kato.gpu.encoder", SymbolVocabularyEncoder=kato_gpu.SymbolVocabularyEncoder)
    gpu = _module("kato.gpu", GPU_AVAILABLE=True, encoder=encoder)
    kato = _module("kato", gpu=gpu)
    sys.modules.update({"kato": kato, "kato.gpu": gpu, "kato.gpu.encoder": encoder})


_install()


@pytest.fixture
def mongodb():
    """A fresh in-memory MongoDB database (its own client, so no data is shared between tests)."""
    import mongomock

    client = mongomock.MongoClient()
    try:
        yield client["kato_suite"]
    finally:
        client.close()


class _Outcomes:
    """Counts what really ran; a skip anywhere or no test at all fails the session."""

    def __init__(self) -> None:
        self.passed = 0
        self.skipped: list = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            self.skipped.append(report.nodeid)
        elif report.when == "call" and report.passed:
            self.passed += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.skipped or self.passed == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:
        encoder = kato_gpu.SymbolVocabularyEncoder
        terminalreporter.write_line(
            f"KATO encoder suite against {encoder.__module__}.{encoder.__qualname__}: "
            f"{self.passed} tests ran and passed, {len(self.skipped)} skipped"
        )
        for nodeid in self.skipped:
            terminalreporter.write_line(f"  skipped, which this suite does not allow: {nodeid}")
        if self.passed == 0:
            terminalreporter.write_line("  no test passed: KATO's suite must run in full")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Outcomes(), "kato_suite_outcomes")
