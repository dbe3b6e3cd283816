"""What the tests serving KATO need: KATO's checkout (``$KATO_SRC``, default ``../shared/kato``
next to the project root) and the serving dependencies (``make kato-deps``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
KATO_SRC = Path(os.environ.get("KATO_SRC") or ROOT.parent / "shared" / "kato").resolve()


def serving_unavailable() -> Optional[str]:
    """Why KATO cannot be served here, or None."""
    if not (KATO_SRC / "kato" / "services" / "kato_fastapi.py").is_file():
        return f"no KATO checkout at {KATO_SRC} (set KATO_SRC)"
    missing = [
        m for m in ("chdb", "clickhouse_connect", "redis", "uvicorn", "httpx") if importlib.util.find_spec(m) is None
    ]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if missing:
        return f"KATO's serving dependencies are missing ({', '.join(missing)}): run `make kato-deps`"
    return None
