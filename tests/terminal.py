"""Run a command with a real pseudo-terminal as its stdout, as a user's shell would, and read what it drew."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: CSI sequences (colours, cursor moves, line erases) and the lone escapes rich uses.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[=>]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def run_in_terminal(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: Path | None = None, columns: int = 120
) -> tuple[int, str]:
    """Run `argv` with a pty for stdin, stdout and stderr; return its exit status and everything it wrote,
    escape sequences removed. Raises TimeoutError (after killing it) if it runs longer than `timeout`."""
    controller, terminal = pty.openpty()
    environment = {**env, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm-256color"}
    process = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal, env=environment, cwd=cwd)
    os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the terminal's other end is closed, the process has exited
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
            raise TimeoutError(f"{argv} ran past {timeout}s; it wrote:\n{output.decode(errors='replace')}")
        return process.wait(timeout), strip_ansi(output.decode(errors="replace"))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
