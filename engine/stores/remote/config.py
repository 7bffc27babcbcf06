"""Where the remote cache is and how to talk to it: RemoteConfig, and the one parser of the URLs
the store, its backends and the lease objects are given (gs://, s3://, file://, any fsspec URL)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Other names of the same schemes: gcs:// is gs://, s3a:// is s3://.
ALIASES = {"gcs": "gs", "s3a": "s3"}
BUCKET_SCHEMES = ("gs", "s3")
LOCAL_SCHEMES = ("", "file", "local")  # "" is a plain path


@dataclass(frozen=True)
class RemoteConfig:
    url: str  # gs://bucket/prefix, s3://bucket/prefix, file:///path (any fsspec URL)
    upload: bool = True  # False: a read-only client that never writes anything
    timeout: float = 10.0  # seconds per request (plus size / 1 MiB/s for bulk transfers)
    max_failures: int = 3  # consecutive failed requests that open the circuit breaker
    concurrency: int = 32  # requests in flight
    storage_options: dict = field(default_factory=dict)  # passed to the fsspec filesystem


@dataclass(frozen=True)
class Location:
    """A parsed URL or path. `scheme` is lower case with its aliases resolved ("" for a plain path).

    gs:// and s3://: `bucket`, `prefix` (the key prefix, no slash at either end) and `root` (the
    fsspec path, bucket/prefix). file://, local:// and plain paths: `path` as written, with a
    file://localhost/ host dropped (not yet made absolute: callers do, each its own way)."""

    url: str
    scheme: str
    bucket: str = ""
    prefix: str = ""
    root: str = ""
    path: str = ""

    @property
    def is_local(self) -> bool:
        return self.scheme in LOCAL_SCHEMES

    @property
    def in_bucket(self) -> bool:
        return self.scheme in BUCKET_SCHEMES

    @property
    def normalised(self) -> str:
        """gs://bucket/prefix or s3://bucket/prefix, with the scheme's canonical name."""
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name


def parse_url(url: str, what: str = "remote cache url") -> Location:
    """`url` split into its parts; ValueError (naming `what`) for an empty scheme before "://" or a
    gs:// or s3:// URL that names no bucket. Nothing is imported or asked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return Location(url, "", path=url)
    scheme = scheme.lower()
    scheme = ALIASES.get(scheme, scheme)
    if not scheme:
        raise ValueError(f"{what} {url!r} needs a scheme (gs://, s3://, file://...)")
    if scheme in BUCKET_SCHEMES:
        root = rest.strip("/")
        if not root:
            raise ValueError(f"{what} {url!r} names no bucket")
        bucket, _, prefix = root.partition("/")
        return Location(url, scheme, bucket=bucket, prefix=prefix.strip("/"), root=root)
    if scheme in LOCAL_SCHEMES:
        return Location(url, scheme, path=rest[len("localhost"):] if rest.startswith("localhost/") else rest)
    return Location(url, scheme)


def check_url(url: str) -> Location:
    """The location of a remote cache URL; ValueError for one no backend can use (before anything
    is imported or asked)."""
    location = parse_url(url)
    if not location.scheme:
        raise ValueError(f"remote cache url {url!r} needs a scheme (gs://, s3://, file://...)")
    return location
