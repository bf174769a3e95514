"""Every code block of the README and docs/ runs as written, or says why not.

A fenced block is run by its language:

- `console`: a shell transcript. Each `$ command` runs in bash against a
  real daemon started for the file (the documented 127.0.0.1:50051 and
  :50052 become its ports; `STATEHOUSE_ADDR` and `STATEHOUSE_HTTP_ADDR`
  point at it), in order, and must print what follows it (stdout and
  stderr together). In the expected text `...` matches anything (a whole
  line of it: any lines), and so does each value that differs from run to
  run by nature: an ISO-8601 UTC time, milliseconds since the epoch, a
  transaction id, a git sha, a process id.
- `python`: run in order with the file's console blocks, in one namespace.
- `toml`: a config file `statehoused --config` accepts; `json`: parses.

Any other block (or one run by a test of its own) is preceded by a comment
saying so: `<!-- not run: why -->` or `<!-- run by: tests/DIR/FILE.py::TEST -->`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from statehouse.testing import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED_ADDR = "127.0.0.1:50051"
DOCUMENTED_HTTP_ADDR = "127.0.0.1:50052"
PAGES = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "README.md",
]
RUN_BY_LANGUAGE = ("console", "python", "toml", "json")

_FENCE = re.compile(r"^```(\S*)\n(.*?)^```\n", re.S | re.M)
_MARK = re.compile(r"<!-- (not run|run by): (.+?) -->\s*$")


class Block(NamedTuple):
    page: Path
    line: int
    language: str
    text: str
    mark: tuple[str, str] | None  # ("not run", why) or ("run by", test)

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.language or 'no language'})"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        found.append(Block(page, line, match.group(1), match.group(2), mark.groups() if mark else None))  # type: ignore[arg-type]
    return found


ALL_BLOCKS = [block for page in PAGES if page.exists() for block in blocks(page)]


def test_every_block_is_run_or_says_why_not() -> None:
    assert len(ALL_BLOCKS) > 30
    problems = []
    for block in ALL_BLOCKS:
        if block.mark is None:
            if block.language not in RUN_BY_LANGUAGE:
                problems.append(
                    f"{block}: no runner for this language and no <!-- not run: why --> before it"
                )
        elif block.mark[0] == "run by":
            file, _, test = block.mark[1].partition("::")
            source = ROOT / file
            if not source.exists() or f"def {test}(" not in source.read_text(encoding="utf-8"):
                problems.append(f"{block}: says it is run by {block.mark[1]}, which does not exist")
        elif len(block.mark[1].split()) < 3:
            problems.append(f"{block}: 'not run' needs a reason a reader understands")
    assert not problems, "\n".join(problems)


# -- console transcripts and the python blocks beside them ------------------------------------


def _pattern(expected: str) -> re.Pattern[str]:
    """A regex for one expected line: literal, but for `...` and values that vary by nature."""
    varying = re.compile(
        r"\\\.\\\.\\\."  # ...
        r"|\d{4}\\-\d\d\\-\d\dT\d\d:\d\d:\d\d(?:\\\.\d+)?Z"  # an ISO-8601 UTC time
        r"|\d{8}T\d{9}Z"  # a UTC time in a snapshot's name
        r"|(?<![\d.])1[6-9]\d{11}(?![\d.])"  # milliseconds since the epoch
        r"|(?<=:)[0-9a-f]{24}\b"  # the random part of a transaction id
        r'|(?<="pid":\\ )\d+|(?<="pid":)\d+'  # a process id
        r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7}\b"  # a git sha
    )
    replacements = {"\\.\\.\\.": ".*"}

    def widen(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in replacements:
            return replacements[token]
        if token.endswith("Z") and "T" in token and "-" not in token:
            return r"\d{8}T\d{9}Z"
        if token.endswith("Z"):
            return r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"
        return r"[0-9a-f]+" if re.fullmatch(r"[0-9a-f]+", token) and not token.isdigit() else r"\d+"

    return re.compile(varying.sub(widen, re.escape(expected.rstrip())) + r"\Z")


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` lines fit `expected` (a line of just `...` matches any lines, even none)."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(output_matches(rest, actual[n:]) for n in range(len(actual) + 1))
    return (
        bool(actual) and bool(_pattern(head).match(actual[0].rstrip())) and output_matches(rest, actual[1:])
    )


class Command(NamedTuple):
    command: str
    expected: list[str]


def transcript(text: str) -> list[Command]:
    commands: list[Command] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append(Command(line[2:], []))
        else:
            assert commands, f"output before any command: {line!r}"
            commands[-1].expected.append(line)
    return commands


@contextlib.contextmanager
def documented_daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, dict[str, str]]]:
    """A daemon for one page, and the environment its commands run in."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the venv running the tests
    for shared in ("examples", "scripts", "proto"):
        (tmp_path / shared).symlink_to(ROOT / shared)
    with DaemonProcess(tmp_path / "statehouse-data") as daemon:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "STATEHOUSE_ADDR": daemon.addr,
            "STATEHOUSE_HTTP_ADDR": daemon.http_addr,
        }
        yield daemon, env


