"""``ShardedMatcher``: one matcher spread over Ray actors, answering exactly as one matcher would.

Each shard is a Ray actor holding a :class:`~kato_gpu.HybridGPUMatcher`; a pattern lives on the
shard :func:`shard_of` its name (a stable hash, the same in every process and run). A query is
sent to every shard, each answers its own result in result order (similarity descending, then
name ascending) already cut to the limit, and the driver merges them with
``_native.merge_packed`` (``merge_ranked`` for prediction tuples), the core's order rule, keeping
the first ``max_predictions``: the
global first K are among each shard's first K, so the merged result is the one a single matcher
holding every pattern returns, float for float.

Vocabulary: every shard has its own. Similarities (difflib and LCS alike) and KATO's prediction
fields depend only on which symbols are equal, never on their ids, and a state's symbol that a
shard does not know matches none of its patterns, exactly as a symbol no pattern holds matches
nothing in one matcher; so per-shard vocabularies give identical results with no coordination on
the learning path (no vocabulary owner to ask, nothing to agree). The cost is memory: a symbol is
stored once per shard holding a pattern with it (``get_stats()["vocab_size_sum"]`` against the
distinct count; docs/SCALING.md has the figures). ``add_patterns_csr`` takes ids of the driver's
own ``encoder`` and sends each shard the symbols of the ids it uses.

Faults: a shard's learns and removes are appended to a replay log in its directory under
``state_dir`` once applied; ``save`` and ``checkpoint`` start a new log from a snapshot. Ray
restarts a dead actor (``max_restarts``) and its constructor loads the last snapshot and replays
the log before the actor takes any call, so an answer always comes from a complete shard. A
call that was in flight when the shard died is retried (``on_shard_failure="wait"``, up to
``recovery_timeout_s``) or raises :class:`ShardUnavailableError` (``"raise"``); a learn retried
is applied once (each carries an id the shard remembers). See docs/SCALING.md.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import shutil
import struct
import tempfile
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from . import _native
from .config import GPUConfig

__all__ = [
    "MANIFEST_NAME",
    "ShardUnavailableError",
    "ShardedMatchResult",
    "ShardedMatcher",
    "shard_of",
]

#: The manifest of a sharded snapshot directory (``ShardedMatcher.save``).
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "kato_gpu.sharded"
MANIFEST_VERSION = 1
#: Placement rule, recorded in the manifest: a snapshot is only loaded under the same rule.
PLACEMENT = "blake2b-64-le(utf8(name)) % num_shards"
#: Learn ids a shard remembers (with their results), so that a retried learn is applied once.
_REMEMBERED_OPS = 4096
_FRAME = struct.Struct("<I")

PathLike = Union[str, "os.PathLike[str]"]


class ShardUnavailableError(RuntimeError):
    """A shard actor died or is being restarted and the call did not complete; nothing partial
    was returned. With ``on_shard_failure="wait"`` only after ``recovery_timeout_s``."""


def shard_of(name: str, num_shards: int) -> int:
    """The shard of pattern ``name``: the first 8 bytes of BLAKE2b of its UTF-8 bytes, little
    endian, modulo ``num_shards``. Stable across processes, runs and platforms (unlike
    ``hash()``, which Python salts per process)."""
    if not isinstance(name, str):
        raise TypeError(f"pattern_name must be a str, got {type(name).__name__}")
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_shards


class ShardedMatchResult:
    """The merged matches of one query, in result order: ``MatchResult``'s interface."""

    __slots__ = ("similarities", "names")

    def __init__(self, similarities: np.ndarray, names: List[str]) -> None:
        #: float64 array, in result order.
        self.similarities = similarities
        #: Pattern names, in result order.
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def to_dicts(self) -> List[Dict[str, Union[str, float]]]:
        """``[{'pattern_name': ..., 'similarity': ...}, ...]``, KATO's result shape."""
        return [{"pattern_name": name, "similarity": sim} for name, sim in zip(self.names, self.similarities.tolist())]

    def __repr__(self) -> str:
        return f"ShardedMatchResult(matches={len(self.names)})"


def _merge(parts: Sequence[Tuple[np.ndarray, Tuple[bytes, np.ndarray]]], limit: Optional[int]) -> ShardedMatchResult:
    """One result from the shards' results (names packed), by the core's order rule."""
    sims, names = _native.merge_packed([p[0] for p in parts], [p[1] for p in parts], limit)
    return ShardedMatchResult(sims, names)


