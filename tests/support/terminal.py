"""A program in a real pseudo-terminal, read the way a person sees it.

pexpect runs the process in a pty (so it gets a real TTY, raw mode, window size and
all); pyte replays the bytes it writes into a virtual screen, so a test can wait for
text to appear on screen and send keys as a person would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import pexpect
import pyte

KEYS = {
    "enter": "\r",
    "escape": "\x1b",
    "tab": "\t",
    "down": "\x1b[B",
    "up": "\x1b[A",
    "ctrl+t": "\x14",
    "ctrl+s": "\x13",
}


class Terminal:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        columns: int = 160,
        lines: int = 48,
        cwd: str | None = None,
    ) -> None:
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        full_env = dict(os.environ if env is None else env)
        full_env.update({"TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(lines)})
        self.child = pexpect.spawn(
            argv[0],
            list(argv[1:]),
            env=full_env,
            dimensions=(lines, columns),
            cwd=cwd,
            timeout=5,
        )
        self.output = bytearray()

    def pump(self, seconds: float = 0.1) -> None:
        """Reads whatever the program wrote for up to ``seconds`` into the screen."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            try:
                data = self.child.read_nonblocking(65536, timeout=max(0.01, remaining))
            except pexpect.TIMEOUT:
                data = b""
            except pexpect.EOF:
                return
            if data:
                self.output.extend(data)
                self.stream.feed(data)
            if remaining <= 0:
                return

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        """Waits until ``needle`` is on screen; returns the screen. Fails with the screen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            screen = self.text()
            if needle in screen:
                return screen
            if not self.child.isalive():
                break
        raise AssertionError(f"{needle!r} not on screen after {timeout}s:\n{self.text()}")

    def press(self, *keys: str, settle: float = 0.3) -> None:
        for key in keys:
            self.child.send(KEYS.get(key, key))
            self.pump(0.05)
        self.pump(settle)

    def type(self, text: str) -> None:
        self.child.send(text)
        self.pump(0.2)

    def wait_exit(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.child.isalive() and time.monotonic() < deadline:
            self.pump(0.1)
        if self.child.isalive():
            raise AssertionError(f"still running after {timeout}s:\n{self.text()}")
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
