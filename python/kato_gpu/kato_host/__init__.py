"""Serve unmodified KATO for real on this machine: its FastAPI app under uvicorn over HTTP, with a
Redis server and an embedded ClickHouse (chdb) started and stopped by the harness.

KATO itself is not part of this package: its source directory is given (``KATO_SRC``) and run as it
is. The serving dependencies (KATO's own requirements, chdb, redis-server) are installed by the
project's ``make kato-deps``.

- :mod:`.backends`: :class:`RedisServer`, :class:`ChdbClient` and :func:`install_chdb_client`.
- :mod:`.server`: the server process (``python -m kato_gpu.kato_host.server``).
- :mod:`.process`: :class:`KatoServer`, one served KATO instance as a context manager.
- :mod:`.client`: :class:`KatoClient`, the session API over HTTP.
- :mod:`.loader`: bulk loading of learned patterns through KATO's own knowledge base code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["find_kato_src"]


def find_kato_src(explicit: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """The KATO source directory: ``explicit``, else ``$KATO_SRC``; ``None`` when neither names a
    directory holding ``kato/services/kato_fastapi.py``."""
    candidate = explicit if explicit is not None else os.environ.get("KATO_SRC")
    if not candidate:
        return None
    path = Path(candidate).resolve()
    if not (path / "kato" / "services" / "kato_fastapi.py").is_file():
        return None
    return path
