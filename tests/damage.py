"""Damage done to a real local cache, the ways it happens: an editor or script writing through an
output link, a sync tool replacing files, a crash truncating them, a bad copy swapping records.

Shared by tests/test_integrity.py (a property test) and bench/damage_harness.py (many rounds).
Every operation picks its target with the given random generator, so a seed replays it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


# What a property test may do without risking LMDB's own aborts on bit flips it does not check
# (those are healed on the next run: the harness counts them apart).
SAFE_KINDS = (
    "flip", "truncate", "rewrite", "rename-over", "delete", "plant", "chmod",
    "swap-records", "drop-record", "db-truncate", "db-random-64k", "db-not-a-directory",
)
ALL_KINDS = (*SAFE_KINDS, "db-flip-pages")


@dataclass(frozen=True)
class Damage:
    kind: str
    target: str  # relative to the cache directory
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.target}{' ' + self.detail if self.detail else ''}"


def cache_files(cache: Path) -> list[Path]:
    """The files a damage may hit: blobs, output trees, logs (the database is damaged as a whole)."""
    out = []
    for sub in ("cas", "trees", "logs"):
        base = cache / sub
        if base.is_dir():
            out.extend(p for p in sorted(base.rglob("*")) if p.is_file() and not p.is_symlink())
    return out


def apply(cache: Path, kind: str, rng: random.Random) -> Damage | None:
    """Do one damage of `kind` to the cache at `cache`; None if there was nothing to damage."""
    if kind.startswith("db-") or kind in ("swap-records", "drop-record"):
        return _database(cache, kind, rng)
    files = cache_files(cache)
    if not files:
        return None
    path = rng.choice(files)
    rel = str(path.relative_to(cache))
    size = path.stat().st_size
    if kind == "flip" and size:
        offset = rng.randrange(size)
        data = bytearray(path.read_bytes())
        data[offset] ^= 1 << rng.randrange(8)
        _write_in_place(path, bytes(data))
        return Damage(kind, rel, f"byte {offset}")
    if kind == "truncate" and size:
        length = rng.randrange(size)
        os.chmod(path, 0o644)
        os.truncate(path, length)
        return Damage(kind, rel, f"to {length}")
    if kind in ("rewrite", "flip", "truncate"):  # (an empty file: rewrite it instead)
        _write_in_place(path, rng.randbytes(rng.randint(1, 64)))
        return Damage("rewrite", rel)
    if kind == "rename-over":
        tmp = path.with_name(f".damage-{rng.getrandbits(32):08x}")
        tmp.write_bytes(rng.randbytes(rng.randint(0, 64)))
        os.replace(tmp, path)
        return Damage(kind, rel)
    if kind == "delete":
        path.unlink()
        return Damage(kind, rel)
    if kind == "plant":
        (path.parent / f"planted-{rng.getrandbits(16):04x}").write_bytes(b"not an output")
        return Damage(kind, str(path.parent.relative_to(cache)))
    if kind == "chmod":
        os.chmod(path, rng.choice([0o600, 0o644, 0o755]))
        return Damage(kind, rel)
    raise ValueError(f"unknown damage {kind!r}")


def _write_in_place(path: Path, data: bytes) -> None:
    """Through the same inode (as an editor saving in place would): its blob twin changes too."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))


