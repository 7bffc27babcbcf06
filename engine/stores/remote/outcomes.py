"""What a request to the remote comes to, besides its answer (internal to this package), and the
one error a caller sees: blobs that could not be fetched."""

from __future__ import annotations

from mbuild.errors import BlobUnavailableError


class Missing(Exception):
    """The object is not there (a normal miss)."""


class Exists(Exception):
    """A create-if-absent found the object already there."""


class Failed(Exception):
    """The request failed (counted against the circuit breaker), or the breaker is open."""


class Corrupt(Exception):
    """The remote bytes are not what they should be."""


class DeadlinePassed(TimeoutError):
    """Our own deadline for one request passed."""


class RemoteBlobsUnavailableError(BlobUnavailableError):
    """Blobs that could not be fetched: missing, corrupt (never installed), or remote unavailable.

    `problems` maps each such digest to the reason; `digest` is the first of them. It is a
    CacheCorruptError, so callers treat it as a miss.
    """

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        first = next(iter(self.problems))
        super().__init__(first, self.problems[first])
        shown = "; ".join(f"{d} ({why})" for d, why in list(self.problems.items())[:5])
        more = f"; and {len(self.problems) - 5} more" if len(self.problems) > 5 else ""
        self.args = (f"{len(self.problems)} blob(s) unavailable from the remote cache: {shown}{more}",)


def describe(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__
