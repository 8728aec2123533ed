"""System calls of running processes, seen with strace: what reached the disk, and when.

`Trace(pids, calls)` attaches `strace -f` to every thread of the given processes, records the named
system calls with their thread and time, and detaches on `stop()`. Used to count fsyncs (an
acknowledged delivery must be on the disk before its 200) without any hook inside reactor.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

LINE = re.compile(r"^(?P<tid>\d+)\s+(?P<at>\d+:\d+:\d+\.\d+)\s+(?P<call>\w+)\((?P<args>.*)$")


@dataclass(frozen=True)
class Syscall:
    tid: int
    at: str
    call: str
    args: str  # the rest of the line as strace printed it (arguments, result)


def require_strace() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.fail("strace is needed to count fsyncs (apt-get install strace)")
    return path


def children(pid: int) -> list[int]:
    """The direct child processes of `pid` (gunicorn's workers, for its master)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Trace:
    def __init__(self, pids: list[int], calls: tuple[str, ...], out: Path, strlen: int = 80, fd_paths: bool = False):
        """fd_paths: print each descriptor with its path (strace -y), e.g. fdatasync(5</…/pg_wal/0001…>)."""
        assert pids, "nothing to trace"
        self.out = out
        args = [require_strace(), "-f", "-tt", "-s", str(strlen), "-e", "trace=" + ",".join(calls), "-o", str(out)]
        args += ["-y"] if fd_paths else []
        for pid in pids:
            args += ["-p", str(pid)]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        attached: set[int] = set()
        deadline = time.time() + 10
        while attached < set(pids):  # strace says so on stderr once each process (all its threads) is attached
            line = self.proc.stderr.readline()
            if not line or time.time() > deadline:
                self.stop()
                pytest.fail(f"strace could not attach to {pids}: {line.strip()}")
            found = re.search(r"Process (\d+) attached|PTRACE_SEIZE, (\d+)\): No such process", line)
            if found:  # attached, or gone before strace got to it (a database backend that just ended)
                attached.add(int(found.group(1) or found.group(2)))

    def stop(self) -> list[Syscall]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # detach; the traced processes carry on
            self.proc.wait(10)
        self.proc.stderr.close()
        return self.calls()

    def calls(self) -> list[Syscall]:
        """Every recorded call in the order it started (an interrupted call counts once, at its start)."""
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            found = LINE.match(line)
            if found:
                out.append(Syscall(int(found["tid"]), found["at"], found["call"], found["args"]))
        return out


def flushes_before_each_200(calls: list[Syscall], is_flush) -> list[int]:
    """For each acknowledgement in `calls` (a 200's header, then an `accepted` body, sent by one thread): how
    many calls that `is_flush` picks started after the previous acknowledgement and before this one's header."""
    counts, since_last_answer, header_at = [], 0, {}
    for call in calls:
        if is_flush(call):
            since_last_answer += 1
        elif call.call == "sendto" and "HTTP/1.1 200" in call.args:
            header_at[call.tid] = since_last_answer  # flushes seen when this thread sent the 200's header
        elif call.call == "sendto" and r'\"status\":\"accepted' in call.args:  # strace escapes quotes
            counts.append(header_at.pop(call.tid))
            since_last_answer = 0
    return counts
