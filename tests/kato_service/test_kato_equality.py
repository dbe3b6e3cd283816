"""End-to-end equality through KATO's REST API: two KATO instances served for real from the same
source, one unmodified and one switched onto kato_gpu exactly as docs/MIGRATION.md says
(``KATO_GPU_ACCELERATE=1`` in its environment, nothing else), receive the same requests; every
``GET /sessions/{id}/predictions`` answer is compared.

What is compared, and why not everything bit for bit (``kato_gpu.bench.kato_compare``):
KATO's own answer depends on the order its worker threads finish in. Predictions are matched by
name; the sums KATO takes in that order (``potential``, ``predictive_information``,
``bayesian_posterior``, the future aggregates) must agree within the rounding of such a sum; every
other field is compared exactly (floats bit for bit). Where KATO's cut to ``3 × max_predictions``
matches falls inside a tie of its pre-potential, which matches it keeps is its own choice: KATO's
own matching code, run in this process on the same patterns (``kato_gpu.bench.kato_oracle``),
detects those requests, and there only the fields that do not depend on the rest of the kept
ensemble are compared. Both servers run with ``PYTHONHASHSEED=0``, so that KATO's set iteration
orders agree between them.

Sessions with a ``filter_pipeline`` (``filter_sessions.py``) run on the same servers in token mode.

KATO's REST API has no way to delete one pattern; clear-all is exercised. A ``recall_threshold``
of 0.0, one-symbol states, affinity weights (``affinity_emotive``), ``max_predictions`` from 1 to
100, both of KATO's matching branches (threads at most 500 candidates, a process pool above) and
its difflib mode (``KATO_USE_FAST_MATCHING=false``) are all exercised.
"""

from __future__ import annotations

import json
import os
import random
import sys
from itertools import chain
from typing import Dict, List

import pytest
from filter_sessions import NODE as FILTER_NODE
from filter_sessions import exercise_filters, filter_patterns

from conftest import KATO_SRC, serving_unavailable

if serving_unavailable():
    pytest.skip(serving_unavailable(), allow_module_level=True)

from kato_gpu.bench.kato_bench import workload  # noqa: E402
from kato_gpu.bench.kato_compare import compare_responses  # noqa: E402
from kato_gpu.bench.kato_oracle import kato_pre_potentials, pruning_cut_tied  # noqa: E402
from kato_gpu.kato_host.client import KatoClient  # noqa: E402
from kato_gpu.kato_host.process import KatoServer  # noqa: E402

if str(KATO_SRC) not in sys.path:
    sys.path.insert(0, str(KATO_SRC))

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6)
MAX_PREDICTIONS = (1, 2, 3, 5, 10, 25, 100)
SMALL_VOCAB = [f"s{i:02d}" for i in range(14)]


def kato_name(events: List[List[str]]) -> str:
    from kato.representations.pattern import Pattern

    return Pattern(events).name


class Pair:
    """The same requests to an unmodified KATO and to KATO on kato_gpu; the answers compared."""

    def __init__(self, plain: KatoServer, fast: KatoServer) -> None:
        self.plain, self.fast = KatoClient(plain.base_url), KatoClient(fast.base_url)
        self.patterns: Dict[str, Dict[str, List[List[str]]]] = {}
        self.last_multi_ambiguous: Dict[str, bool] = {}
        self.counts = {"exact": 0, "ambiguous": 0, "different": 0}
        self.order_dependent = 0
        self.problems: List[str] = []
        #: Every request and both answers (written out where KATO_EQUALITY_DUMP names a file).
        self.log: list = []

    def both(self, method: str, *args, **kwargs):
        a = getattr(self.plain, method)(*args, **kwargs)
        b = getattr(self.fast, method)(*args, **kwargs)
        return a, b

    def sessions(self, node: str, config: dict):
        return self.both("create_session", node, config=config)

    def learn(self, sessions, node: str, events: List[List[str]], emotives=None) -> None:
        for client, sid in zip((self.plain, self.fast), sessions):
            client.clear_stm(sid)
            for k, event in enumerate(events):
                client.observe(sid, event, emotives=emotives[k] if emotives else None)
            name_seen = client.learn(sid)
        sorted_events = [sorted(e) for e in events]
        if sum(map(len, sorted_events)) > 1:
            self.patterns.setdefault(node, {})[kato_name(sorted_events)] = sorted_events
        assert name_seen.endswith(kato_name(sorted_events))

    def clear_all(self, sessions, node: str) -> None:
        for client, sid in zip((self.plain, self.fast), sessions):
            client.clear_all(sid)
        self.patterns[node] = {}

    def predict(self, sessions, node: str, events: List[List[str]], threshold: float, max_predictions: int) -> None:
        responses = []
        for client, sid in zip((self.plain, self.fast), sessions):
            client.clear_stm(sid)
            client.observe_events(sid, events)
            responses.append(client.predictions_response(sid))
        state = list(chain(*[sorted(e) for e in events]))
        if len(state) > 1:
            pre = kato_pre_potentials(self.patterns.get(node, {}), state, threshold, [sorted(e) for e in events])
            ambiguous = pruning_cut_tied(pre, 3 * max_predictions)
            self.last_multi_ambiguous[node] = ambiguous
        else:
            # A one-symbol answer repeats the node's last ensemble's future_potentials.
            ambiguous = self.last_multi_ambiguous.get(node, False)
        self.log.append((node, events, threshold, max_predictions, ambiguous, responses))
        outcome = compare_responses(*responses, ensemble_ambiguous=ambiguous)
        self.counts[outcome.outcome] += 1
        self.order_dependent += outcome.order_dependent_differences
        if outcome.outcome == "different":
            self.problems.append(f"{node} {events} t={threshold} m={max_predictions}: {outcome.problems[:4]}")

    def close(self) -> None:
        self.plain.close()
        self.fast.close()


