"""Runs KATO's own encoder tests against kato_gpu: ``python tests/kato_suite/run.py``.

KATO's checkout is ``$KATO_SRC`` (default ``../shared/kato`` next to the project root); its test
file runs as it is, from its read-only directory: no cache, no bytecode written, and only the
conftest beside it loaded (``--confcutdir``), not KATO's top-level ones, which need a running KATO.
Exit status: pytest's, or 0 with a message when KATO's checkout is not there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TEST_FILE = Path("tests", "tests", "gpu", "test_encoder.py")


def main(argv: list) -> int:
    kato_src = Path(os.environ.get("KATO_SRC") or ROOT.parent / "shared" / "kato").resolve()
    test_file = kato_src / TEST_FILE
    if not test_file.is_file():
        print(f"KATO encoder suite skipped: {test_file} not found (set KATO_SRC to a KATO checkout)")
        return 0
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(HERE))  # kato_shim, loaded as a plugin below
    import pytest

    gpu_dir = str(test_file.parent)
    return int(
        pytest.main(
            [
                "-c",
                str(HERE / "pytest.ini"),
                "--rootdir",
                gpu_dir,
                "--confcutdir",
                gpu_dir,
                "-p",
                "no:cacheprovider",
                "-p",
                "kato_shim",
                *argv,
                str(test_file),
            ]
        )
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
