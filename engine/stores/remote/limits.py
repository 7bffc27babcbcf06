"""The remote cache's sizes, rates and batch limits, in one place.

Modules of this package read them as `limits.NAME` at the time of use, so a test or a benchmark
may lower one for a run (monkeypatch `mbuild.stores.remote.limits.MAX_RECORD`)."""

from __future__ import annotations

# Blobs up to this size move as one request, whole in memory; larger ones are streamed.
WHOLE_MAX = 8 << 20
# An S3 multipart upload part, the file:// copy buffer, and a ranged read on fsspec backends
# without a streaming read.
CHUNK = 8 << 20
# Bytes of whole small blobs held in memory at once (streamed transfers hold about 1 MiB each).
MEMORY_BUDGET = 64 << 20
# Large uploads at once (an S3 multipart upload holds up to UPLOAD_PARTS parts of CHUNK in memory).
LARGE_UPLOADS = 2
UPLOAD_PARTS = 3
# Progress is reported for blobs at least this large, at most once per PROGRESS_STEP bytes.
PROGRESS_MIN = 8 << 20
PROGRESS_STEP = 8 << 20
# A request moving n bytes gets timeout + n / MIN_RATE seconds before it counts as failed.
MIN_RATE = 1 << 20
# A result record larger than this is refused as corrupt, and no more than one byte past it is read.
# A record lists every output file (~100 bytes plus its path each): 100,000 files with 200-character
# paths come to about 30 MB; the returned value is under 1 MiB.
MAX_RECORD = 64 << 20
# Records larger than this are parsed on a worker thread, not on the event loop.
PARSE_INLINE_MAX = 1 << 20
# Setting up a client (credentials, sessions) gets the request timeout, but never less than this.
CONNECT_MIN = 2.0
# missing_blobs may list prefix directories (one page each) instead of asking object by object
# when a batch holds at least this many digests.
LIST_MIN_BATCH = 64
LIST_PAGE = 1000
# A streamed download is written to its file this many bytes at a time (and read so from file://).
FLUSH = 1 << 20
