"""What one remote cache client did: requests, bytes, results and blobs moved, failures, damage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TransferStats:
    requests: int = 0  # HTTP requests sent (gs/s3: counted on the wire, retries included); file ops for file://
    bytes_up: int = 0  # blob and record bytes sent
    bytes_down: int = 0  # blob and record bytes received
    results_fetched: int = 0  # valid results read
    results_uploaded: int = 0  # results created by this client
    blobs_fetched: int = 0  # blobs verified and installed into the local CAS
    blobs_uploaded: int = 0
    errors: int = 0  # failed requests (unreachable, timed out, refused): not misses
    corrupt: int = 0  # corrupt result records and blobs seen (each reported through on_warning)