def small_events(rng: random.Random, n_events: int) -> List[List[str]]:
    return [sorted(rng.sample(SMALL_VOCAB, rng.randint(1, 4))) for _ in range(n_events)]


def servers(env: dict):
    common = {"PYTHONHASHSEED": "0", **env}
    return (
        KatoServer(kato_src=KATO_SRC, env=common),
        KatoServer(kato_src=KATO_SRC, env={**common, "KATO_GPU_ACCELERATE": "1"}),
    )


def exercise(pair: Pair, rng: random.Random, small_requests: int, large_requests: int, large_queries) -> None:
    """Learning, predicting, clearing on a small node (KATO's thread branch) and predicting on a
    large one (its process-pool branch)."""
    base = {"process_predictions": False}
    plain_small = pair.sessions("small", {**base, "max_predictions": 5})
    affine_small = pair.sessions("small", {**base, "max_predictions": 5, "affinity_emotive": "joy"})
    large = pair.sessions("large", {**base, "max_predictions": 10})
    for k in range(60):
        events = small_events(rng, rng.randint(2, 4))
        emotives = [{"joy": rng.choice([-1.0, 0.5, 2.0])} for _ in events] if k % 3 == 0 else None
        pair.learn(plain_small, "small", events, emotives)
    for k in range(small_requests):
        if k and k % 100 == 0:
            for _ in range(4):
                pair.learn(plain_small, "small", small_events(rng, rng.randint(2, 4)))
        if k == small_requests // 2:
            pair.clear_all(plain_small, "small")
            for _ in range(40):
                pair.learn(plain_small, "small", small_events(rng, rng.randint(2, 4)))
        sessions = affine_small if k % 4 == 1 else plain_small
        threshold, max_predictions = rng.choice(THRESHOLDS), rng.choice(MAX_PREDICTIONS)
        pair.plain.update_config(sessions[0], max_predictions=max_predictions, recall_threshold=threshold)
        pair.fast.update_config(sessions[1], max_predictions=max_predictions, recall_threshold=threshold)
        events = [[rng.choice(SMALL_VOCAB)]] if k % 10 == 0 else small_events(rng, rng.randint(1, 3))
        pair.predict(sessions, "small", events, threshold, max_predictions)
    for k in range(large_requests):
        threshold, max_predictions = rng.choice((0.1, 0.3)), rng.choice((3, 10, 100))
        pair.plain.update_config(large[0], max_predictions=max_predictions, recall_threshold=threshold)
        pair.fast.update_config(large[1], max_predictions=max_predictions, recall_threshold=threshold)
        pair.predict(large, "large", large_queries[k % len(large_queries)], threshold, max_predictions)


@pytest.mark.parametrize(
    "mode, small_requests, large_requests",
    [("token", 700, 150), ("difflib", 100, 60)],
)
def test_same_predictions_through_katos_rest_api(mode, small_requests, large_requests):
    large_patterns, large_queries = workload(620, 40, seed=11)
    env = {"KATO_USE_FAST_MATCHING": "true" if mode == "token" else "false"}
    plain, fast = servers(env)
    with plain, fast:
        for server in (plain, fast):
            server.bulk_load("large", large_patterns)
            if mode == "token":
                server.bulk_load(FILTER_NODE, filter_patterns())
        pair = Pair(plain, fast)
        try:
            pair.patterns["large"] = {
                kato_name([sorted(e) for e in seq]): [sorted(e) for e in seq] for seq in large_patterns
            }
            exercise(pair, random.Random(f"kato-equality-{mode}"), small_requests, large_requests, large_queries)
            # Sessions with a filter pipeline, on the same servers (token mode: KATO's RapidFuzz
            # stage and kato_gpu's native one compute its LCS similarity).
            filtered = exercise_filters(pair, large_patterns, large_queries) if mode == "token" else {}
            status = pair.fast.request("GET", "/kato-gpu/status")
        finally:
            pair.close()
    dump = os.environ.get("KATO_EQUALITY_DUMP")
    if dump:
        with open(f"{dump}.{mode}.json", "w", encoding="utf-8") as handle:
            json.dump(pair.log, handle)
    total = sum(pair.counts.values())
    print(f"{mode}: {total} requests: {pair.counts}, {pair.order_dependent} order-dependent last-bit differences")
    assert pair.problems == [], "\n".join(pair.problems[:10])
    assert total == small_requests + large_requests
    # The comparisons above are only worth something if most answers were compared in full.
    assert pair.counts["exact"] >= 0.8 * total, pair.counts
    counts = status["counts"]
    assert counts.get("accelerated", 0) > 0 and counts.get("single_symbol", 0) > 0, counts
    assert status["knowledge_bases"] and all(kb["in_step"] for kb in status["knowledge_bases"].values()), status
    expected_fallbacks = {"fallback.difflib_thread_path"} if mode == "difflib" else set()
    assert {k for k in counts if k.startswith("fallback.")} == expected_fallbacks, counts
    if filtered:
        print(f"filtered sessions: {pair.filter_counts}")
        assert pair.filter_counts["exact"] >= 0.9 * sum(pair.filter_counts.values()), pair.filter_counts
        assert {k: counts.get(k, 0) for k in filtered} == filtered, counts
