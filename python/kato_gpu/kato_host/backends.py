"""The backends a served KATO needs, run on this machine without containers.

- :class:`RedisServer`: Debian's ``redis-server`` on a free local port in a temporary directory,
  nothing saved to disk.
- :class:`ChdbClient`: the part of the ``clickhouse_connect`` client API that KATO calls, over an
  embedded ClickHouse (chdb) session. It only translates: every statement KATO sends runs as
  KATO's SQL in chdb, against KATO's own schema (its ``config/clickhouse/init.sql``).
- :func:`install_chdb_client`: makes ``clickhouse_connect.get_client`` return one shared
  :class:`ChdbClient`; done in the server process before KATO connects.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

__all__ = [
    "BackendError",
    "ChdbClient",
    "ChdbQueryResult",
    "RedisServer",
    "free_port",
    "close_installed_client",
    "install_chdb_client",
    "split_sql",
]

PathLike = Union[str, "os.PathLike[str]"]


class BackendError(RuntimeError):
    """A backend could not be started or answered wrongly."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the caller retries if it is taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    # A raw RESP PING, so that the harness side needs no Redis client library.
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisServer:
    """One ``redis-server`` for one KATO instance: a free port on 127.0.0.1 (or ``port``), a
    temporary working directory, no persistence (``--save '' --appendonly no``).

    Use as a context manager (or call :meth:`start` and :meth:`stop`); :attr:`url` is the
    ``redis://`` URL KATO's ``REDIS_URL`` takes.
    """

    def __init__(
        self,
        executable: Optional[str] = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 20.0,
        port: Optional[int] = None,
    ) -> None:
        self.executable = executable or shutil.which("redis-server") or ""
        self.host = host
        self.requested_port = port
        self.startup_timeout = float(startup_timeout)
        self.port: Optional[int] = None
        self.workdir: Optional[Path] = None
        self.log_path: Optional[Path] = None
        self._proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise BackendError("RedisServer is not started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "RedisServer":
        if self._proc is not None:
            raise BackendError("RedisServer is already started")
        if not self.executable or not os.access(self.executable, os.X_OK):
            raise BackendError(
                "redis-server is not installed (Debian: apt-get install -y redis-server; `make kato-deps` installs it)"
            )
        self.workdir = Path(tempfile.mkdtemp(prefix="kato-redis-"))
        self.log_path = self.workdir / "redis.log"
        # Another process may take the port between free_port() and the bind: try a few. A port
        # asked for is tried once: taken, it fails with redis-server's log.
        last_error = ""
        for _ in range(1 if self.requested_port else 5):
            port = self.requested_port or free_port(self.host)
            argv = [
                self.executable,
                "--port", str(port),
                "--bind", self.host,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--logfile", str(self.log_path),
                "--daemonize", "no",
            ]  # fmt: skip
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if _redis_ping(self.host, port):
                    self._proc, self.port = proc, port
                    return self
                time.sleep(0.05)
            _stop_process(proc, 5.0)
            last_error = self._log_tail()
        self._cleanup_dir()
        raise BackendError(f"redis-server did not answer PING; its log:\n{last_error}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:] if self.log_path else ""
        except OSError:
            return ""

    def _cleanup_dir(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            _stop_process(self._proc, timeout)
            self._proc = None
        self.port = None
        self._cleanup_dir()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer(url={self.url if self.port else None!r})"


def split_sql(script: str) -> list[str]:
    """The statements of a SQL script such as KATO's init.sql: ``--`` comments dropped, split at
    ``;``. (KATO's schema has no ``;`` or ``--`` inside string literals.)"""
    without_comments = re.sub(r"--[^\n]*", "", script)
    return [stmt.strip() for stmt in without_comments.split(";") if stmt.strip()]


class ChdbQueryResult:
    """What ``clickhouse_connect``'s ``QueryResult`` offers KATO: rows as tuples, columns as lists,
    Array columns as (nested) lists, integers as ``int``, strings as ``str``.

    DateTime columns come back as seconds since the epoch (chdb's Arrow output carries no
    timezone); KATO reads none of them.
    """

    def __init__(self, column_names: Sequence[str], result_columns: list[list[Any]]) -> None:
        self.column_names = tuple(column_names)
        self.result_columns = result_columns
        self.result_rows: list[tuple] = list(zip(*result_columns)) if result_columns else []
        self.column_oriented = False
        self.summary: dict[str, Any] = {"read_rows": len(self.result_rows)}

    @property
    def result_set(self) -> list[tuple]:
        return self.result_rows

    @property
    def row_count(self) -> int:
        return len(self.result_rows)

    @property
    def first_row(self) -> tuple:
        return self.result_rows[0]

    @property
    def first_item(self) -> dict[str, Any]:
        return dict(zip(self.column_names, self.result_rows[0]))

    def named_results(self) -> Iterable[dict[str, Any]]:
        for row in self.result_rows:
            yield dict(zip(self.column_names, row))

    def close(self) -> None:
        pass


def _json_value(value: Any) -> Any:
    # json.dumps fallback for what KATO's rows hold besides plain Python values: numpy scalars
    # (datasketch's MinHash values) and datetimes.
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, _dt.date):
        return value.isoformat()
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot insert a value of type {type(value).__name__}: {value!r}")


class ChdbClient:
    """The ``clickhouse_connect`` client subset KATO uses, over one chdb session at ``path``.

    - ``command(sql)`` runs a statement and returns what ``clickhouse_connect`` would: an ``int``
      or ``str`` for a one-value answer, a list of strings for one row of several, else ``None``.
    - ``query(sql)`` returns a :class:`ChdbQueryResult`.
    - ``insert(table, rows, column_names=..., settings=...)`` inserts row-oriented data
      (``INSERT ... FORMAT JSONEachRow``). The insert is synchronous: rows are visible when it
      returns, which makes ClickHouse's ``async_insert`` settings moot (they are not passed on).
    - ``ping()``, ``close()``.

    The session starts in ``database`` (``USE``), as a ClickHouse HTTP connection with that
    database does: KATO's filter executor names ``patterns_data`` without ``kato.``. ``init_sql``
    (KATO's init.sql) is run once when the client opens; its statements are ``IF NOT EXISTS``.
    Calls are serialized with a lock: one chdb session, many uvicorn threads.
    """

    def __init__(self, path: PathLike, init_sql: Optional[PathLike] = None, database: str = "kato") -> None:
        import chdb.session  # deferred: chdb is a serving dependency only

        self.path = str(path)
        self.database = database
        self._lock = threading.RLock()
        Path(self.path).mkdir(parents=True, exist_ok=True)
        self._session = chdb.session.Session(self.path)
        self._closed = False
        with self._lock:
            if init_sql is not None:
                for stmt in split_sql(Path(init_sql).read_text()):
                    self._session.query(stmt)
            self._session.query(f"USE {database}")
            # Strings as Arrow strings (not binary) so that query results hold str, as KATO expects.
            self._session.query("SET output_format_arrow_string_as_string = 1")

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("ChdbClient is closed")

    def command(
        self,
        cmd: str,
        parameters: Any = None,
        data: Any = None,
        settings: Optional[dict[str, Any]] = None,
        use_database: bool = True,
        external_data: Any = None,
    ) -> Any:
        if parameters or data is not None or external_data is not None:
            raise NotImplementedError("ChdbClient.command: parameters, data and external_data are not supported")
        stripped = cmd.strip().rstrip(";").strip()
        if re.fullmatch(r"SYSTEM\s+FLUSH\s+ASYNC\s+INSERT\s+QUEUE", stripped, flags=re.IGNORECASE):
            # insert() is synchronous, so ClickHouse's asynchronous insert queue is always empty
            # (chdb does not even start one and would reject the statement).
            return None
        with self._lock:
            self._check_open()
            out = self._session.query(cmd, "TabSeparated").bytes()
        if not out:
            return None
        text = out.decode()[:-1] if out.endswith(b"\n") else out.decode()
        fields = text.split("\t")
        if len(fields) == 1:
            try:
                return int(fields[0])
            except ValueError:
                return fields[0]
        return fields

    def query(
        self,
        query: str,
        parameters: Any = None,
        settings: Optional[dict[str, Any]] = None,
        **_ignored: Any,
    ) -> ChdbQueryResult:
        if parameters:
            raise NotImplementedError("ChdbClient.query: parameters are not supported")
        with self._lock:
            self._check_open()
            table = self._session.query(query, "ArrowTable")
        if table is None or not hasattr(table, "column_names"):
            return ChdbQueryResult([], [])
        names = list(table.column_names)
        columns = [table.column(i).to_pylist() for i in range(len(names))]
        return ChdbQueryResult(names, columns)

    def insert(
        self,
        table: str,
        data: Sequence[Sequence[Any]],
        column_names: Union[str, Sequence[str]] = "*",
        database: str = "",
        column_types: Any = None,
        column_type_names: Any = None,
        column_oriented: bool = False,
        settings: Optional[dict[str, Any]] = None,
        **_ignored: Any,
    ) -> int:
        full_table = f"{database}.{table}" if database else table
        if column_names == "*" or column_names is None:
            names = self._table_columns(full_table)
        else:
            names = list(column_names)
        rows = list(zip(*data)) if column_oriented else data
        lines = []
        for row in rows:
            if len(row) != len(names):
                raise ValueError(f"insert into {full_table}: a row has {len(row)} values for {len(names)} columns")
            lines.append(json.dumps(dict(zip(names, row)), ensure_ascii=False, default=_json_value))
        if not lines:
            return 0
        payload = "\n".join(lines) + "\n"
        with self._lock:
            self._check_open()
            inserter = self._session.send_insert(f"INSERT INTO {full_table} ({', '.join(names)})", "JSONEachRow")
            inserter.append(payload)
            inserter.finish()
        return len(lines)

    def _table_columns(self, full_table: str) -> list[str]:
        result = self.query(f"DESCRIBE TABLE {full_table}")
        return [row[0] for row in result.result_rows]

    def ping(self) -> bool:
        try:
            return self.command("SELECT 1") == 1
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()

    def __enter__(self) -> "ChdbClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_installed: dict[str, Any] = {}


def install_chdb_client(path: PathLike, init_sql: Optional[PathLike] = None) -> None:
    """Make ``clickhouse_connect.get_client(...)`` return one shared :class:`ChdbClient` at
    ``path`` (created on the first call, in the ``database`` it is asked for). The host, port and
    credentials KATO passes are ignored: there is no server.

    The client is closed at interpreter exit (:func:`close_installed_client`): chdb crashes the
    process at exit when a session is still open, and KATO's shutdown does not close it."""
    import atexit

    import clickhouse_connect

    lock = threading.Lock()

    def get_client(*_args: Any, database: Optional[str] = None, **_kwargs: Any) -> ChdbClient:
        with lock:
            client = _installed.get("client")
            if client is None or client._closed:
                client = ChdbClient(path, init_sql=init_sql, database=database or "kato")
                _installed["client"] = client
            return client

    clickhouse_connect.get_client = get_client
    atexit.register(close_installed_client)


def close_installed_client() -> None:
    """Close the client :func:`install_chdb_client` handed out, if any."""
    client = _installed.pop("client", None)
    if client is not None:
        client.close()
