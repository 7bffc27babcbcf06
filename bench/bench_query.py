"""Cold-process `mbuild query` speed on a 10,000-target random graph, loading included.

Generates the workspace with synth.py in a temporary directory, then times fresh processes:
`deps(//...)` (every target loaded, traversed and printed) and `deps` of the last target, each the
median of --runs after a first run that also compiles the BUILD files (reported too), against
`mbuild --help` (the start-up every command pays).

    python bench/bench_query.py [-n 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import synth

# `mbuild` with the query command registered (whether or not engine/cli.py registers it already).
RUNNER = """
import sys
from mbuild.front.cli import main
from mbuild.front.query.command import query
if "query" not in main.commands:
    main.add_command(query)
sys.argv[0] = "mbuild"
main()
"""


def run(root: Path, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"mbuild {' '.join(args)} failed:\n{proc.stderr}")
    return seconds, proc.stdout


def median(root: Path, runs: int, *args: str) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(runs):
        seconds, out = run(root, *args)
        times.append(seconds)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10_000, help="targets in the workspace")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (the median is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        synth.generate(root, "random", args.n)
        startup, _ = median(root, args.runs, "--help")
        print(f"workspace: {args.n} targets (random shape, 100 per package) in {root}")
        print(f"{'mbuild --help (start-up)':<34} {startup:6.3f} s")
        first, _ = run(root, "query", "deps(//...)")
        print(f"{'first query (compiles BUILD files)':<34} {first:6.3f} s")
        last = "//{}:{}".format(*synth.label(args.n - 1, 100))
        for query in ("deps(//...)", f"deps({last})"):
            seconds, out = median(root, args.runs, "query", query)
            print(f"{'query ' + repr(query):<34} {seconds:6.3f} s  = {seconds / startup:.1f}x start-up, {len(out.splitlines())} labels printed")


if __name__ == "__main__":
    main()
