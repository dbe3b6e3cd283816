"""KATO's own matching code, run in this process on a known set of patterns: the independent
reference that tells where KATO's answer is not determined by its input.

KATO keeps ``3 × max_predictions`` matches by pre-potential before it computes its ensemble
metrics; where matches tie at that cut, which of them it keeps depends on the order its worker
threads finish in. :func:`pruning_cut_tied` says whether a request is such a case, from KATO's own
``_process_batch_rapidfuzz`` (or, above KATO's process-pool threshold, its ``_process_batch_worker``)
and KATO's own ``Prediction``; nothing of kato_gpu's native code is used.

Needs KATO's source importable (``sys.path`` holding a KATO checkout) and its dependencies.
"""

from __future__ import annotations

from itertools import chain
from types import SimpleNamespace
from typing import Dict, List, Mapping, Optional, Sequence


def _kato():
    from kato.representations import prediction
    from kato.searches import pattern_search

    return pattern_search, prediction


def pre_potential(prediction: Mapping) -> float:
    """KATO's pruning key (``predictPattern``'s ``_pre_potential``)."""
    fragmentation = prediction["fragmentation"]
    return (prediction["evidence"] + prediction["confidence"]) * prediction["snr"] + (
        0.0 if fragmentation == -1 else 1.0 / (fragmentation + 1)
    )


def kato_pre_potentials(
    patterns: Mapping[str, Sequence[Sequence[str]]],
    state: Sequence[str],
    threshold: float,
    stm_events: Optional[Sequence[Sequence[str]]] = None,
    use_fast_matching: bool = True,
) -> Dict[str, float]:
    """Every match KATO's token-mode matching finds for ``state`` among ``patterns`` (name →
    events), with its pre-potential."""
    ps, pred = _kato()
    flat = {name: list(chain(*events)) for name, events in patterns.items()}
    names = list(flat)
    if len(names) > ps.PROCESS_POOL_CANDIDATE_THRESHOLD:
        # In KATO's batches of 100 (its worker looks each match up in a dict of its batch).
        items = list(flat.items())
        results = []
        for start in range(0, len(items), 100):
            results.extend(ps._process_batch_worker(list(state), items[start : start + 100], threshold, True, 0.0))
    else:
        searcher = SimpleNamespace(
            use_token_matching=True,
            recall_threshold=threshold,
            session_config=SimpleNamespace(fuzzy_token_threshold=0.0),
            extractor=ps.InformationExtractor(use_fast_matcher=use_fast_matching, use_token_matching=True),
            affinity_weights=None,
            patterns_cache=flat,
        )
        if use_fast_matching:
            results = ps.PatternSearcher._process_batch_rapidfuzz(searcher, list(state), names)
        else:
            results = ps.PatternSearcher._process_batch_original(searcher, list(state), names)
    out: Dict[str, float] = {}
    for result in results:
        name, _, intersection, past, present, missing, extras, similarity, blocks = result[:9]
        events = [list(e) for e in patterns[name]]
        pattern = {"name": name, "pattern_data": events, "length": len(flat[name]), "frequency": 1}
        prediction = pred.Prediction(
            pattern, intersection, past, present, missing, extras, similarity, blocks, stm_events=stm_events
        )
        out[name] = pre_potential(prediction)
    return out


def pruning_cut_tied(pre_potentials: Mapping[str, float], keep: int) -> bool:
    """Whether KATO's cut to ``keep`` matches by pre-potential falls inside a tie."""
    if len(pre_potentials) <= keep or keep <= 0:
        return False
    ranked: List[float] = sorted(pre_potentials.values(), reverse=True)
    return ranked[keep - 1] == ranked[keep]


def filter_candidates(
    patterns: Mapping[str, Sequence[Sequence[str]]], state: Sequence[str], config: Mapping
) -> Optional[Dict[str, Sequence[Sequence[str]]]]:
    """The patterns (name → events) a session's ``filter_pipeline`` of KATO's ``length``,
    ``jaccard`` and ``rapidfuzz`` stages selects, the rules restated here in plain Python over
    the events (KATO runs the first two as SQL over its pattern table): None when the pipeline has
    any other stage. Independent of kato_gpu's native stages, which the tie check must not trust.
    Parameters as KATO's stages take them: ``value or default``, length bounds truncated by
    ``int()``, a RapidFuzz stage before any database stage skipped, no database stage: nothing."""
    from .oracles import ref_lcs

    kept: Optional[set] = None
    for stage in config.get("filter_pipeline") or []:
        if stage not in ("length", "jaccard", "rapidfuzz"):
            return None
        if stage == "rapidfuzz" and kept is None:
            continue
        names = set()
        for name, events in patterns.items():
            flat = list(chain(*events))
            if stage == "length":
                low = max(1, int(len(state) * (config.get("length_min_ratio") or 0.5)))
                ok = low <= len(flat) <= int(len(state) * (config.get("length_max_ratio") or 2.0))
            elif stage == "jaccard":
                overlap, union = len(set(flat) & set(state)), len(set(flat) | set(state))
                ok = overlap >= (config.get("jaccard_min_overlap") or 2) and overlap * 1.0 / union >= (
                    config.get("jaccard_threshold") or 0.3
                )
            else:
                ok = bool(flat) and ref_lcs(flat, state) >= (config.get("recall_threshold") or 0.1)
            if ok:
                names.add(name)
        kept = names if kept is None else kept & names
    return {name: patterns[name] for name in kept or ()}