# ------------------------------------------------------------------------------------ the shard
class _ShardLog:
    """The replay log: length-prefixed pickles, appended after each applied change. A record cut
    short by a crash is the end of the log (the change it held was never acknowledged)."""

    def __init__(self, path: str, durable: bool) -> None:
        self.path = path
        self.durable = durable
        self._fh = open(path, "ab")

    def append(self, record: Tuple[Any, ...]) -> None:
        data = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        self._fh.write(_FRAME.pack(len(data)) + data)
        self._fh.flush()
        if self.durable:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    @staticmethod
    def read(path: str) -> Iterator[Tuple[Any, ...]]:
        if not os.path.exists(path):
            return
        with open(path, "rb") as fh:
            while True:
                head = fh.read(_FRAME.size)
                if len(head) < _FRAME.size:
                    return
                (size,) = _FRAME.unpack(head)
                data = fh.read(size)
                if len(data) < size:
                    return
                yield pickle.loads(data)


def _write_json_atomic(path: str, value: Dict[str, Any]) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class _Ok:
    """A shard's answer; an expected error (bad input) travels back as the exception itself, so
    the driver raises it unwrapped."""

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        self.value = value
        self.error = error


_USER_ERRORS = (TypeError, ValueError, KeyError, FileNotFoundError)


class _Shard:
    """One shard: a matcher, its replay log and its recovery state (``state.json`` in
    ``shard_dir``). Ray runs the constructor again after a restart: it then recovers."""

    def __init__(
        self,
        index: int,
        config: GPUConfig,
        shard_dir: str,
        initial_snapshot: Optional[str],
        durable: bool,
    ) -> None:
        from .encoder import SymbolVocabularyEncoder
        from .matcher import HybridGPUMatcher

        self.index = index
        self.config = config
        self.dir = shard_dir
        self.durable = durable
        self._lock = threading.Lock()
        self._done: "collections.OrderedDict[str, Any]" = collections.OrderedDict()
        self._state_path = os.path.join(shard_dir, "state.json")
        os.makedirs(shard_dir, exist_ok=True)
        if os.path.exists(self._state_path):
            with open(self._state_path, encoding="utf-8") as fh:
                self.state = json.load(fh)
            self.state["starts"] += 1
            base = self.state["base"]
            self.matcher = (
                HybridGPUMatcher.load(os.path.join(shard_dir, base), config)
                if base
                else HybridGPUMatcher(SymbolVocabularyEncoder(None), config)
            )
            replayed = 0
            for record in _ShardLog.read(os.path.join(shard_dir, self.state["log"])):
                self._replay(record)
                replayed += 1
            self.state["replayed"] = replayed
        else:
            self.state = {"starts": 1, "generation": 0, "base": None, "log": "log-0000.bin", "replayed": 0}
            if initial_snapshot is not None:
                base = "base-0000.snap"
                _link_or_copy(initial_snapshot, os.path.join(shard_dir, base))
                self.state["base"] = base
                self.matcher = HybridGPUMatcher.load(os.path.join(shard_dir, base), config)
            else:
                self.matcher = HybridGPUMatcher(SymbolVocabularyEncoder(None), config)
        _write_json_atomic(self._state_path, self.state)
        self._log = _ShardLog(os.path.join(shard_dir, self.state["log"]), durable)

    # -- changes
    def _apply(self, method: str, args: Tuple[Any, ...]) -> Any:
        if method == "add_patterns_symbols":
            names, symbols, local, offsets, promote = args
            ids = np.asarray(self.matcher.encoder.encode_ids(symbols), dtype=np.int64)
            return self.matcher.add_patterns_csr(names, ids[np.asarray(local, dtype=np.int64)], offsets, promote)
        return getattr(self.matcher, method)(*args)

    def _remember(self, op_id: str, result: Any) -> None:
        self._done[op_id] = result
        while len(self._done) > _REMEMBERED_OPS:
            self._done.popitem(last=False)

    def _replay(self, record: Tuple[Any, ...]) -> None:
        op_id, method, args, result = record
        if method == "_remembered":
            for key, value in args:
                self._remember(key, value)
            return
        self._apply(method, args)
        self._remember(op_id, result)

    def change(self, op_id: str, method: str, args: Tuple[Any, ...]) -> _Ok:
        """Applies a learn/remove/clear once: a retried ``op_id`` answers the first result."""
        with self._lock:
            if op_id in self._done:
                return _Ok(self._done[op_id])
            try:
                result = self._apply(method, args)
            except _USER_ERRORS as exc:
                return _Ok(error=exc)
            # Logged after it is applied: a change that failed is not replayed, and one cut short
            # by a crash was never acknowledged (the driver retries it).
            self._log.append((op_id, method, args, result))
            self._remember(op_id, result)
            return _Ok(result)

    # -- snapshots
    def save(self, path: Optional[str]) -> _Ok:
        """Writes a snapshot (to ``path``, or into the shard directory) and makes it the base of
        recovery, with a new, empty log."""
        with self._lock:
            generation = self.state["generation"] + 1
            base = f"base-{generation:04d}.snap"
            base_path = os.path.join(self.dir, base)
            try:
                if path is None:
                    self.matcher.save(base_path)
                else:
                    self.matcher.save(path)
                    _link_or_copy(path, base_path)
            except _USER_ERRORS as exc:
                return _Ok(error=exc)
            log = f"log-{generation:04d}.bin"
            new_log = _ShardLog(os.path.join(self.dir, log), self.durable)
            new_log.append((None, "_remembered", tuple(self._done.items()), None))
            old = (self.state["base"], self.state["log"])
            self.state.update(generation=generation, base=base, log=log)
            _write_json_atomic(self._state_path, self.state)
            self._log.close()
            self._log = new_log
            for name in old:
                if name:
                    try:
                        os.remove(os.path.join(self.dir, name))
                    except FileNotFoundError:
                        pass
            return _Ok({"patterns": len(self.matcher), "bytes": os.path.getsize(base_path)})

    # -- queries
    def arrays(self, states: List[Sequence[str]], threshold: float, limit: Optional[int]) -> _Ok:
        try:
            results = self.matcher.match_patterns_batch_arrays(states, threshold, limit)
        except _USER_ERRORS as exc:
            return _Ok(error=exc)
        # Names packed (one bytes object and the end offsets): pickling and unpickling a list of
        # Python strings would cost more than the scan of a large result.
        return _Ok([(r.similarities, r._names_packed()) for r in results])

    def call(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> _Ok:
        """A call that changes no pattern (queries, lookups, statistics, promotion)."""
        try:
            return _Ok(getattr(self.matcher, method)(*args, **kwargs))
        except _USER_ERRORS as exc:
            return _Ok(error=exc)

    def _crash(self, marker: Optional[str] = None) -> _Ok:
        """Test hook: the actor's process dies under this call, as a crash would (once per
        ``marker`` file when one is given: a call sent again then succeeds)."""
        if marker is not None:
            if os.path.exists(marker):
                return _Ok(True)
            open(marker, "w").close()
        os._exit(1)

    def info(self) -> Dict[str, Any]:
        stats = self.matcher.get_stats()
        return {"index": self.index, "pid": os.getpid(), "state": dict(self.state), "stats": stats}


# ------------------------------------------------------------------------------------ the driver
def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("kato_gpu.distributed needs Ray: pip install 'kato-gpu[distributed]' (or 'ray')") from None
    return ray


class _ChangeGate:
    """Changes through this driver run concurrently with each other; ``save`` waits for those in
    flight and holds new ones, so the shards' snapshots are one point in time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._changing = 0
        self._saving = False

    def change(self) -> "_Held":
        with self._cond:
            while self._saving:
                self._cond.wait()
            self._changing += 1
        return _Held(self, False)

    def save(self) -> "_Held":
        with self._cond:
            while self._saving:
                self._cond.wait()
            self._saving = True
            while self._changing:
                self._cond.wait()
        return _Held(self, True)

    def release(self, saving: bool) -> None:
        with self._cond:
            if saving:
                self._saving = False
            else:
                self._changing -= 1
            self._cond.notify_all()


class _Held:
    def __init__(self, gate: _ChangeGate, saving: bool) -> None:
        self._gate, self._saving = gate, saving

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        self._gate.release(self._saving)


ON_SHARD_FAILURE = ("wait", "raise")


class ShardedMatcher:
    """A matcher over ``num_shards`` Ray actors with ``HybridGPUMatcher``'s Python API, whose
    results equal those of one matcher holding every pattern.

    Args:
        num_shards: number of shard actors (>= 1).
        config: the ``GPUConfig`` of every shard (``metric``, ``autojunk``, ...); ``GPUConfig()``
            when None.
        ray_address: the cluster to join (``ray.init(address=...)``) when Ray is not initialised
            in this process yet; None starts (or finds, through ``RAY_ADDRESS``) a local one.
        num_gpus_per_shard: GPUs Ray reserves for each shard actor (1: one shard per GPU; Ray
            sets the actor's ``CUDA_VISIBLE_DEVICES``). 0 on a CPU cluster.
        num_cpus_per_shard: CPUs Ray reserves for each shard actor (0: placement ignores CPUs;
            every shard still uses all cores of its node for a query).
        state_dir: where each shard keeps its replay log and recovery snapshot (``shard-NNNN/``);
            must be empty or absent; a new temporary directory when None (removed by ``close``).
            On a multi-node cluster a path every node sees (a restarted actor may land
            elsewhere).
        on_shard_failure: ``"wait"``: a call interrupted by a shard's death is sent again once
            Ray has restarted and recovered the shard (up to ``recovery_timeout_s``, then
            ``ShardUnavailableError``); ``"raise"``: it raises ``ShardUnavailableError`` at once,
            as does any call to a shard known to be recovering.
        recovery_timeout_s: see ``on_shard_failure``.
        max_restarts: Ray's ``max_restarts`` of each actor (-1: without limit).
        max_concurrency: calls one shard actor serves at once (queries run in parallel; changes
            are serialised by the shard).
        durable: fsync the replay log after each change (survives the loss of the node, given a
            durable ``state_dir``); without it a change survives the death of the actor's process.
    """

    def __init__(
        self,
        num_shards: int,
        config: Optional[GPUConfig] = None,
        *,
        ray_address: Optional[str] = None,
        num_gpus_per_shard: float = 0,
        num_cpus_per_shard: float = 0,
        state_dir: Optional[PathLike] = None,
        on_shard_failure: str = "wait",
        recovery_timeout_s: float = 120.0,
        max_restarts: int = -1,
        max_concurrency: int = 4,
        durable: bool = False,
        _snapshots: Optional[Sequence[str]] = None,
    ) -> None:
        if isinstance(num_shards, bool) or not isinstance(num_shards, int):
            raise TypeError(f"num_shards must be an int, got {type(num_shards).__name__}")
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        config = GPUConfig() if config is None else config
        if not isinstance(config, GPUConfig):
            raise TypeError(f"config must be a GPUConfig, got {type(config).__name__}")
        config.validate()
        if on_shard_failure not in ON_SHARD_FAILURE:
            raise ValueError(f"on_shard_failure must be one of {ON_SHARD_FAILURE}, got {on_shard_failure!r}")
        for what, value in (
            ("num_gpus_per_shard", num_gpus_per_shard),
            ("num_cpus_per_shard", num_cpus_per_shard),
            ("recovery_timeout_s", recovery_timeout_s),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{what} must be a number >= 0, got {value!r}")
        ray = _ray()
        if state_dir is None:
            self.state_dir = tempfile.mkdtemp(prefix="kato_gpu_shards_")
            # Removed with this object or at exit, whichever comes first (``close`` does it at once).
            self._cleanup: Optional[weakref.finalize] = weakref.finalize(
                self, shutil.rmtree, self.state_dir, ignore_errors=True
            )
        else:
            self._cleanup = None
            self.state_dir = os.path.abspath(os.fspath(state_dir))
            if os.path.exists(self.state_dir) and os.listdir(self.state_dir):
                raise ValueError(f"state_dir {self.state_dir} is not empty (it may hold another matcher's shards)")
            os.makedirs(self.state_dir, exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
        self.config = config
        self.num_shards = num_shards
        self.on_shard_failure = on_shard_failure
        self.recovery_timeout_s = float(recovery_timeout_s)
        #: Names the ids of ``add_patterns_csr`` (the driver's own vocabulary; the shards' differ).
        from .encoder import SymbolVocabularyEncoder

        self.encoder = SymbolVocabularyEncoder(None)
        self._gate = _ChangeGate()
        self._recovering: set = set()
        remote = ray.remote(_Shard).options(
            num_cpus=num_cpus_per_shard,
            num_gpus=num_gpus_per_shard,
            max_restarts=max_restarts,
            max_task_retries=0,
            max_concurrency=max_concurrency,
        )
        #: The shard actors' handles, shard i at index i (for operators and tests).
        self.actors = [
            remote.remote(
                i,
                config,
                os.path.join(self.state_dir, f"shard-{i:04d}"),
                None if _snapshots is None else _snapshots[i],
                durable,
            )
            for i in range(num_shards)
        ]
        try:
            self._run(range(num_shards), lambda i: self.actors[i].info.remote())
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ calls
    def _run(self, shards: Sequence[int], submit: Callable[[int], Any], raw: bool = False) -> List[Any]:
        """``submit(i)`` (a call to ``self.actors[i]``) for each shard i; their answers in order
        (the ``_Ok`` envelopes with ``raw``, else the values, raising the first shard's error).
        A shard that dies under a call: the call is sent again or ShardUnavailableError
        (``on_shard_failure``). Never a partial answer."""
        ray = _ray()
        # ActorUnavailableError: the actor is restarting or unreachable (not a RayActorError in every
        # Ray release).
        dead: Tuple[Type[BaseException], ...] = (ray.exceptions.RayActorError,) + tuple(
            getattr(ray.exceptions, name) for name in ("ActorUnavailableError",) if hasattr(ray.exceptions, name)
        )
        shards = list(shards)
        if self.on_shard_failure == "raise":
            for i in shards:
                if i in self._recovering:
                    self._check_recovered(i)
        pending = {i: submit(i) for i in shards}
        results: Dict[int, Any] = {}
        deadline: Optional[float] = None
        while pending:
            for i in list(pending):
                try:
                    out = ray.get(pending.pop(i))
                except dead as exc:
                    if getattr(exc, "actor_init_failed", False):
                        # The shard's constructor raised (a bad configuration, no GPU, a damaged
                        # snapshot): Ray does not restart it, so waiting would not help.
                        raise ShardUnavailableError(f"shard {i} failed to start: {exc}") from exc
                    self._recovering.add(i)
                    if self.on_shard_failure == "raise":
                        raise ShardUnavailableError(
                            f"shard {i} died during the call and is being restarted; retry later"
                        ) from exc
                    now = time.monotonic()
                    deadline = now + self.recovery_timeout_s if deadline is None else deadline
                    if now > deadline:
                        raise ShardUnavailableError(
                            f"shard {i} did not recover within recovery_timeout_s={self.recovery_timeout_s}"
                        ) from exc
                    time.sleep(0.05)
                    pending[i] = submit(i)
                    continue
                self._recovering.discard(i)
                results[i] = out
        outs = [results[i] for i in shards]
        if raw:
            return outs
        for out in outs:
            if isinstance(out, _Ok) and out.error is not None:
                raise out.error
        return [out.value if isinstance(out, _Ok) else out for out in outs]

    def _check_recovered(self, i: int) -> None:
        ray = _ray()
        try:
            ray.get(self.actors[i].info.remote(), timeout=1.0)
        except Exception as exc:
            raise ShardUnavailableError(f"shard {i} is recovering; retry later") from exc
        self._recovering.discard(i)

    def _change(self, per_shard: Dict[int, Tuple[str, Tuple[Any, ...]]]) -> List[Any]:
        ops = {i: (uuid.uuid4().hex, method, args) for i, (method, args) in per_shard.items()}
        with self._gate.change():
            return self._run(list(ops), lambda i: self.actors[i].change.remote(*ops[i]))

    def _query(self, method: str, *args: Any, **kwargs: Any) -> List[Any]:
        return self._run(range(self.num_shards), lambda i: self.actors[i].call.remote(method, args, kwargs))

    def _split(self, names: Sequence[str]) -> Dict[int, List[int]]:
        groups: Dict[int, List[int]] = {}
        for k, name in enumerate(names):
            groups.setdefault(shard_of(name, self.num_shards), []).append(k)
        return groups

    # ------------------------------------------------------------------ learning and removing
    def add_new_pattern(self, pattern_name: str, pattern_sequence: Sequence[Sequence[str]]) -> bool:
        """Learns one pattern on its shard. False (nothing changed) when the name is stored."""
        return self._change(
            {shard_of(pattern_name, self.num_shards): ("add_new_pattern", (pattern_name, pattern_sequence))}
        )[0]

    def add_pattern_events(self, name: str, events: Sequence[Sequence[str]]) -> bool:
        """``add_new_pattern`` keeping the events (``pattern_events`` gives them back)."""
        return self._change({shard_of(name, self.num_shards): ("add_pattern_events", (name, events))})[0]

    def _add_many(self, method: str, names: Sequence[str], lists: Sequence[Any], promote: bool) -> int:
        names = self._names(names)
        lists = list(lists)
        if len(lists) != len(names):
            raise ValueError(f"{len(names)} names but {len(lists)} patterns")
        groups = self._split(names)
        per_shard = {i: (method, ([names[k] for k in ks], [lists[k] for k in ks], promote)) for i, ks in groups.items()}
        return self._add_all_or_none(per_shard, groups, names)

    def _names(self, names: Sequence[str]) -> List[str]:
        if isinstance(names, (str, bytes)):
            raise TypeError("names must be a sequence of str, not a single string")
        names = list(names)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"names must be str, got {type(name).__name__}")
        if len(set(names)) != len(names):
            seen: set = set()
            twice = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
            raise ValueError(f"pattern name {twice!r} is given twice")
        return names

    def _add_all_or_none(
        self, per_shard: Dict[int, Tuple[str, Tuple[Any, ...]]], groups: Dict[int, List[int]], names: List[str]
    ) -> int:
        """Sends each shard its part; if one refuses, the parts the others took are removed again
        (all or none, as one matcher)."""
        ops = {i: (uuid.uuid4().hex, method, args) for i, (method, args) in per_shard.items()}
        with self._gate.change():
            shards = list(ops)
            outcomes = self._run(shards, lambda i: self.actors[i].change.remote(*ops[i]), raw=True)
            failed = [out.error for out in outcomes if out.error is not None]
            if not failed:
                return sum(int(out.value or 0) for out in outcomes)
            undo = {i: [names[k] for k in groups[i]] for i, out in zip(shards, outcomes) if out.error is None}
            for i, taken in undo.items():
                for name in taken:
                    self._run([i], self._remover(name))
            raise failed[0]

    def _remover(self, name: str) -> Callable[[int], Any]:
        op = (uuid.uuid4().hex, "remove_pattern", (name,))
        return lambda i: self.actors[i].change.remote(*op)

    def add_patterns(
        self, names: Sequence[str], events_list: Sequence[Sequence[Sequence[str]]], promote: bool = True
    ) -> int:
        """Learns many patterns, all or none (ValueError on a name given twice or already stored)."""
        return self._add_many("add_patterns", names, events_list, promote)

    def add_patterns_events(
        self, names: Sequence[str], events_lists: Sequence[Sequence[Sequence[str]]], promote: bool = True
    ) -> int:
        """``add_patterns`` keeping the events."""
        return self._add_many("add_patterns_events", names, events_lists, promote)

    def add_patterns_csr(self, names: Sequence[str], tokens: Any, offsets: Any, promote: bool = True) -> int:
        """Bulk load from arrays: pattern k is ``tokens[offsets[k]:offsets[k+1]]``, ids of this
        matcher's ``encoder`` (``encoder.encode_ids(symbols)``). All or none."""
        names = self._names(names)
        tokens = np.asarray(tokens)
        offsets = np.asarray(offsets)
        for what, array in (("tokens", tokens), ("offsets", offsets)):
            if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
                raise TypeError(f"{what} must be a one-dimensional integer array")
        tokens = tokens.astype(np.int64, copy=False)
        offsets = offsets.astype(np.int64, copy=False)
        if len(offsets) != len(names) + 1:
            raise ValueError(f"invalid pattern layout: {len(offsets)} offsets for {len(names)} names")
        if len(offsets) and (offsets[0] < 0 or offsets[-1] > len(tokens) or np.any(np.diff(offsets) < 0)):
            raise ValueError("invalid pattern layout: offsets must rise from >= 0 to at most len(tokens)")
        next_id = self.encoder.next_id
        if tokens.size and (tokens.min() < 0 or tokens.max() >= next_id):
            bad = int(tokens[(tokens < 0) | (tokens >= next_id)][0])
            raise ValueError(f"token id {bad} is not an id of this matcher's encoder (ids in [0, {next_id}))")
        lengths = np.diff(offsets)
        groups = self._split(names)
        per_shard: Dict[int, Tuple[str, Tuple[Any, ...]]] = {}
        for i, ks in groups.items():
            sel = np.asarray(ks, dtype=np.int64)
            lens = lengths[sel]
            new_offsets = np.zeros(len(sel) + 1, dtype=np.int64)
            np.cumsum(lens, out=new_offsets[1:])
            # Position j of the shard's tokens is token offsets[k] + (j - new_offsets[k]).
            shift = np.repeat(offsets[:-1][sel] - new_offsets[:-1], lens)
            shard_tokens = tokens[np.arange(int(new_offsets[-1]), dtype=np.int64) + shift]
            used, local = np.unique(shard_tokens, return_inverse=True)
            symbols = self.encoder.decode_sequence(used.tolist())
            per_shard[i] = (
                "add_patterns_symbols",
                ([names[k] for k in ks], symbols, local.astype(np.int32), new_offsets, promote),
            )
        return self._add_all_or_none(per_shard, groups, names)

    def remove_pattern(self, pattern_name: str) -> bool:
        """Removes a pattern from its shard; False when it is not stored."""
        return self._change({shard_of(pattern_name, self.num_shards): ("remove_pattern", (pattern_name,))})[0]

    def clear_all(self) -> None:
        """Removes every pattern from every shard."""
        self._change({i: ("clear_all", ()) for i in range(self.num_shards)})

    # ------------------------------------------------------------------ queries
    def match_patterns_batch_arrays(
        self, states: Sequence[Sequence[str]], threshold: float, max_predictions: Optional[int] = 100
    ) -> List[ShardedMatchResult]:
        """One result per state, each as one matcher holding every pattern returns it."""
        states = list(states)
        # Serialised once into the object store, not once per shard.
        payload: Any = _ray().put(states) if len(states) > 1 and self.num_shards > 1 else states
        answers = self._run(
            range(self.num_shards), lambda i: self.actors[i].arrays.remote(payload, threshold, max_predictions)
        )
        return [_merge([answer[q] for answer in answers], max_predictions) for q in range(len(answers[0]))]

    def match_patterns_arrays(
        self, state: Sequence[str], threshold: float, max_predictions: Optional[int] = 100
    ) -> ShardedMatchResult:
        """Patterns with similarity ``>= threshold``, in result order, the first
        ``max_predictions`` (every one when None)."""
        if isinstance(state, (str, bytes)):
            raise TypeError("state must be a sequence of str, not a single string")
        return self.match_patterns_batch_arrays([state], threshold, max_predictions)[0]

    def match_patterns(
        self, state: Sequence[str], threshold: float, max_predictions: Optional[int] = 100
    ) -> List[Dict[str, Union[str, float]]]:
        """``match_patterns_arrays`` as KATO's list of dicts."""
        return self.match_patterns_arrays(state, threshold, max_predictions).to_dicts()

    def match_patterns_batch(
        self, states: Sequence[Sequence[str]], threshold: float, max_predictions: Optional[int] = 100
    ) -> List[List[Dict[str, Union[str, float]]]]:
        return [r.to_dicts() for r in self.match_patterns_batch_arrays(states, threshold, max_predictions)]

    def match_predictions(
        self, state: Sequence[str], threshold: float, max_predictions: Optional[int] = None, **options: Any
    ) -> List[tuple]:
        """KATO's prediction tuples (``HybridGPUMatcher.match_predictions``, same keyword options),
        merged in result order by the tuples' similarity (field 7) and name (field 0)."""
        answers = self._query("match_predictions", state, threshold, max_predictions, **options)
        parts = [(np.fromiter((t[7] for t in a), dtype=np.float64, count=len(a)), [t[0] for t in a]) for a in answers]
        part, position = _native.merge_ranked([p[0] for p in parts], [p[1] for p in parts], max_predictions)
        return [answers[p][i] for p, i in zip(part.tolist(), position.tolist())]

    # ------------------------------------------------------------------ lookups and statistics
    def _owner(self, name: str) -> int:
        return shard_of(name, self.num_shards)

    def _ask(self, name: str, method: str) -> Any:
        i = self._owner(name)
        return self._run([i], lambda i: self.actors[i].call.remote(method, (name,), {}))[0]

    def __len__(self) -> int:
        return sum(self._query("__len__"))

    def __contains__(self, pattern_name: object) -> bool:
        return isinstance(pattern_name, str) and bool(self._ask(pattern_name, "__contains__"))

    def pattern_names(self) -> List[str]:
        """Every stored name, sorted (result order of equal similarities)."""
        return sorted(name for names in self._query("pattern_names") for name in names)

    def pattern_events(self, name: str) -> Optional[List[List[str]]]:
        return self._ask(name, "pattern_events")

    def pattern_symbols(self, pattern_name: str) -> Optional[List[str]]:
        return self._ask(pattern_name, "pattern_symbols")

    def sync_cpu_to_gpu(self) -> int:
        """Promotes every shard's recent tier; the number of patterns promoted."""
        return sum(self._query("sync_cpu_to_gpu"))

    def shard_info(self) -> List[Dict[str, Any]]:
        """Per shard: its process id, recovery state (``starts``: 1 + restarts, ``replayed``: log
        records replayed at the last start) and ``get_stats()``."""
        return self._run(range(self.num_shards), lambda i: self.actors[i].info.remote())

    def get_stats(self) -> Dict[str, Any]:
        """One matcher's ``get_stats`` keys, summed over the shards (``use_gpu``: every shard on
        a GPU), plus ``num_shards``, ``vocab_size_sum`` (symbols stored over all shards: a symbol
        counts once per shard that holds it; ``vocab_size`` is the distinct count only when
        there is one shard, otherwise the largest shard's) and ``shards`` (each one's stats)."""
        shards = [info["stats"] for info in self.shard_info()]
        summed = (
            "gpu_tier_patterns",
            "cpu_tier_patterns",
            "bulk_tier_patterns",
            "recent_tier_patterns",
            "total_patterns",
            "stored_symbols",
            "memory_bytes",
            "gpu_queries",
            "cpu_queries",
            "gpu_long_state_cpu_queries",
            "gpu_fallbacks",
            "patterns_learned",
            "syncs_triggered",
        )
        stats: Dict[str, Any] = {key: sum(s[key] for s in shards) for key in summed}
        stats.update(
            use_gpu=all(s["use_gpu"] for s in shards),
            gpu_unavailable_reason=next((s["gpu_unavailable_reason"] for s in shards if not s["use_gpu"]), None),
            metric=self.config.metric,
            autojunk=self.config.autojunk,
            bulk_tier_device="gpu" if all(s["use_gpu"] for s in shards) else "cpu",
            vocab_size=max(s["vocab_size"] for s in shards),
            vocab_size_sum=sum(s["vocab_size"] for s in shards),
            num_shards=self.num_shards,
            shards=shards,
        )
        return stats

    # ------------------------------------------------------------------ snapshots
    def checkpoint(self) -> None:
        """Each shard snapshots itself into ``state_dir`` and starts an empty replay log (bounds
        the log and so the time a restarted shard takes to recover)."""
        with self._gate.save():
            self._run(range(self.num_shards), lambda i: self.actors[i].save.remote(None))

    def save(self, path: PathLike) -> None:
        """Writes ``path/shard-NNNN.snap`` (one ``HybridGPUMatcher`` snapshot per shard, written
        by the shard: on a multi-node cluster ``path`` must be shared) and then
        ``path/manifest.json``; also a checkpoint (the snapshots become the recovery base).
        Learns through this object wait while it runs, so the shards are one point in time."""
        path = os.path.abspath(os.fspath(path))
        os.makedirs(path, exist_ok=True)
        files = [f"shard-{i:04d}.snap" for i in range(self.num_shards)]
        with self._gate.save():
            saved = self._run(
                range(self.num_shards), lambda i: self.actors[i].save.remote(os.path.join(path, files[i]))
            )
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "placement": PLACEMENT,
            "num_shards": self.num_shards,
            "metric": self.config.metric,
            "autojunk": self.config.autojunk,
            "max_pattern_length": self.config.max_pattern_length,
            "total_patterns": sum(s["patterns"] for s in saved),
            "shards": [{"file": f, "patterns": s["patterns"], "bytes": s["bytes"]} for f, s in zip(files, saved)],
        }
        _write_json_atomic(os.path.join(path, MANIFEST_NAME), manifest)

    @classmethod
    def load(cls, path: PathLike, config: Optional[GPUConfig] = None, **options: Any) -> "ShardedMatcher":
        """A sharded matcher from a directory written by ``save``, with as many shards as it was
        saved with; ``options`` are the constructor's keywords (``ray_address``, ...). ``config``
        defaults to ``GPUConfig()`` with the saved ``metric``, ``autojunk`` and
        ``max_pattern_length``. ValueError for a missing or foreign manifest or a missing shard."""
        import dataclasses

        path = os.path.abspath(os.fspath(path))
        manifest_path = os.path.join(path, MANIFEST_NAME)
        if not os.path.exists(manifest_path):
            raise FileNotFoundError(f"no {MANIFEST_NAME} in {path}")
        try:
            with open(manifest_path, encoding="utf-8") as fh:
                manifest = json.load(fh)
        except ValueError as exc:
            raise ValueError(f"{manifest_path} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{manifest_path} is not a kato_gpu sharded snapshot manifest")
        if manifest.get("version") != MANIFEST_VERSION or manifest.get("placement") != PLACEMENT:
            raise ValueError(
                f"{manifest_path}: version {manifest.get('version')!r} / placement {manifest.get('placement')!r} "
                f"(this kato_gpu reads version {MANIFEST_VERSION}, placement {PLACEMENT!r})"
            )
        shards = manifest["shards"]
        if len(shards) != manifest["num_shards"]:
            raise ValueError(f"{manifest_path}: {len(shards)} shard entries for num_shards={manifest['num_shards']}")
        files = [os.path.join(path, s["file"]) for s in shards]
        for f in files:
            if not os.path.exists(f):
                raise ValueError(f"{manifest_path} names {f}, which is missing")
        if config is None:
            config = dataclasses.replace(
                GPUConfig(),
                metric=manifest["metric"],
                autojunk=manifest["autojunk"],
                max_pattern_length=manifest["max_pattern_length"],
            )
        elif (config.metric, config.autojunk) != (manifest["metric"], manifest["autojunk"]):
            raise ValueError(
                f"the snapshot was saved with metric={manifest['metric']!r} autojunk={manifest['autojunk']}, "
                f"the config has metric={config.metric!r} autojunk={config.autojunk}"
            )
        return cls(manifest["num_shards"], config, _snapshots=files, **options)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Ends the shard actors (for good) and removes ``state_dir`` when this object made it."""
        ray = _ray()
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors = []
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> "ShardedMatcher":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedMatcher(num_shards={self.num_shards}, metric={self.config.metric})"
