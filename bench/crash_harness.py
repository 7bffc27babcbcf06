"""Crash harness: SIGKILL builders at random points, again and again, and check nothing is lost.

A 50-action graph whose actions log every execution (start and end, with pid) and write outputs
of assorted sizes. Each round starts one or two builders on the shared cache and kills one: at a
fault-injection point (lease held, running, hashing, writing blobs, writing the result, just
published: `MBUILD_FAULTS`) or at a random moment (a timer SIGKILL). After every round the cache
is audited: every action-cache entry must be readable and every blob it names present and
matching its digest. At the end a clean build must produce exactly the expected outputs
(computed independently), and the execution log must show no two overlapping executions of
one action (the single-flight guarantee).

    python bench/crash_harness.py                 # 80 rounds
    python bench/crash_harness.py --rounds 12 --actions 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

RULES = '''
import os, time
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "n": attr.int(), "log": attr.string(), "size": attr.int(), "seconds": attr.float()},
      outputs=["value.txt", "blob.bin"])
def work(ctx):
    with open(ctx.attr.log, "a") as f:
        f.write(f"start {ctx.attr.n} {os.getpid()} {time.time()}\\n")
    time.sleep(ctx.attr.seconds)
    total = ctx.attr.n + sum(int((d / "value.txt").read_text()) for d in ctx.inputs.deps)
    (ctx.out / "value.txt").write_text(str(total))
    with open(ctx.out / "blob.bin", "wb") as f:          # big enough that hashing and storing take a while
        f.write(bytes([ctx.attr.n % 256]) * ctx.attr.size)
    with open(ctx.attr.log, "a") as f:
        f.write(f"end {ctx.attr.n} {os.getpid()} {time.time()}\\n")
'''

PHASES = ["acquired", "running", "hashing", "writing-blobs", "writing-result", "published"]


def make_workspace(root: Path, actions: int, seed: int) -> tuple[Path, dict[int, list[int]]]:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "crashrules.py").write_text(RULES)
    log = root / "executions.log"
    deps = {i: sorted(set(rng.sample(range(i), min(i, 2)))) if i else [] for i in range(actions)}
    lines = ["from crashrules import work"]
    for i in range(actions):
        size = rng.choice([1_000, 200_000, 4_000_000])
        lines.append(f'work(name="a{i}", n={i}, log={str(log)!r}, size={size}, seconds={rng.uniform(0.02, 0.3):.3f}, deps={[f":a{d}" for d in deps[i]]!r})')
    (root / "g").mkdir()
    (root / "g" / "BUILD.py").write_text("\n".join(lines) + "\n")
    return log, deps


def expected_values(deps: dict[int, list[int]]) -> dict[int, int]:
    values: dict[int, int] = {}
    for i in sorted(deps):
        values[i] = i + sum(values[d] for d in deps[i])
    return values


def builder(root: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mbuild.front.cli", "build", "-q", "--jobs", "2", "//g:all"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def audit(cache: Path) -> tuple[int, int]:
    """(entries checked, corrupt entries): every result readable, every blob present and matching."""
    from mbuild.digests import digest_file
    from mbuild.errors import CacheCorruptError
    from mbuild.stores.results import ActionResult
    from mbuild.stores.localdb import LocalDB

    db = LocalDB(cache / "db")
    corrupt = checked = 0
    for key, record in db.result_records():
        checked += 1
        try:
            result = ActionResult.from_record(record, key)
        except CacheCorruptError:
            corrupt += 1
            continue
        for f in result.files:
            blob = cache / "cas" / f.digest[:2] / f.digest[2:]
            if not blob.exists() or digest_file(blob) != (f.digest, f.size):
                corrupt += 1
                break
    db.close()
    return checked, corrupt


def overlaps(log: Path) -> int:
    """Executions of one action that ran at the same time (a finished one overlapping another)."""
    runs: dict[int, list[list[float]]] = defaultdict(list)
    open_runs: dict[tuple[int, int], list[float]] = {}
    for line in log.read_text().splitlines():
        kind, n, pid, t = line.split()
        key = (int(n), int(pid))
        if kind == "start":
            open_runs[key] = [float(t), float("nan")]
            runs[int(n)].append(open_runs[key])
        elif key in open_runs:
            open_runs.pop(key)[1] = float(t)
    count = 0
    for spans in runs.values():
        spans.sort()
        for a, b in zip(spans, spans[1:]):
            if a[1] == a[1] and b[0] < a[1]:  # a finished after b started
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--actions", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="mbuild-crash-"))
    root = tmp / "ws"
    log, deps = make_workspace(root, args.actions, args.seed)
    cache = root / ".mbuild" / "cache"
    kills: Counter[str] = Counter()
    corrupt_total = checked_total = builders_started = 0
    start = time.monotonic()
    try:
        salt = 0
        for r in range(args.rounds):
            # A completed round moves to a new salt (every key new, so the next round has real work);
            # after a kill the same keys are built again, over what the killed builder left behind.
            (root / "WORKSPACE.toml").write_text(f'[workspace]\nsalt = "round-{salt}"\n[lease]\nttl = 3.0\nrenew = 0.5\n')
            phase = rng.choice(PHASES + ["timer"])
            env = {"MBUILD_FAULTS": f"{phase}={rng.uniform(0.15, 0.5):.2f}"} if phase != "timer" else {}
            victim = builder(root, env)
            peers = [builder(root)] if rng.random() < 0.5 else []
            builders_started += 1 + len(peers)
            if phase == "timer":
                time.sleep(rng.uniform(0.1, 1.5))  # a random moment of the build: the point of this harness
                if victim.poll() is None:
                    os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=600)
            killed = victim.returncode == -signal.SIGKILL
            if not killed:
                salt += 1
            kills[phase if killed else "finished-before-kill"] += 1
            for p in peers:
                p.wait(timeout=600)
                if p.returncode != 0:
                    raise SystemExit(f"round {r}: a peer builder failed:\n{p.stderr.read()[-3000:]}")
            checked, corrupt = audit(cache)
            checked_total += checked
            corrupt_total += corrupt
            print(f"round {r + 1:>3}/{args.rounds}: {phase:<15} {'killed' if killed else 'completed':<9} entries {checked:>3} corrupt {corrupt}", flush=True)
        (root / "WORKSPACE.toml").write_text(f'[workspace]\nsalt = "round-{salt}"\n')
        final = builder(root)
        _, err = final.communicate(timeout=600)
        if final.returncode != 0:
            raise SystemExit(f"final build failed:\n{err[-3000:]}")
        want = expected_values(deps)
        got = {i: int((root / "mbuild-out" / "g" / f"a{i}" / "value.txt").read_text()) for i in deps}
        wrong = sum(got[i] != want[i] for i in deps)
        blobs_wrong = sum(
            (root / "mbuild-out" / "g" / f"a{i}" / "blob.bin").read_bytes()[:1] != bytes([i % 256]) for i in deps
        )
        dup = overlaps(log)
        executions = sum(1 for line in log.read_text().splitlines() if line.startswith("start"))
        print()
        print(json.dumps({
            "rounds": args.rounds, "actions": args.actions, "builders_started": builders_started + 1,
            "kills": sum(v for k, v in kills.items() if k != "finished-before-kill"), "kills_by_phase": dict(kills),
            "executions": executions, "overlapping_executions (duplicates)": dup,
            "cache_entries_audited": checked_total, "corrupt_entries_found": corrupt_total,
            "final_outputs_wrong": wrong + blobs_wrong, "seconds": round(time.monotonic() - start, 1),
        }, indent=2))
        if corrupt_total or wrong or blobs_wrong or dup:
            raise SystemExit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
