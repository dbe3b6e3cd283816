"""Sessions that configure a ``filter_pipeline``, for ``test_kato_equality.py``'s servers (an
unmodified KATO and KATO on kato_gpu): the same patterns loaded into both, sessions with the same
filter settings ask both for predictions, every answer compared as the rest of that test does.

Pipelines: length, Jaccard, length + Jaccard, length + RapidFuzz (native stages); MinHash and a
Jaccard stage whose SQL fails on a quoted symbol (KATO's own stages). A wide length filter on a
node of 620 patterns keeps more than 500 candidates, so KATO's process-pool branch runs too.

Where KATO prunes (3 × max_predictions below the number of matches) the requests where its cut
falls inside a tie are found by KATO's own matching run in this process over the candidates; for
the large node those are the length filter's (``kato_oracle.filter_candidates``). On the small node
``max_predictions`` is 100: KATO keeps every match, so no cut exists.
"""

from __future__ import annotations

import random
from itertools import chain
from typing import Any, Dict, List

from kato_gpu.bench.kato_compare import compare_responses
from kato_gpu.bench.kato_oracle import filter_candidates, kato_pre_potentials, pruning_cut_tied

QUOTED = "it's"

SMALL_PIPELINES = [
    {"filter_pipeline": ["length"]},
    {"filter_pipeline": ["jaccard"], "jaccard_threshold": 0.2, "jaccard_min_overlap": 1},
    {"filter_pipeline": ["length", "jaccard"], "length_min_ratio": 0.3, "length_max_ratio": 3.0},
    {"filter_pipeline": ["length", "rapidfuzz"], "length_max_ratio": 4.0},
    {"filter_pipeline": ["minhash"], "minhash_threshold": 0.3},
]


def path_of(settings: dict, state: List[str]) -> str:
    """Which path kato_gpu takes: KATO's stages for MinHash, and for a Jaccard stage whose SQL
    would hold the quoted symbol (it fails there: KATO selects nothing)."""
    stages = settings["filter_pipeline"]
    if "minhash" in stages or ("jaccard" in stages and QUOTED in state):
        return "filter_kato_stages"
    return "filter_native"


#: A length filter wide enough to keep more than 500 of the large node's patterns.
WIDE = {"filter_pipeline": ["length"], "length_min_ratio": 0.2, "length_max_ratio": 20.0}


def compare(pair: Any, sessions, events, ambiguous: bool) -> None:
    responses = []
    for client, sid in zip((pair.plain, pair.fast), sessions):
        client.clear_stm(sid)
        client.observe_events(sid, events)
        responses.append(client.predictions_response(sid))
    outcome = compare_responses(*responses, ensemble_ambiguous=ambiguous)
    pair.filter_counts[outcome.outcome] += 1
    if outcome.outcome == "different":
        pair.problems.append(f"filtered {events}: {outcome.problems[:4]}")


#: The node the small filtered sessions use; the caller loads :func:`filter_patterns` into it.
NODE = "small-filters"


def filter_patterns() -> List[List[List[str]]]:
    """The patterns of :data:`NODE`: small ones, and one holding the quoted symbol."""
    from test_kato_equality import small_events

    rng = random.Random("kato-filter-patterns")
    return [small_events(rng, rng.randint(2, 4)) for _ in range(50)] + [[[QUOTED, "s01"], ["s02"]]]


def exercise_filters(pair: Any, large_patterns, large_queries) -> Dict[str, int]:
    """The filtered sessions on :data:`NODE` and on the ``large`` node (``large_patterns``), both
    loaded by the caller before its clients connected (a bulk load restarts a server on a new
    port); every answer compared. Returns how many requests each path of kato_gpu should have
    counted; the problems go to ``pair.problems``, the outcomes to ``pair.filter_counts``."""
    from test_kato_equality import kato_name, small_events

    rng = random.Random("kato-filter-equality")
    pair.filter_counts = {"exact": 0, "ambiguous": 0, "different": 0}
    base = {"process_predictions": False}
    states = [small_events(rng, rng.randint(2, 3)) for _ in range(4)] + [[[QUOTED], ["s01", "s03"]]]
    expected: Dict[str, int] = {}
    for settings in SMALL_PIPELINES:
        sessions = pair.sessions(NODE, {**base, "max_predictions": 100, **settings})
        for threshold in (0.0, 0.3):
            pair.plain.update_config(sessions[0], recall_threshold=threshold)
            pair.fast.update_config(sessions[1], recall_threshold=threshold)
            for events in states:
                compare(pair, sessions, events, ambiguous=False)
                path = path_of(settings, list(chain(*events)))
                expected[path] = expected.get(path, 0) + 1

    large = pair.sessions("large", {**base, **WIDE})
    patterns = {kato_name([sorted(e) for e in seq]): [sorted(e) for e in seq] for seq in large_patterns}
    for k, events in enumerate(large_queries[:8]):
        threshold, max_predictions = (0.1, 0.3)[k % 2], (3, 10, 100)[k % 3]
        pair.plain.update_config(large[0], max_predictions=max_predictions, recall_threshold=threshold)
        pair.fast.update_config(large[1], max_predictions=max_predictions, recall_threshold=threshold)
        state = list(chain(*[sorted(e) for e in events]))
        candidates = filter_candidates(patterns, state, {**WIDE, "recall_threshold": threshold})
        assert len(candidates) > 500
        pre = kato_pre_potentials(candidates, state, threshold, [sorted(e) for e in events])
        compare(pair, large, events, pruning_cut_tied(pre, 3 * max_predictions))
        expected["filter_native"] = expected.get("filter_native", 0) + 1
    return expected
