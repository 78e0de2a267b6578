"""README.md runs as written: every ``bash`` and ``python`` block, in document order, in one
empty folder (bash blocks with ``set -euo pipefail``, python blocks in one session), with
``streamvol`` and ``python`` being this checkout's. A block that must not run here (it installs
packages, needs a GPU or the network) carries ``<!-- readme-test: skip (why) -->`` on the line
before its fence; every other block, including ones added later, runs.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from .guard import run_guarded

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}

# Runs each block in order in the README's folder; stops at the first that fails, naming it.
DRIVER = r"""
import json, subprocess, sys, time, traceback

session = {"__name__": "__main__"}
start = time.perf_counter()
for block in json.load(open(sys.argv[1])):
    where = f"README.md:{block['line']} ({block['lang']})"
    print(f"=== {where} at {time.perf_counter() - start:.0f} s ===", flush=True)
    if block["lang"] == "bash":
        code = subprocess.run(["bash", "-euo", "pipefail", "-c", block["code"]]).returncode
        if code:
            sys.exit(f"{where}: the block exited {code}")
        continue
    try:
        exec(compile(block["code"], where, "exec"), session)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"{where}: the block raised")
    sys.stdout.flush()
print("=== every block ran ===", flush=True)
"""


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str  # bash, python, or the fence's own word (not run)
    code: str
    skip: str | None  # why the block does not run here


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, with their language and skip marker."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, words = opening["fence"], opening["info"].split()
        end = i + 1
        while end < len(lines) and not (
            lines[end].startswith(fence[0] * len(fence)) and not lines[end].strip(fence[0])
        ):
            end += 1
        before = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        marker = SKIP.match(before)
        lang = LANGUAGES.get(words[0].lower(), words[0].lower()) if words else ""
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(i + 1, lang, code, marker["why"] if marker else None))
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())
RUN = [b for b in BLOCKS if b.lang in ("bash", "python") and b.skip is None]


def test_the_readme_parses_into_blocks_that_run():
    assert len([b for b in RUN if b.lang == "bash"]) >= 5
    assert len([b for b in RUN if b.lang == "python"]) >= 4
    skipped = [b for b in BLOCKS if b.skip is not None]
    assert all(b.lang in ("bash", "python") for b in skipped), "skip markers on runnable blocks"
    assert len(skipped) <= 5, f"too many README blocks opt out: {skipped}"
    # a marker must stand right before a fence, or it skips nothing
    markers = [n for n, s in enumerate(README.read_text().splitlines(), 1) if SKIP.match(s)]
    assert len(markers) == len(skipped)


def test_the_first_block_sets_up_and_runs_the_demo_as_ci_installs():
    first = BLOCKS[0]
    assert first.lang == "bash" and first.skip is not None
    setup, tests = first.code.strip().splitlines()
    assert setup.startswith("python3 -m venv .venv") and setup.endswith("streamvol demo")
    assert "python -m pytest -q -n 2 tests" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    for install in ("pip install -q torch==2.13.0", "pip install -q -e '.[dev]'"):
        assert install in ci
        assert install.replace(" -q", "") in first.code


def test_the_readme_links_only_inside_the_repository():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        assert "://" in target or (ROOT / target.split("#")[0]).exists(), target
    assert "../" not in re.sub(r"`[^`]*`", "", text), "a path outside the repository"


def test_the_parser_sees_languages_and_markers():
    text = (
        "<!-- readme-test: skip (installs) -->\n```bash\npip install x\n```\n\n"
        "```python\nprint(1)\n```\n````text\n```\nnested\n```\n````\n```\nplain\n```\n"
    )
    blocks = readme_blocks(text)
    assert [(b.lang, b.skip) for b in blocks] == [
        ("bash", "installs"),
        ("python", None),
        ("text", None),
        ("", None),
    ]
    assert blocks[1].code == "print(1)\n" and blocks[1].line == 6
    assert blocks[2].code == "```\nnested\n```\n"


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path, monkeypatch):
    """The examples as a new user runs them, in order: a few minutes on 2 cores."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shims = {
        "streamvol": f'exec "{sys.executable}" -m streamvol "$@"',
        "python": f'exec "{sys.executable}" "$@"',
        "python3": f'exec "{sys.executable}" "$@"',
    }
    for name, line in shims.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:{_env('PATH')}")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}:{_env('PYTHONPATH')}".rstrip(":"))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    blocks = tmp_path / "blocks.json"
    blocks.write_text(json.dumps([asdict(b) for b in RUN]))
    work = tmp_path / "work"
    work.mkdir()
    done = run_guarded(["-c", DRIVER, str(blocks)], limit=1500, cwd=work)
    # each block's start, for ``pytest -s`` to show where the minutes go
    print("".join(line for line in done.stdout.splitlines(True) if line.startswith("===")))
    assert done.returncode == 0, done.stdout[-6000:]
    assert "=== every block ran ===" in done.stdout
    # what the examples promise is there
    assert (work / "tomo.png").is_file() and (work / "b.json").is_file()
    assert (work / "runs" / "spots" / "best.pt").is_file()
    assert "the loader " in done.stdout and "keep" in done.stdout


def _env(name: str) -> str:
    import os

    return os.environ.get(name, "")