def _database(cache: Path, kind: str, rng: random.Random) -> Damage | None:
    db = cache / "db"
    data = db / "data.mdb"
    if not data.is_file():
        return None
    size = data.stat().st_size
    if kind == "db-truncate":
        length = rng.randrange(size)
        os.truncate(data, length)
        return Damage(kind, "db/data.mdb", f"to {length}")
    if kind == "db-random-64k":
        offset = rng.randrange(max(1, size - 65536))
        with open(data, "r+b") as f:
            f.seek(offset)
            f.write(rng.randbytes(min(65536, size - offset)))
        return Damage(kind, "db/data.mdb", f"at {offset}")
    if kind == "db-not-a-directory":
        shutil.rmtree(db)
        db.write_bytes(b"not a database")
        return Damage(kind, "db")
    if kind == "db-flip-pages":
        with open(data, "r+b") as f:
            flips = []
            for _ in range(rng.choice([1, 5, 20])):
                page = rng.randrange(size // 4096)
                offset = page * 4096 + (rng.randrange(64) if rng.random() < 0.7 else rng.randrange(4096))
                f.seek(offset)
                byte = f.read(1)
                f.seek(offset)
                f.write(bytes([byte[0] ^ (1 << rng.randrange(8))]))
                flips.append(offset)
        return Damage(kind, "db/data.mdb", f"{len(flips)} bits")
    # Records are swapped by a child process: the database may already be damaged so badly that
    # touching it kills the process (which is what mbuild itself must survive, not this harness).
    proc = subprocess.run(
        [sys.executable, "-c", _RECORDS, str(db), kind, str(rng.getrandbits(32))], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return Damage(kind, "db/ac", proc.stdout.strip())


_RECORDS = """
import random, sys, lmdb
db, kind, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
env = lmdb.open(db, max_dbs=16, map_size=1 << 40)
ac = env.open_db(b"ac")
with env.begin(db=ac, write=True) as txn:
    keys = [bytes(k) for k, _ in txn.cursor()]
    if kind == "swap-records" and len(keys) >= 2:
        a, b = rng.sample(keys, 2)
        va, vb = txn.get(a), txn.get(b)
        txn.put(a, vb)
        txn.put(b, va)
        print(a.decode()[:8], "<->", b.decode()[:8])
    elif kind == "drop-record" and keys:
        k = rng.choice(keys)
        txn.delete(k)
        print(k.decode()[:8])
env.close()
"""


# --- live pages of an LMDB file (for damage that must land on a page in use) --------------------

_PAGE_HEADER = 16  # pgno (8), pad (2), flags (2), lower (2), upper (2) on 64-bit builds
_P_BRANCH, _P_LEAF, _F_SUBDATA = 0x01, 0x02, 0x02


def live_pages(data_mdb: Path, table: bytes, page_size: int = 4096) -> list[int]:
    """The page numbers of the B-tree of named table `table` in an LMDB file, found by walking it
    from the newest meta page (pages that are free, or held only by older snapshots, are never
    among them). Assumes a 64-bit build, LMDB's on-disk format 1, and no duplicate-key tables."""
    data = data_mdb.read_bytes()

    def page(n: int) -> bytes:
        return data[n * page_size : (n + 1) * page_size]

    def nodes(p: bytes):
        lower = int.from_bytes(p[12:14], "little")
        for k in range((lower - _PAGE_HEADER) // 2):
            at = int.from_bytes(p[_PAGE_HEADER + 2 * k : _PAGE_HEADER + 2 * k + 2], "little")
            lo, hi, flags, ksize = (int.from_bytes(p[at + i : at + i + 2], "little") for i in (0, 2, 4, 6))
            yield lo, hi, flags, p[at + 8 : at + 8 + ksize], p[at + 8 + ksize :]

    def walk(root: int) -> list[int]:
        out, todo = [], [root]
        while todo:
            n = todo.pop()
            out.append(n)
            p = page(n)
            if int.from_bytes(p[10:12], "little") & _P_BRANCH:
                todo.extend(lo | hi << 16 | flags << 32 for lo, hi, flags, _, _ in nodes(p))
        return out

    metas = [page(0)[_PAGE_HEADER:], page(1)[_PAGE_HEADER:]]
    meta = max(metas, key=lambda m: int.from_bytes(m[128:136], "little"))  # mm_txnid
    main_root = int.from_bytes(meta[72 + 40 : 72 + 48], "little")  # mm_dbs[MAIN_DBI].md_root
    for n in walk(main_root):
        p = page(n)
        if int.from_bytes(p[10:12], "little") & _P_LEAF:
            for _, _, flags, key, value in nodes(p):
                if key == table and flags & _F_SUBDATA:
                    return walk(int.from_bytes(value[40:48], "little"))
    raise AssertionError(f"no table {table!r} in {data_mdb}")