def run_python(block: Block, daemon: DaemonProcess, names: dict[str, object]) -> None:
    code = block.text.replace(DOCUMENTED_ADDR, daemon.addr)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(block), "exec"), names)


def run_console(block: Block, daemon: DaemonProcess, env: dict[str, str], cwd: Path) -> None:
    status = 0
    for step in transcript(block.text):
        command = step.command.replace(DOCUMENTED_ADDR, daemon.addr)
        command = command.replace(DOCUMENTED_HTTP_ADDR, daemon.http_addr)
        result = subprocess.run(
            ["bash", "-c", f"(exit {status}); {command}"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        status = result.returncode
        shown = result.stdout.replace(daemon.addr, DOCUMENTED_ADDR).replace(str(cwd), "/path/to")
        actual = shown.replace(daemon.http_addr, DOCUMENTED_HTTP_ADDR).splitlines()
        assert output_matches(step.expected, actual), (
            f"{block}: `$ {step.command}` printed:\n{result.stdout}\nthe page shows:\n"
            + "\n".join(step.expected)
        )


PAGES_WITH_TRANSCRIPTS = sorted(
    {block.page for block in ALL_BLOCKS if block.mark is None and block.language == "console"}
)


@pytest.mark.parametrize("page", PAGES_WITH_TRANSCRIPTS, ids=lambda page: str(page.relative_to(ROOT)))
def test_transcripts_print_what_the_page_shows(page: Path, tmp_path: Path) -> None:
    runnable = [b for b in blocks(page) if b.mark is None and b.language in ("console", "python")]
    with documented_daemon(tmp_path) as (daemon, env):
        names: dict[str, object] = {}
        for block in runnable:
            if block.language == "python":
                run_python(block, daemon, names)
            else:
                run_console(block, daemon, env, tmp_path)


def test_python_blocks_without_transcripts_run(tmp_path: Path) -> None:
    pages = [
        block.page
        for block in ALL_BLOCKS
        if block.mark is None and block.language == "python" and block.page not in PAGES_WITH_TRANSCRIPTS
    ]
    for page in sorted(set(pages)):
        with documented_daemon(tmp_path / page.stem) as (daemon, _env):
            names: dict[str, object] = {}
            for block in blocks(page):
                if block.mark is None and block.language == "python":
                    run_python(block, daemon, names)


# -- configuration and data ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [b for b in ALL_BLOCKS if b.mark is None and b.language in ("toml", "json")],
    ids=str,
)
def test_data_blocks_parse(block: Block, tmp_path: Path) -> None:
    if block.language == "json":
        json.loads(block.text)
        return
    tomllib.loads(block.text)
    config = tmp_path / "statehouse.toml"
    config.write_text(block.text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "rpc", "--config", str(config), "--print-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_matcher_is_strict_where_it_should_be() -> None:
    assert output_matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert output_matches(["a", "...", "z"], ["a", "z"])
    assert not output_matches(["a", "z"], ["a", "b", "z"])
    assert output_matches(["took ... ms"], ["took 1.5 ms"])
    assert not output_matches(["took ... ms"], ["took 1.5 s"])
    assert output_matches(["at 2026-11-25T14:28:44.446Z"], ["at 2027-01-02T03:04:05.678Z"])
    assert output_matches(
        ['"txn_id":"default:8379bb223acb61e96ff705c5"'], ['"txn_id":"default:0123456789abcdef01234567"']
    )
    assert not output_matches(["value 2"], ["value 3"])
    assert not output_matches(["commit_ts 2"], ["commit_ts 12"])
