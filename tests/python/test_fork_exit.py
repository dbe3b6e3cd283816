"""Fork and exit safety, each case in its own Python process with a timeout: a forked child's
query returns (it once hung for ever on a lock or on rayon's pool, which has no threads in a child),
a multiprocessing fork pool works, a child's SyncManager reports no worker, and the interpreter
exits 0 while daemon threads are inside kato_gpu calls (it once aborted with SIGABRT)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")

#: Far above what any case takes; a hang is what these tests catch.
TIMEOUT_S = 120

PRELUDE = """
import os, random, sys, threading, time
from kato_gpu import GPUConfig, HybridGPUMatcher, SymbolVocabularyEncoder, SyncManager

def make(**config):
    config.setdefault("enable_background_sync", False)
    return HybridGPUMatcher(SymbolVocabularyEncoder(None), GPUConfig(enabled=False, metric="lcs", **config))

def load(matcher, count, length=12, seed=1):
    rng = random.Random(seed)
    names = [f"P{k:07d}" for k in range(count)]
    events = [[[f"s{rng.randrange(60)}" for _ in range(length)]] for _ in range(count)]
    matcher.add_patterns(names, events)

STATE = [f"s{k}" for k in range(0, 40, 3)]

def answer(matcher):
    return [(r["pattern_name"], r["similarity"].hex()) for r in matcher.match_patterns(STATE, 0.3, 50)]

