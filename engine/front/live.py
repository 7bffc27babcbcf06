"""The build's console on a terminal: a live area (rich) under the scrolling lines, with every
running action, its elapsed time, its last ctx.progress report and an ETA; and, with `-v`, each
running action's own output lines, prefixed by its label.

rich is imported only when the first action starts, so a build that runs nothing (a no-op)
never pays for it. Elsewhere (a pipe, a file, `--quiet`, TERM=dumb) the plain Console of
events.py prints lines instead.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, Any

from mbuild.events import Console, clock, describe_progress, estimate

_FOLLOW_EVERY = 0.1  # seconds between two reads of the logs followed with -v
_SHOWN = 12  # running actions listed at most (the rest are counted)


def make_console(quiet: bool = False, verbose: bool = False, stream: IO[str] | None = None) -> Console:
    """The live console when `stream` (stderr) is a terminal, else the plain one; -v follows logs."""
    stream = stream or sys.stderr
    live = not quiet and stream.isatty() and os.environ.get("TERM", "") != "dumb"
    console = LiveConsole(stream) if live else Console(stream, quiet=quiet)
    if verbose and not quiet:
        console.follower = LogFollower(console)
    return console


class _Running:
    """One running action as the live area shows it. (Plain classes, not dataclasses, here: this
    module is imported by every build, and making a dataclass costs about half a millisecond.)"""

    __slots__ = ("label", "since", "expected", "report")

    def __init__(self, label: str, since: float, expected: float | None):
        self.label = label
        self.since = since  # time.monotonic()
        self.expected = expected  # seconds its last recorded run took
        self.report: dict[str, Any] | None = None  # its last ctx.progress report


class _Board:
    """What the live area shows; changed by the scheduler's thread, drawn by rich's refresh thread."""

    __slots__ = ("running", "done", "total", "hits", "started")

    def __init__(self) -> None:
        self.running: dict[str, _Running] = {}
        self.done = self.total = self.hits = 0
        self.started = time.monotonic()


class LiveConsole(Console):
    """Console lines scroll above a live area listing what runs (see the module docstring)."""

    def __init__(self, stream: IO[str]):
        super().__init__(stream)
        self._board = _Board()
        self._lock = threading.RLock()
        self._live: Any = None  # rich.live.Live, once an action started

    # --- lines ----------------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        live = self._live
        if live is None:
            print(text, file=self.stream, flush=True)
            return
        from rich.text import Text

        live.console.print(Text(text), soft_wrap=True)

    def line(self, text: str) -> None:
        if not self.quiet:
            self._keep(text)
            self._print(text)

    def error(self, text: str) -> None:
        self._keep(text)
        self._print(text)

    # --- what runs ------------------------------------------------------------------------------

    def started(self, label: str, done: int, total: int, expected: float | None = None) -> None:
        with self._lock:
            self._board.running[label] = _Running(label, time.monotonic(), expected)
            self._board.done, self._board.total = done, total
        self._start_live()

    def progress(self, label: str, report: dict[str, Any], elapsed: float) -> None:
        with self._lock:
            running = self._board.running.get(label)
            if running is not None:
                running.report = report

    def ended(self, label: str, log: str | None = None) -> None:
        with self._lock:
            self._board.running.pop(label, None)
        super().ended(label, log)

    def settled(self, hit: bool, done: int, total: int) -> None:
        with self._lock:
            self._board.done, self._board.total = done, total
            self._board.hits += hit

    def close(self) -> None:
        super().close()
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    # --- drawing --------------------------------------------------------------------------------

    def _start_live(self) -> None:
        if self._live is not None:
            return
        from rich.console import Console as RichConsole
        from rich.live import Live

        rich_console = RichConsole(file=self.stream, highlight=False, soft_wrap=False)
        self._live = Live(self, console=rich_console, refresh_per_second=4, transient=True, redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        with self._lock:
            board = self._board
            running = sorted(board.running.values(), key=lambda r: r.since)
            head = f"[{board.done}/{board.total}] {board.hits} cache hit{'s' if board.hits != 1 else ''}, {len(running)} running, {clock(now - board.started)}"
            rows = []
            for r in running[:_SHOWN]:
                elapsed = now - r.since
                eta = estimate(elapsed, r.report, r.expected)
                what = describe_progress(r.report) if r.report is not None else ""
                when = f"ETA {clock(eta)}" if eta is not None else ""
                if r.expected is not None:
                    when += f" (last run {clock(r.expected) if r.expected >= 10 else f'{r.expected:.1f}s'})"
                rows.append((r.label, clock(elapsed), what, when.strip()))
            more = len(running) - _SHOWN
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        table.add_column(no_wrap=True)
        for label, elapsed, what, when in rows:
            table.add_row(Text("  " + label, style="cyan"), Text(elapsed), Text(what), Text(when, style="dim"))
        if more > 0:
            table.add_row(Text(f"  ... and {more} more running"), "", "", "")
        return Group(Text(head, style="bold"), table)


class LogFollower:
    """`-v`: a thread that prints the new lines of each running action's log, as `label> line`."""

    def __init__(self, console: Console):
        self.console = console
        self._files: dict[str, tuple[IO[bytes], bytearray]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, label: str, path: str, inode: int | None = None) -> None:
        try:
            f = open(path, "rb")
        except OSError:
            return  # already kept elsewhere: shown from there when the action ends (remove)
        if inode is not None and os.fstat(f.fileno()).st_ino != inode:
            f.close()  # the worker's next action's log by now: this one's is shown when it ends
            return
        with self._lock:
            old = self._files.pop(label, None)
            self._files[label] = (f, bytearray())
        if old is not None:
            old[0].close()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="mbuild-follow")
            self._thread.start()

    def remove(self, label: str, log: str | None = None) -> None:
        """The action ended: print what is left of its log, and stop following it. A quick action's
        scratch log may be gone (kept as `log`) before it was ever opened here: then `log` is shown."""
        with self._lock:
            found = self._files.pop(label, None)
            if found is None and log:
                try:
                    found = (open(log, "rb"), bytearray())
                except OSError:
                    return
            if found is not None:
                self._read(label, *found, final=True)
                found[0].close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        with self._lock:
            for label, found in list(self._files.items()):
                self._read(label, *found, final=True)
                found[0].close()
            self._files.clear()

    def _loop(self) -> None:
        while not self._stop.wait(_FOLLOW_EVERY):
            with self._lock:
                for label, (f, pending) in list(self._files.items()):
                    self._read(label, f, pending)

    def _read(self, label: str, f: IO[bytes], pending: bytearray, final: bool = False) -> None:
        try:
            data = f.read(1 << 20)
        except (OSError, ValueError):
            return
        if data:
            pending += data
        *lines, rest = bytes(pending).split(b"\n")
        if final and rest:
            lines.append(rest)
            rest = b""
        pending[:] = rest
        for line in lines:
            self.console.line(f"{label}> {line.decode('utf-8', 'replace').rstrip()}")
