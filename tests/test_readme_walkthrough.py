"""README's "Writing your first rules", run as written: its rule file and every command in it, through
the `reactor` command that `pip install .` gives, in a folder outside the repository.

The section's fenced blocks are marked with a comment on the line before each:
`<!-- walkthrough: file PATH -->` (save the block as PATH), `<!-- walkthrough: run -->` (run each
command line; each `# > text` line after a command is output it must print) and
`<!-- walkthrough: background -->` (a command that keeps running, such as `reactor dev`).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port
from tests.installed import reactor_env

SECTION = "## Writing your first rules"
BLOCK = re.compile(r"^<!-- walkthrough: (file (?P<path>\S+)|run|background) -->\n```[a-z]*\n(?P<body>.*?)^```$",
                   re.M | re.S)


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def blocks() -> list[tuple[str, str | None, str]]:
    """(kind, path, body) of each marked block, in order; every fenced block must be marked."""
    section = walkthrough()
    found = [(m.group(1).split()[0], m.group("path"), m.group("body")) for m in BLOCK.finditer(section)]
    fences = len(re.findall(r"^```", section, re.M))
    assert len(found) * 2 == fences, "every fenced block of the walkthrough is marked (and so run)"
    return found


def commands(body: str) -> list[tuple[str, list[str]]]:
    """Each command line of a run block with the `# >` lines that follow it."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("# > "):
            assert out, f"expected output before any command: {line}"
            out[-1][1].append(line[4:].strip())
        elif line.strip() and not line.startswith("#"):
            out.append((line, []))
    return out


@pytest.fixture
def user_folder(tmp_path):
    started: list[subprocess.Popen] = []
    yield tmp_path, started
    for proc in started:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def start_background(folder: Path, command: str, started: list) -> None:
    port = free_port()
    log = folder / "background.log"
    proc = subprocess.Popen(["bash", "-c", command], cwd=folder, env=reactor_env(PORT=str(port)),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, f"{command} exited:\n{log.read_text()}"
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"{command} did not become ready:\n{log.read_text()}")


def run(folder: Path, command: str, expected: list[str]) -> None:
    """Run one command as the reader would (bash, their folder, `reactor` on PATH, no PORT); history is
    read again for a while, as the dispatcher finishes the calls after `send` returns."""
    deadline = time.time() + (20 if command.startswith("reactor history") else 0)
    while True:
        result = subprocess.run(["bash", "-c", command], cwd=folder, env=reactor_env(), capture_output=True,
                                text=True, timeout=120)
        missing = [line for line in expected if line not in result.stdout]
        if (result.returncode == 0 and not missing) or time.time() > deadline:
            break
        time.sleep(0.3)
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
    assert not missing, f"{command}\nmissing: {missing}\nprinted:\n{result.stdout}"


def test_the_walkthrough_runs_as_written(user_folder):
    folder, started = user_folder
    ran = 0
    for kind, path, body in blocks():
        if kind == "file":
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(body)
        elif kind == "background":
            [(command, _)] = commands(body)
            start_background(folder, command, started)
        else:
            for command, expected in commands(body):
                run(folder, command, expected)
                ran += 1
    assert ran >= 10 and started, "the walkthrough checks, explains, sends and reads the history"


def test_the_walkthrough_covers_the_five_requests():
    section = walkthrough()
    for words in ("weekdays from 09:00 to 17:00, London", '"Board…" meetings to our own RTMP server',
                  'contains "[private]"', "big, numeric", "examples"):
        assert words in section
    files = [b for b in blocks() if b[0] == "file"]
    assert [path for _, path, _ in files] == ["rules/events.yaml"]
    body = files[0][2]
    for rule_part in ("days: [mon-fri]", "timezone: Europe/London", 'glob: "Board*"', "livestream.stop",
                      'contains: "[private]"', "id: 89123456789", "examples:"):
        assert rule_part in body