def in_child(work, timeout=60):
    '''Forks; the child runs work() and exits 0 (1 on an exception); the parent reaps it and
    prints what happened, killing a child that has not finished within timeout seconds.'''
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
        except BaseException as exc:
            print("CHILD ERROR", type(exc).__name__, exc, flush=True)
            code = 1
        sys.stdout.flush()
        os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("CHILD EXIT", os.waitstatus_to_exitcode(status), flush=True)
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("CHILD HUNG", flush=True)
"""


def run_script(body: str) -> subprocess.CompletedProcess:
    script = PRELUDE + textwrap.dedent(body)
    env = {k: v for k, v in os.environ.items() if k != "KATO_GPU_API_TOKEN"}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=os.getcwd()
    )


def lines(proc: subprocess.CompletedProcess) -> list:
    return proc.stdout.splitlines()


def check(proc: subprocess.CompletedProcess, *expected: str) -> None:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    out = lines(proc)
    for line in expected:
        assert line in out, (line, proc.stdout, proc.stderr[-3000:])
    assert not any(line.startswith(("CHILD HUNG", "CHILD ERROR")) for line in out), proc.stdout


# ------------------------------------------------------------------ fork


def test_a_query_in_a_child_after_the_parent_queried():
    proc = run_script(
        """
        m = make()
        load(m, 5000)
        expected = answer(m)
        assert expected
        def work():
            assert answer(m) == expected
            print("CHILD SAME", flush=True)
        in_child(work)
        assert answer(m) == expected  # the parent is unaffected
        print("PARENT OK")
        """
    )
    check(proc, "CHILD SAME", "CHILD EXIT 0", "PARENT OK")


def test_a_query_in_a_child_after_a_bulk_load_and_learning():
    proc = run_script(
        """
        m = make(sync_threshold=10**9)
        load(m, 100_000, length=8)
        m.sync_cpu_to_gpu()
        for k in range(200):
            m.add_new_pattern(f"L{k:04d}", [["s1", "s4"], [f"s{k % 60}"]])
        expected = answer(m)
        def work():
            assert answer(m) == expected
            # Learning and promoting work in the child too, on the child's own copy.
            assert m.add_new_pattern("CHILD", [STATE])
            assert m.sync_cpu_to_gpu() == 201
            assert answer(m)[0] == ("CHILD", (1.0).hex())
            print("CHILD WORKS", flush=True)
        in_child(work)
        assert m._tiers() == (100_000, 200)  # the parent's copy is untouched
        print("PARENT OK")
        """
    )
    check(proc, "CHILD WORKS", "CHILD EXIT 0", "PARENT OK")


def test_fork_while_other_threads_query_and_learn():
    """The fork waits for operations in flight, so no lock is copied held into the child."""
    proc = run_script(
        """
        m = make(sync_threshold=10**9)
        load(m, 20_000)
        expected = answer(m)
        stop = threading.Event()
        def query():
            while not stop.is_set():
                m.match_patterns(STATE, 0.3, 50)
        def learn():
            k = 0
            while not stop.is_set():
                m.add_new_pattern(f"T{k:07d}", [["zz", str(k)]])
                k += 1
                if k % 50 == 0:
                    m.sync_cpu_to_gpu()
        threads = [threading.Thread(target=f, daemon=True) for f in (query, query, learn)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        def work():
            assert answer(m) == expected  # the learned patterns never match STATE
            m.add_new_pattern("CHILD", [["c"]])
            print("CHILD SAME", flush=True)
        for _ in range(5):
            in_child(work)
        stop.set()
        for t in threads:
            t.join(30)
        print("PARENT OK")
        """
    )
    assert lines(proc).count("CHILD SAME") == 5, proc.stdout
    check(proc, "CHILD EXIT 0", "PARENT OK")


def test_a_grandchild_queries_too():
    proc = run_script(
        """
        m = make()
        load(m, 3000)
        expected = answer(m)
        from kato_gpu import _native
        assert not _native.is_forked_process()
        def grandchild():
            assert _native.is_forked_process()
            assert answer(m) == expected
            print("GRANDCHILD SAME", flush=True)
        def child():
            assert answer(m) == expected
            in_child(grandchild)
        in_child(child)
        """
    )
    check(proc, "GRANDCHILD SAME", "CHILD EXIT 0")


def test_a_multiprocessing_fork_pool():
    proc = run_script(
        """
        import multiprocessing as mp
        m = make()
        load(m, 10_000)
        states = [[f"s{(k * 7 + j) % 60}" for j in range(10)] for k in range(16)]
        def top(state):
            return [(r["pattern_name"], r["similarity"].hex()) for r in m.match_patterns(state, 0.2, 5)]
        expected = [top(s) for s in states]
        with mp.get_context("fork").Pool(2) as pool:
            got = pool.map_async(top, states).get(timeout=60)
        assert got == expected
        print("POOL SAME")
        """
    )
    check(proc, "POOL SAME")


def test_a_child_sync_manager_reports_no_worker_and_can_start_one():
    proc = run_script(
        """
        m = make(sync_threshold=5, sync_interval_seconds=3600)
        sync = SyncManager(m)
        sync.start_background_sync()
        load(m, 3)
        m.match_patterns(STATE, 0.0)
        assert sync.is_running()
        def work():
            assert not sync.is_running()
            assert sync.get_stats()["background_sync_running"] is False
            sync.stop_background_sync()  # nothing to join in the child: returns at once
            # Started in the child, it promotes the child's patterns.
            assert sync.restart_background_sync() is True and sync.is_running()
            for k in range(5):
                m.add_new_pattern(f"C{k}", [["c", str(k)]])
            deadline = time.monotonic() + 30
            while m._tiers()[1] and time.monotonic() < deadline:
                time.sleep(0.01)
            assert m._tiers() == (8, 0), m._tiers()
            sync.stop_background_sync()
            assert not sync.is_running()
            print("CHILD SYNC OK", flush=True)
        in_child(work)
        assert sync.is_running()  # the parent's worker is untouched
        sync.stop_background_sync()
        print("PARENT OK")
        """
    )
    check(proc, "CHILD SYNC OK", "CHILD EXIT 0", "PARENT OK")


def test_a_child_exits_normally_with_a_manager_it_inherited():
    """A child that ends with sys.exit runs the atexit hooks: stopping the inherited manager must
    not try to join the parent's thread."""
    proc = run_script(
        """
        m = make(sync_threshold=5)
        sync = SyncManager(m)
        sync.start_background_sync()
        pid = os.fork()
        if pid == 0:
            m.match_patterns(STATE, 0.0)
            sys.exit(0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print("CHILD EXIT", os.waitstatus_to_exitcode(status))
                break
            time.sleep(0.01)
        else:
            os.kill(pid, 9)
            print("CHILD HUNG")
        """
    )
    check(proc, "CHILD EXIT 0")


# ------------------------------------------------------------------ exit


def test_exit_with_daemon_threads_inside_queries():
    proc = run_script(
        """
        import logging
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        m = make(log_kernel_timing=True)
        load(m, 30_000, length=20)
        def query():
            while True:
                m.match_patterns(STATE * 3, 0.0, None)
        for _ in range(3):
            threading.Thread(target=query, daemon=True).start()
        time.sleep(0.3)
        print("EXITING", flush=True)
        """
    )
    check(proc, "EXITING")


def test_exit_with_daemon_threads_inside_bulk_loads_and_syncs():
    proc = run_script(
        """
        m = make(sync_threshold=10**9)
        sync = SyncManager(m)
        sync.start_background_sync()
        def bulk():
            k = 0
            while True:
                rng = random.Random(k)
                names = [f"B{k:04d}-{j:06d}" for j in range(20_000)]
                m.add_patterns(names, [[[f"s{rng.randrange(60)}" for _ in range(10)]] for _ in names])
                k += 1
        def promote():
            while True:
                sync.trigger_sync()
        threading.Thread(target=bulk, daemon=True).start()
        threading.Thread(target=promote, daemon=True).start()
        time.sleep(0.5)
        print("EXITING", flush=True)
        """
    )
    check(proc, "EXITING")


def test_exit_with_a_daemon_thread_learning_into_a_collection_store():
    """A learn with a collection store takes the GIL inside the native call (to write the store);
    here the store's write even calls kato_gpu again."""
    proc = run_script(
        """
        other = make()
        load(other, 100)
        class Collection:
            def __init__(self):
                self.doc = None
            def find_one(self, query, *args, **kwargs):
                return self.doc
            def update_one(self, query, update, upsert=False, **kwargs):
                other.match_patterns(STATE, 0.0)
                time.sleep(0.001)
        encoder = SymbolVocabularyEncoder(Collection())
        m = HybridGPUMatcher(encoder, GPUConfig(enabled=False, metric="lcs"))
        def learn():
            k = 0
            while True:
                m.add_new_pattern(f"N{k:07d}", [[f"new{k}", f"sym{k}"]])
                k += 1
        for _ in range(2):
            threading.Thread(target=learn, daemon=True).start()
        time.sleep(0.3)
        print("EXITING", flush=True)
        """
    )
    check(proc, "EXITING")


def test_exit_hooks_may_still_call_kato_gpu():
    """The thread running the exit callbacks is never parked."""
    proc = run_script(
        """
        import atexit
        m = make()
        load(m, 100)
        def at_exit():
            print("AT EXIT", len(m.match_patterns(STATE, 0.0, None)), flush=True)
        atexit.register(at_exit)
        # Registered again after at_exit, kato_gpu's hook runs before it (last in, first out).
        from kato_gpu import _native
        atexit.unregister(_native.interpreter_exiting)
        atexit.register(_native.interpreter_exiting)
        """
    )
    check(proc, "AT EXIT 100")
