"""One served KATO instance: :class:`KatoServer`.

::

    from kato_gpu.kato_host.process import KatoServer
    from kato_gpu.kato_host.client import KatoClient

    with KatoServer(kato_src="../shared/kato") as kato:
        client = KatoClient(kato.base_url)
        sid = client.create_session("node-1")
        ...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

from . import find_kato_src
from .backends import RedisServer, free_port

__all__ = ["KatoServer", "KatoServerError", "SERVER_ENV"]

PathLike = Union[str, "os.PathLike[str]"]

# What the harness sets for KATO (anything given in `env` wins):
# - REDIS_URL: the instance's own redis-server. KATO uses it for sessions and pattern metadata.
# - REDIS_ENABLED: KATO's connection manager hands out no Redis client without it, and then
#   cannot build a knowledge base (its REDIS_URL alone does not enable Redis there).
# - LOG_LEVEL: KATO logs several INFO lines per request; WARNING keeps the log readable and the
#   requests fast.
SERVER_ENV = {"REDIS_ENABLED": "true", "LOG_LEVEL": "WARNING"}


class KatoServerError(RuntimeError):
    """The KATO server did not start or stopped unexpectedly; the message names its log file."""


class KatoServer:
    """KATO's FastAPI app under uvicorn on ``host``, with its own :class:`RedisServer` and a chdb
    data directory.

    Args:
        kato_src: KATO source directory (default ``$KATO_SRC``).
        env: extra environment for the server process, on top of this process's environment and
            :data:`SERVER_ENV` (it wins over both).
        chdb_path: ClickHouse data directory (default: a fresh one in the work directory). Kept
            when given, removed with the work directory otherwise.
        workdir: directory for the server's log and default chdb data (default: a temporary one,
            removed on :meth:`stop` unless ``keep_workdir``).
        port: the server's port (default: a free one).
        redis_port: its Redis server's port (default: a free one). KATO's own tests read Redis
            at ``localhost:6379``, where KATO's container deployment publishes it.
        startup_timeout: seconds to wait for ``GET /health``.
        status_file: where the server process writes ``kato_gpu.kato.status()`` as JSON when it
            stops, if kato_gpu was switched on in it (``KATO_GPU_ACCELERATE``).
    """

    def __init__(
        self,
        kato_src: Optional[PathLike] = None,
        env: Optional[Mapping[str, str]] = None,
        chdb_path: Optional[PathLike] = None,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        workdir: Optional[PathLike] = None,
        keep_workdir: bool = False,
        startup_timeout: float = 180.0,
        stop_timeout: float = 20.0,
        python: Optional[str] = None,
        redis_port: Optional[int] = None,
        status_file: Optional[PathLike] = None,
    ) -> None:
        src = find_kato_src(kato_src)
        if src is None:
            raise KatoServerError(
                f"no KATO source found at {kato_src or os.environ.get('KATO_SRC') or '(KATO_SRC unset)'}"
            )
        self.kato_src = src
        self.extra_env = dict(env or {})
        self.host = host
        self.requested_port = port
        self.port: Optional[int] = None
        self.startup_timeout = float(startup_timeout)
        self.stop_timeout = float(stop_timeout)
        self.python = python or sys.executable
        self._own_workdir = workdir is None
        self.keep_workdir = keep_workdir
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._chdb_arg = Path(chdb_path) if chdb_path is not None else None
        self.workdir: Optional[Path] = None
        self.chdb_path: Optional[Path] = None
        self.log_path: Optional[Path] = None
        self.status_file = Path(status_file) if status_file is not None else None
        self.redis = RedisServer(host=host, port=redis_port)
        self._proc: Optional[subprocess.Popen] = None
        self._log_file = None
        self.startup_seconds: Optional[float] = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise KatoServerError("KatoServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def server_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> "KatoServer":
        if self.workdir is not None:
            raise KatoServerError("KatoServer is already started")
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self.workdir = self._workdir_arg
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="kato-host-"))
        self.chdb_path = self._chdb_arg if self._chdb_arg is not None else self.workdir / "chdb"
        self.log_path = self.workdir / "kato-server.log"
        try:
            self.redis.start()
            self.start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def server_env(self) -> dict[str, str]:
        """The server process's environment: this process's, :data:`SERVER_ENV`, the Redis URL,
        then ``env``."""
        env = dict(os.environ)
        env.update(SERVER_ENV)
        env["REDIS_URL"] = self.redis.url
        # The server imports this package the way this process does (installed or source tree).
        pkg_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(self.extra_env)
        return env

    def start_server(self) -> None:
        """Start the server process (Redis must be running) and wait until KATO answers
        ``GET /health``."""
        if self.server_running:
            raise KatoServerError("the KATO server is already running")
        assert self.workdir is not None and self.log_path is not None and self.chdb_path is not None
        self.port = self.requested_port or free_port(self.host)
        argv = [
            self.python, "-m", "kato_gpu.kato_host.server",
            "--kato-src", str(self.kato_src),
            "--chdb-path", str(self.chdb_path),
            "--host", self.host,
            "--port", str(self.port),
        ]  # fmt: skip
        if self.status_file is not None:
            argv += ["--status-file", str(self.status_file)]
        self._log_file = open(self.log_path, "ab")
        started = time.monotonic()
        # Its own process group, so that stop() also ends what KATO starts (its process pools).
        # The working directory is the work directory: KATO's settings read a `.env` from it.
        self._proc = subprocess.Popen(
            argv,
            env=self.server_env(),
            cwd=str(self.workdir),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = started + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._close_log()
                raise KatoServerError(f"the KATO server exited with code {code} while starting; log: {self.log_path}")
            if self._healthy():
                break
            if time.monotonic() > deadline:
                self.stop_server()
                raise KatoServerError(
                    f"the KATO server did not answer GET /health within {self.startup_timeout:.0f} s; "
                    f"log: {self.log_path}"
                )
            time.sleep(0.2)
        self.startup_seconds = time.monotonic() - started

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as resp:
                body = json.loads(resp.read())
            return resp.status == 200 and body.get("status") != "unhealthy"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def stop_server(self) -> None:
        """Stop the server process: SIGTERM to its process group (uvicorn shuts KATO down), then
        SIGKILL after ``stop_timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever is left of the group (the leader, a process pool's workers) is killed.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """Stop the server and Redis; remove the work directory unless it was given or kept."""
        self.stop_server()
        self.redis.stop()
        if self.workdir is not None and self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def __enter__(self) -> "KatoServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- bulk loading ----------------------------------------------------------------------------

    def bulk_load(
        self,
        node_id: str,
        sequences: Iterable[Sequence[Sequence[str]]],
        sort_symbols: bool = True,
        timeout: Optional[float] = None,
    ) -> dict:
        """Learn ``sequences`` (each a list of events, each a list of symbols) for ``node_id`` as
        KATO's learn does, without HTTP: :mod:`.loader` runs in its own process on this
        instance's chdb data and Redis. chdb data belongs to one process at a time, so a running
        server is stopped for the load and started again after it (sessions live in Redis and
        survive). Returns the loader's report (patterns, learned, seconds, ...)."""
        if self.workdir is None:
            raise KatoServerError("KatoServer is not started")
        was_running = self.server_running
        if was_running:
            self.stop_server()
        fd, input_path = tempfile.mkstemp(prefix="kato-load-", suffix=".jsonl", dir=str(self.workdir))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for seq in sequences:
                    out.write(json.dumps([list(event) for event in seq], ensure_ascii=False))
                    out.write("\n")
            argv = [
                self.python, "-m", "kato_gpu.kato_host.loader",
                "--kato-src", str(self.kato_src),
                "--chdb-path", str(self.chdb_path),
                "--node-id", node_id,
                "--input", input_path,
            ]  # fmt: skip
            if not sort_symbols:
                argv.append("--no-sort")
            with open(self.log_path, "ab") as log:
                done = subprocess.run(
                    argv,
                    env=self.server_env(),
                    cwd=str(self.workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    timeout=timeout,
                )
            if done.returncode != 0:
                raise KatoServerError(f"the bulk loader failed (code {done.returncode}); log: {self.log_path}")
            report = json.loads(done.stdout.decode().strip().splitlines()[-1])
        finally:
            os.unlink(input_path)
            if was_running:
                self.start_server()
        return report


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
