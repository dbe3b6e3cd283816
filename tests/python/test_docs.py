"""The documentation checks itself: every fenced block of README.md and docs/*.md is closed, every
```python block runs, and figures quoted from BENCHMARKS.md are figures BENCHMARKS.md has.

A file's ```python blocks run in order in one fresh interpreter (a runbook reads as one session:
a later block may use what an earlier one built), in an empty temporary directory, against the
installed kato_gpu; a traceback names the document and its line. A block that cannot run here
says so in its info string, ```python no-run, and its first line is a comment giving the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Fences of three or more backticks or tildes; list items indent them, so any indentation counts.
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
NO_RUN = "no-run"


class Block(NamedTuple):
    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    code: str


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if ROOT in path.parents else path.name


def parse(path: Path) -> List[Block]:
    """The fenced blocks of ``path`` (CommonMark's rule: a fence closes with the same character,
    at least as many, and nothing after it); AssertionError naming the line of one left open."""
    blocks: List[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    open_at = None
    for number, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if open_at is None:
            if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                open_at, fence, indent, info, body = number, m.group(2), len(m.group(1)), m.group(3).strip(), []
            continue
        if m and m.group(2)[0] == fence[0] and len(m.group(2)) >= len(fence) and not m.group(3).strip():
            code = "\n".join(text[indent:] if not text[:indent].strip() else text.lstrip() for text in body)
            blocks.append(Block(path, open_at, info, code + "\n"))
            open_at = None
        else:
            body.append(line)
    assert open_at is None, f"{_name(path)}:{open_at}: the code block opened here ({fence}{info}) is never closed"
    return blocks


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_every_fenced_block_is_closed(path: Path):
    parse(path)


def test_the_parser_finds_an_unclosed_fence(tmp_path: Path):
    doc = tmp_path / "x.md"
    # "~~~" and "``` x" do not close a ``` fence.
    doc.write_text("text\n```bash\nls\n```\n\n```python\nprint(1)\n~~~\n``` x\nmore\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"x.md:6: the code block opened here \(```python\) is never closed"):
        parse(doc)


def _python_blocks(path: Path) -> List[Block]:
    return [b for b in parse(path) if b.info.split()[:1] == ["python"]]


def test_no_run_blocks_are_few_and_say_why():
    skipped = [b for path in DOCS for b in _python_blocks(path) if NO_RUN in b.info.split()[1:]]
    for block in skipped:
        assert block.code.startswith("# "), f"{_name(block.path)}:{block.line}: a no-run block starts with why"
    assert len(skipped) <= 2, [f"{_name(b.path)}:{b.line}" for b in skipped]


RUNNER = """
import sys
for where, code in BLOCKS:
    print("running", where, flush=True)
    exec(compile(code, where, "exec"), globals())
"""


@pytest.mark.parametrize("path", [p for p in DOCS if _python_blocks(p)], ids=_name)
def test_python_blocks_run(path: Path, tmp_path: Path):
    blocks = [b for b in _python_blocks(path) if NO_RUN not in b.info.split()[1:]]
    if not blocks:
        pytest.skip(f"{_name(path)}: every python block is marked {NO_RUN}")
    listing = [(f"{_name(path)}:{b.line + 1}", b.code) for b in blocks]
    script = f"BLOCKS = {listing!r}\n{RUNNER}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATO_GPU_")}
    env["KATO_GPU_CACHE_DIR"] = str(tmp_path / "cache")
    # What an operator sets for the mutating endpoints (docs/OPERATIONS.md, "Securing the endpoints").
    env["KATO_GPU_API_TOKEN"] = "docs-example-token"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


# --- figures quoted from BENCHMARKS.md ----------------------------------------------------------
# A number with a unit of time or rate, or a speed-up: what a doc quotes from a measurement.
FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(?=\s?(?:ms|µs|ns|s\b|×|x\b|patterns/s|MB|GB))")


def _numbers(text: str) -> set:
    return {m.group(0).replace(",", "") for m in re.finditer(r"(?<![\w.])\d[\d,]*(?:\.\d+)?", text)}


def test_figures_quoted_from_benchmarks_are_in_benchmarks():
    """Every timing or rate on a line of OPERATIONS.md or README.md that cites BENCHMARKS.md is a
    number BENCHMARKS.md holds: a figure cannot be quoted from another run, or go stale there."""
    known = _numbers((ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8"))
    stale = []
    for path in (ROOT / "docs" / "OPERATIONS.md", ROOT / "README.md"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "BENCHMARKS.md" not in line:
                continue
            for m in FIGURE.finditer(line):
                if m.group(1).replace(",", "") not in known:
                    stale.append(f"{_name(path)}:{number}: {m.group(0)}")
    assert not stale, "figures not in docs/BENCHMARKS.md:\n" + "\n".join(stale)
