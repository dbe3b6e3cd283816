"""The server process of a served KATO: ``python -m kato_gpu.kato_host.server --kato-src DIR
--chdb-path DIR --port P [--host 127.0.0.1]``.

It puts the KATO source directory first on ``sys.path``, makes ``clickhouse_connect.get_client``
return a chdb-backed client (:func:`~kato_gpu.kato_host.backends.install_chdb_client`) and runs
uvicorn on KATO's ``kato.services.kato_fastapi:app``. KATO reads the rest of its configuration
(``REDIS_URL``, ``REDIS_ENABLED``, ``LOG_LEVEL``, ...) from the environment, which this module
passes through untouched, so that a switch for code that patches KATO on import works here too.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main"]

APP = "kato.services.kato_fastapi:app"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kato_gpu.kato_host.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kato-src", required=True, help="KATO source directory (holds kato/ and config/)")
    parser.add_argument("--chdb-path", required=True, help="directory of the embedded ClickHouse data")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level (KATO's own: LOG_LEVEL)")
    parser.add_argument(
        "--status-file",
        help="on exit, write kato_gpu.kato.status() there as JSON if kato_gpu was switched on in KATO",
    )
    args = parser.parse_args(argv)

    kato_src = Path(args.kato_src).resolve()
    if not (kato_src / "kato" / "services" / "kato_fastapi.py").is_file():
        parser.error(f"--kato-src {kato_src} holds no KATO source (kato/services/kato_fastapi.py)")
    # KATO's directory is read-only reference source: nothing may write bytecode there.
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(kato_src))

    from kato_gpu.kato_host.backends import close_installed_client, install_chdb_client

    install_chdb_client(args.chdb_path, init_sql=kato_src / "config" / "clickhouse" / "init.sql")

    import uvicorn

    # uvicorn shuts the app down on SIGTERM/SIGINT, then raises the signal again with the handler
    # found before it started: this one turns it into a normal exit, so that the chdb session is
    # closed (chdb crashes a process that exits with a session open).
    def exit_normally(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_normally)
    signal.signal(signal.SIGINT, exit_normally)
    try:
        uvicorn.run(APP, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    finally:
        close_installed_client()
        if args.status_file:
            _write_status(args.status_file)
    return 0


def _write_status(path: str) -> None:
    # The import hook imports kato_gpu.kato only when it is switched on: its absence is the answer.
    module = sys.modules.get("kato_gpu.kato")
    status = module.status() if module is not None else {"installed": False}
    Path(path).write_text(json.dumps(status, indent=1, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
