"""Loading a BUILD file costs time linear in its size (issue 12), measured through the real CLI.

Three workspaces hold the same 16,000 trivial targets: in 16 BUILD files of 1k, in 4 of 4k, and in
one of 16k. Start-up, graph building and printing are the same in all three, so only the length of
each file differs; `mbuild query '//...'` (which loads every BUILD file and builds nothing) must
take about the same time per target in all three. CPU time of the child process is compared (best
of 3), since wall time on a shared machine swings with other work.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

TOTAL = 16_000
FILE_SIZES = (1_000, 4_000, 16_000)
MAX_RATIO = 2.5  # per-target load time in a 16k-target file / in 1k-target files


@dataclass
class Timing:
    cpu: float  # user + system seconds of the mbuild process, best of the runs
    wall: float  # wall seconds, best of the runs


def write_workspace(root: Path, per_file: int) -> None:
    """TOTAL filegroups (the cheapest rule to declare) in BUILD files of `per_file` targets each."""
    root.mkdir()
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "load-scale"\n')
    for start in range(0, TOTAL, per_file):
        package = root / f"p{start // per_file:02d}"
        package.mkdir()
        lines = [f"filegroup(name='t{i}', srcs=[])" for i in range(start, min(start + per_file, TOTAL))]
        (package / "BUILD.py").write_text("from mbuild.rules import filegroup\n\n" + "\n".join(lines) + "\n")


def time_query(root: Path, runs: int = 3) -> Timing:
    """Best of `runs` fresh `mbuild query '//...'` processes (the first also compiles the BUILD files)."""
    cpus, walls = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mbuild.front.cli", "query", "//..."], cwd=root, capture_output=True, text=True, timeout=120)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.splitlines()) == TOTAL
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return Timing(min(cpus), min(walls))


@pytest.mark.timeout(300)
def test_build_file_loading_is_linear_in_file_size(tmp_path: Path):
    timings = {}
    for per_file in FILE_SIZES:
        root = tmp_path / f"files-of-{per_file}"
        write_workspace(root, per_file)
        timings[per_file] = time_query(root)
    small, large = timings[FILE_SIZES[0]], timings[FILE_SIZES[-1]]
    figures = ", ".join(f"{TOTAL // n} files of {n}: cpu {t.cpu:.2f}s wall {t.wall:.2f}s" for n, t in timings.items())
    assert large.cpu <= MAX_RATIO * small.cpu, f"one 16k-target file loads {large.cpu / small.cpu:.1f}x slower per target than 1k-target files ({figures})"
