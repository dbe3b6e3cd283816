"""The LCS kernel choice: KATO_GPU_SIMD forces the scalar reference, and every kernel gives the same
bits. Each kernel is chosen once per process, so each runs in its own interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kato_gpu import _native

# Queries a 3,000-pattern matcher of lengths 1-90 (both kernels' block widths and the scalar
# fallback past 64), every result's names and similarity bits, then the kernel's name.
SCRIPT = r"""
import json, random, sys
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, _native
rng = random.Random(5)
vocab = [f"s{k}" for k in range(60)]
out = {}
for metric in ("lcs", "difflib"):
    m = HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(metric=metric))
    names = [f"P{k:05d}" for k in range(3000)]
    m.add_patterns(names, [[[rng.choice(vocab) for _ in range(1 + rng.randrange(90))]] for _ in names])
    rows = []
    for q in range(12):
        state = [rng.choice(vocab) for _ in range(1 + rng.randrange(70))] + ["unknown"]
        for limit in (None, 5):
            res = m.match_patterns_arrays(state, 0.1, limit)
            rows.append([list(res.names), [float(x).hex() for x in res.similarities]])
    out[metric] = rows
out["kernel"] = _native.lcs_kernel()
json.dump(out, sys.stdout)
"""


def _run(simd):
    env = dict(os.environ)
    env.pop("KATO_GPU_SIMD", None)
    if simd is not None:
        env["KATO_GPU_SIMD"] = simd
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_the_kernel_is_named():
    assert _native.lcs_kernel() in ("scalar", "avx2")


@pytest.mark.skipif(os.environ.get("KATO_GPU_SIMD") == "scalar", reason="the suite itself runs scalar")
def test_every_kernel_gives_the_same_bits():
    auto, _ = _run(None)
    scalar, _ = _run("scalar")
    assert scalar["kernel"] == "scalar"
    assert auto["kernel"] in ("scalar", "avx2")
    assert any(rows[0] for rows in auto["lcs"]), "the queries must find something"
    assert auto["lcs"] == scalar["lcs"] and auto["difflib"] == scalar["difflib"]


def test_an_unknown_setting_is_ignored():
    out, _ = _run("sse9")
    assert out["kernel"] in ("scalar", "avx2")
