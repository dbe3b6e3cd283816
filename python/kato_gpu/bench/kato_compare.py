"""Comparing two KATO prediction responses (``GET /sessions/{id}/predictions``) the way KATO's own
output allows.

KATO's response is not a pure function of its input, and the comparison says exactly where:

* **Order.** KATO gathers matches as its worker threads finish, so predictions of equal
  ``potential`` come in any order. Predictions are matched by name, never by position; each
  side must be sorted by ``potential``, non-increasing.
* **Sums taken in that order.** ``bayesian_posterior`` (a dot product over the ensemble),
  ``predictive_information`` and ``potential`` (through the future aggregates, each a sum over
  the ensemble), the future aggregates themselves, and ``itfdf_similarity`` (a matrix-vector
  product over the ensemble's rows, whose rounding NumPy's BLAS lets depend on a row's position)
  are float sums in KATO's gathering order, so the same ensemble gives results that differ in
  the last bits from run to run. Those fields (:data:`ORDER_DEPENDENT`) must agree within the
  rounding error of such a sum: ``|a − b| ≤ 2·n·ε·max(|a|, |b|, 1)`` with ``n`` the number of terms
  (the ensemble size plus the distinct symbols in play) and ``ε = 2⁻⁵³``. Every other field must
  be equal (floats bit for bit).
* **Ties at a cut.** ``predictPattern`` keeps ``3 × max_predictions`` matches by a pre-potential
  and then ``max_predictions`` by potential, each with ``heapq.nlargest``, so where several
  matches tie at either cut, which of them KATO keeps depends on that gathering order too. When
  the two responses keep different names, the request is *ambiguous* if and only if every name
  kept by one side alone ties (pre-potential equal, or potential equal within the bound above)
  with the last name both sides kept; there only the fields that do not depend on the rest of
  the ensemble (:data:`ENSEMBLE_DEPENDENT` excluded) are compared, for the names both kept.

Everything else is a difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

#: Fields that are float sums in KATO's gathering order.
ORDER_DEPENDENT = frozenset({"potential", "predictive_information", "bayesian_posterior", "itfdf_similarity"})
FUTURE_ORDER_DEPENDENT = frozenset({"aggregate_potential", "total_weighted_frequency"})
#: Fields that depend on which matches made the ensemble.
ENSEMBLE_DEPENDENT = ORDER_DEPENDENT | frozenset(
    {"itfdf_similarity", "pattern_probability", "weighted_strength", "bayesian_prior"}
)
#: Fields of the response that differ between two instances by construction.
IGNORED_RESPONSE_FIELDS = frozenset({"session_id", "processor_id", "time", "unique_id"})

EPSILON = 2.0**-53


@dataclass
class Comparison:
    """The outcome for one request: ``exact`` (every field as described above), ``ambiguous``
    (KATO's own choice at a tied cut; common names compared), or ``different`` (``problems`` says
    what)."""

    outcome: str
    problems: List[str] = field(default_factory=list)
    order_dependent_differences: int = 0


def _within_sum_rounding(a: Any, b: Any, terms: int) -> bool:
    if not (isinstance(a, float) and isinstance(b, float)):
        return a == b
    if a == b or (math.isnan(a) and math.isnan(b)):
        return True
    return abs(a - b) <= 2.0 * max(terms, 1) * EPSILON * max(abs(a), abs(b), 1.0)


def _same(a: Any, b: Any) -> bool:
    """Equality that tells floats apart by bits and ints from floats, recursively."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            type(a) is type(b)
            and (a == b or (math.isnan(a) and math.isnan(b)))
            and (math.copysign(1.0, a) == math.copysign(1.0, b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _compare_prediction(
    name: str, kato: Dict[str, Any], ours: Dict[str, Any], terms: int, skip: frozenset, out: Comparison
) -> None:
    if kato.keys() != ours.keys():
        out.problems.append(f"{name}: keys differ: {sorted(kato.keys() ^ ours.keys())}")
        return
    for key in kato:
        if key in skip:
            continue
        if key in ORDER_DEPENDENT:
            if not _same(kato[key], ours[key]):
                if _within_sum_rounding(kato[key], ours[key], terms):
                    out.order_dependent_differences += 1
                else:
                    out.problems.append(f"{name}.{key}: {kato[key]!r} != {ours[key]!r}")
        elif not _same(kato[key], ours[key]):
            out.problems.append(f"{name}.{key}: {kato[key]!r} != {ours[key]!r}")


def _terms(*responses: Dict[str, Any]) -> int:
    """How many terms KATO's order-dependent sums for these responses can have: the ensemble
    (every supporting pattern of the future aggregates, or the predictions) and the symbols."""
    count = 0
    for response in responses:
        predictions = response.get("predictions") or []
        futures = response.get("future_potentials") or []
        ensemble = max(len(predictions), sum(f.get("supporting_patterns", 0) for f in futures))
        symbols = {s for p in predictions for key in ("matches", "missing") for s in _flat(p.get(key) or [])}
        count = max(count, ensemble + len(futures) + len(symbols))
    return count


def _flat(items: List[Any]) -> List[Any]:
    return [s for item in items for s in (item if isinstance(item, list) else [item])]


def _sorted_by_potential(predictions: List[Dict[str, Any]]) -> bool:
    potentials = [p.get("potential") for p in predictions]
    return all(a >= b for a, b in zip(potentials, potentials[1:]))


def _future_key(entry: Dict[str, Any]) -> str:
    return repr([sorted(event) for event in entry.get("future", [])])


def compare_responses(kato: Dict[str, Any], ours: Dict[str, Any], ensemble_ambiguous: bool = False) -> Comparison:
    """Compares KATO's response (the reference) with kato_gpu's for the same request.

    ``ensemble_ambiguous``: KATO's pruning cut fell inside a tie for this request (see
    :func:`kato_gpu.bench.kato_oracle.pruning_cut_tied`), or for the request whose
    ``future_potentials`` this response repeats, so the ensemble KATO kept is its own choice."""
    out = Comparison("exact")
    for key in (kato.keys() | ours.keys()) - IGNORED_RESPONSE_FIELDS - {"predictions", "future_potentials"}:
        if not _same(kato.get(key), ours.get(key)):
            out.problems.append(f"response.{key}: {kato.get(key)!r} != {ours.get(key)!r}")
    k_list, o_list = kato.get("predictions") or [], ours.get("predictions") or []
    for side, plist in (("KATO", k_list), ("kato_gpu", o_list)):
        if not _sorted_by_potential(plist):
            out.problems.append(f"{side}'s predictions are not sorted by potential")
    k_by, o_by = {p["name"]: p for p in k_list}, {p["name"]: p for p in o_list}
    if len(k_by) != len(k_list) or len(o_by) != len(o_list):
        out.problems.append("a name appears twice in one response")
    terms = _terms(kato, ours)
    common = [n for n in k_by if n in o_by]
    only = sorted(k_by.keys() ^ o_by.keys())
    if ensemble_ambiguous:
        out.outcome = "ambiguous"
        for name in common:
            _compare_prediction(name, k_by[name], o_by[name], terms, ENSEMBLE_DEPENDENT, out)
    elif only:
        if not _tied_cut(k_by, o_by, only, terms):
            out.problems.append(f"kept names differ without a tie at a cut: {only[:6]}")
            out.outcome = "different"
            return out
        out.outcome = "ambiguous"
        for name in common:
            _compare_prediction(name, k_by[name], o_by[name], terms, ENSEMBLE_DEPENDENT, out)
    else:
        for name in common:
            _compare_prediction(name, k_by[name], o_by[name], terms, frozenset(), out)
        _compare_futures(kato.get("future_potentials"), ours.get("future_potentials"), terms, out)
    if out.problems:
        out.outcome = "different"
    return out


def _tied_cut(k_by: Dict[str, Dict[str, Any]], o_by: Dict[str, Dict[str, Any]], only: List[str], terms: int) -> bool:
    """Whether every name kept by one side alone sits at the final cut (``max_predictions`` by
    potential) that the other side made inside a tie: its potential equals, within the rounding
    bound, the other side's lowest. (Ties at the pruning cut are the caller's to detect.)"""
    for name in only:
        side, other = (k_by, o_by) if name in k_by else (o_by, k_by)
        if not other:
            return False
        lowest = min(p["potential"] for p in other.values())
        if not _within_sum_rounding(side[name]["potential"], lowest, terms):
            return False
    return True


def _compare_futures(kato: Optional[List[Dict[str, Any]]], ours: Optional[List[Dict[str, Any]]], terms: int, out):
    if kato is None or ours is None:
        if kato is not ours:
            out.problems.append(f"future_potentials: {kato!r} != {ours!r}")
        return
    if len(kato) != len(ours):
        out.problems.append(f"future_potentials: {len(kato)} entries != {len(ours)}")
        return
    k_by, o_by = {_future_key(f): f for f in kato}, {_future_key(f): f for f in ours}
    if k_by.keys() != o_by.keys():
        out.problems.append("future_potentials: different futures")
        return
    for key, entry in k_by.items():
        other = o_by[key]
        if entry.keys() != other.keys():
            out.problems.append(f"future_potentials[{key}]: keys differ")
            continue
        for field_name in entry:
            a, b = entry[field_name], other[field_name]
            if field_name in FUTURE_ORDER_DEPENDENT:
                if not _same(a, b):
                    if _within_sum_rounding(a, b, terms):
                        out.order_dependent_differences += 1
                    else:
                        out.problems.append(f"future_potentials[{key}].{field_name}: {a!r} != {b!r}")
            elif field_name != "future" and not _same(a, b):
                out.problems.append(f"future_potentials[{key}].{field_name}: {a!r} != {b!r}")
