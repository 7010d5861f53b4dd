"""The CLI in a pseudo-terminal, as a person runs it: rich sees a tty (colours, a live display),
unlike the piped runs of tests/stack.py. The terminal's size is set, so nothing depends on the
terminal the tests run in."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def plain(text: str) -> str:
    """The text a person reads: escape sequences (colours, cursor moves) and carriage returns gone."""
    return ANSI.sub("", text)


class Terminal:
    def __init__(self, args: list[str], *, redis_url: str, columns: int = 200, rows: int = 60) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {**os.environ, "REDIS_URL": redis_url, "TERM": "xterm-256color", "COLUMNS": str(columns)}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.cli", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.raw = b""

    @property
    def text(self) -> str:
        return plain(self.raw.decode(errors="replace"))

    def _read(self, wait: float) -> bool:
        """Read what is there; False once the terminal is closed (the process ended)."""
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, needle: str, *, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"{needle!r} not shown in the terminal; it shows:\n{self.text[-3000:]}")

    def finish(self, *, timeout: float = 120) -> int:
        """Read to the end; the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(0.2):
            if time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"still running after {timeout}s:\n{self.text[-3000:]}")
        return self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
