"""No-op and incremental builds at scale (issue 12), on graphs written the way users write them.

Generates workspaces in a temporary directory: N `genrule`s (or the same graph as `py_function`s),
each reading its own source file plus the outputs of its dependencies, in one `BUILD.py` at the
root or spread over packages. Every figure is a fresh `mbuild` process, as a user runs it:

- cold build, no-op (median), one-leaf change (median over different edits; exactly one action
  reruns, checked), `mbuild query 'deps(//...)'`, `mbuild build -n //...`, and the no-op's peak RSS;
- the floor for genrules: the same N bash command lines run by a plain Python loop, 2 at a time;
- BUILD-file load linearity: `mbuild query '//...'` on one BUILD file of 1k, 4k and 16k targets;
- if `bazel` is on PATH, the same genrule graph built by Bazel in the same run (cold, warm-server
  no-op and one-leaf change), and the mbuild/Bazel ratios.

Each figure is printed with its target from issue 12 and the ratio to it (ratio <= 1 meets it).
The machine is shared and noisy: the load average is printed with every block.

    python bench/bench_scale.py -n 1000 --no-bazel       # quick: every shape at 1k, a few minutes
    python bench/bench_scale.py -n 1000                  # the same with Bazel: ~15 minutes (Bazel's cold builds)
    python bench/bench_scale.py                          # 1k and 10k, every shape, with Bazel: an hour or more
    python bench/bench_scale.py -n 10000 --shapes layered --layout one --rules genrule,py_function
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

MBUILD = str(Path(sys.executable).parent / "mbuild")
TIME = "/usr/bin/time"
SHAPES = ("layered", "random")
RULES = ("genrule", "py_function")
LAYOUTS = ("one", "packages")
JOBS = 2
CMD = "{{ echo {name}; cat $(SRCS); }} | sha256sum | cut -c1-16 > $@"
# What the genrule rule gives its command (rules/core.py): the floor runs the commands the same way.
GENRULE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

# The py_function equivalent of the genrule command: the same bytes hashed, the same output.
HASHSTEP = '''"""The py_function equivalent of `{ echo NAME; cat SRC DEPS...; } | sha256sum | cut -c1-16 > OUT`."""

import hashlib


def step(config, inputs, out):
    h = hashlib.sha256((config["name"] + "\\n").encode())
    for key in ["src", *(f"d{i}" for i in range(len(inputs) - 1))]:
        path = inputs[key]
        files = sorted(p for p in path.iterdir()) if path.is_dir() else [path]
        for f in files:
            h.update(f.read_bytes())
    (out / (config["name"] + ".out")).write_text(h.hexdigest()[:16] + "\\n")
'''

# Targets from issue 12: (figure, actions) -> seconds or MB. Genrule cold builds are held to 1.3x the floor.
TARGETS: dict[tuple[str, int], float] = {
    ("no-op", 1_000): 0.25,
    ("no-op", 10_000): 0.5,
    ("no-op", 100_000): 3.0,
    ("one-leaf", 10_000): 0.7,
    ("one-leaf", 100_000): 4.0,
    ("query deps(//...)", 10_000): 0.5,
    ("build -n", 10_000): 0.6,
    ("no-op peak RSS", 10_000): 150.0,
    ("cold py_function", 10_000): 10.0,
}
FLOOR_TARGET = 1.3  # genrule cold build / bash floor
BAZEL_NOOP_TARGET = 0.5  # mbuild no-op / Bazel warm-server no-op ("at least 2x faster")


# --- the graphs -------------------------------------------------------------------------------


@dataclass
class Graph:
    """A DAG of n nodes; deps[i] are earlier nodes, so index order is a topological order."""

    shape: str
    deps: list[list[int]]

    @property
    def n(self) -> int:
        return len(self.deps)

    def sinks(self) -> list[int]:
        """Nodes nothing depends on: editing one's source reruns exactly one action."""
        used = {d for ds in self.deps for d in ds}
        return [i for i in range(self.n) if i not in used]


def make_graph(shape: str, n: int, seed: int = 0) -> Graph:
    """`layered`: layers of ~sqrt(n) nodes, each reading 2-3 nodes of the layer before.
    `random`: each node reads 0-3 random earlier nodes."""
    rng = random.Random(seed)
    if shape == "layered":
        width = max(10, round(n**0.5))
        deps = []
        for i in range(n):
            layer = i // width
            if layer == 0:
                deps.append([])
            else:
                prev = range((layer - 1) * width, layer * width)
                deps.append(sorted(rng.sample(prev, rng.choice((2, 3)))))
        return Graph(shape, deps)
    if shape == "random":
        return Graph(shape, [sorted(rng.sample(range(i), min(i, rng.randint(0, 3)))) for i in range(n)])
    raise SystemExit(f"unknown shape {shape!r}; pick from {', '.join(SHAPES)}")


@dataclass
class Layout:
    """Where node i lives: one package at the root, or `per_package` nodes per package."""

    packages: bool
    per_package: int = 100

    def package(self, i: int) -> str:
        return f"p{i // self.per_package:04d}" if self.packages else ""

    def label(self, i: int, from_package: str) -> str:
        pkg = self.package(i)
        return f":t{i}" if pkg == from_package else f"//{pkg}:t{i}"

    def source(self, root: Path, i: int) -> Path:
        return root / self.package(i) / "src" / f"t{i}.txt"

    def name(self) -> str:
        return f"{self.per_package} per package" if self.packages else "one BUILD file"


def _write_sources(root: Path, graph: Graph, layout: Layout) -> None:
    for i in range(graph.n):
        path = layout.source(root, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"source of t{i}\n")


def _by_package(graph: Graph, layout: Layout, line) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in range(graph.n):
        pkg = layout.package(i)
        out.setdefault(pkg, []).append(line(i, pkg))
    return out


def genrule_call(graph: Graph, layout: Layout, i: int, pkg: str) -> str:
    """Node i as a genrule call, the same text in mbuild's BUILD.py and Bazel's BUILD."""
    srcs = [f"src/t{i}.txt", *(layout.label(d, pkg) for d in graph.deps[i])]
    return f"genrule(name={f't{i}'!r}, srcs={srcs!r}, outs={[f't{i}.out']!r}, cmd={CMD.format(name=f't{i}')!r})"


def write_mbuild(root: Path, graph: Graph, layout: Layout, rule: str) -> None:
    """An mbuild workspace: WORKSPACE.toml, sources, and BUILD.py files of genrules or py_functions."""
    root.mkdir(parents=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "bench-scale"\n')
    _write_sources(root, graph, layout)

    def py_function(i: int, pkg: str) -> str:
        inputs = {"src": f"src/t{i}.txt", **{f"d{k}": layout.label(d, pkg) for k, d in enumerate(graph.deps[i])}}
        return f"py_function(name={f't{i}'!r}, fn='hashstep:step', config={{'name': {f't{i}'!r}}}, inputs={inputs!r}, outs={[f't{i}.out']!r})"

    if rule == "py_function":
        (root / "hashstep.py").write_text(HASHSTEP)
    line = py_function if rule == "py_function" else lambda i, pkg: genrule_call(graph, layout, i, pkg)
    for pkg, lines in _by_package(graph, layout, line).items():
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "BUILD.py").write_text(f"from mbuild.rules import {rule}\n\n" + "\n".join(lines) + "\n")


def write_bazel(root: Path, graph: Graph, layout: Layout) -> None:
    """The same genrule graph as a Bazel workspace (WORKSPACE, BUILD files, the same sources)."""
    root.mkdir(parents=True)
    (root / "WORKSPACE").write_text("")
    _write_sources(root, graph, layout)

    for pkg, lines in _by_package(graph, layout, lambda i, pkg: genrule_call(graph, layout, i, pkg)).items():
        (root / pkg).mkdir(parents=True, exist_ok=True)
        # mbuild targets are visible everywhere; Bazel's must say so to be used across packages.
        (root / pkg / "BUILD").write_text('package(default_visibility = ["//visibility:public"])\n\n' + "\n".join(lines) + "\n")


def write_load_file(root: Path, n: int) -> None:
    """One BUILD.py of n genrules (the layered shape): the file whose loading must be linear."""
    write_mbuild(root, make_graph("layered", n), Layout(packages=False), "genrule")


def write_trivial(root: Path) -> None:
    """A one-target workspace: what `mbuild query '//...'` costs before any loading (start-up)."""
    root.mkdir(parents=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "bench-scale"\n')
    (root / "BUILD.py").write_text("from mbuild.rules import genrule\n\ngenrule(name='t0', outs=['t0.out'], cmd='echo > $@')\n")


# --- running things ---------------------------------------------------------------------------


@dataclass
class Ran:
    seconds: float
    stdout: str
    stderr: str
    cpu: float = 0.0  # user + system seconds of the command and its children (honest on a loaded machine)


# mbuild runs with Python's default of caching bytecode, as in a user's shell. Some environments
# (this project's sandboxes) set PYTHONDONTWRITEBYTECODE, which makes every process compile its
# ~150 modules again (+0.1-0.2 s per command); main() says when it was set and removed here.
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str], cwd: Path) -> Ran:
    """Run one command to completion; a failure stops the benchmark with its output."""
    cpu0 = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=RUN_ENV)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` in {cwd} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return Ran(seconds, proc.stdout, proc.stderr, _children_cpu() - cpu0)


def median_of(k: int, cmd: list[str], cwd: Path) -> float:
    return statistics.median(run(cmd, cwd).seconds for _ in range(k))


def mbuild_ran(out: str) -> int:
    """Actions that ran, from mbuild's summary line (`Build succeeded: N actions, K ran, ...`)."""
    summary = re.search(r"^Build succeeded: .*$", out, re.M)  # pass stdout + stderr: the summary is on stderr
    if summary is None:
        raise SystemExit(f"no summary line in mbuild's output:\n{out[-2000:]}")
    ran = re.search(r"(\d+) ran\b", summary.group(0))
    return int(ran.group(1)) if ran else 0


def peak_rss_mb(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Peak RSS of `cmd` (its largest process, children included) in MB, and how it was measured."""
    if os.access(TIME, os.X_OK):
        ran = run([TIME, "-f", "%M", *cmd], cwd)
        return int(ran.stderr.strip().splitlines()[-1]) / 1024, "/usr/bin/time -f %M"
    # getrusage(RUSAGE_CHILDREN) in a fresh helper: the max over exactly one child and its children.
    probe = "import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    ran = run([sys.executable, "-c", probe, *cmd], cwd)
    return int(ran.stdout.strip()) / 1024, "getrusage(RUSAGE_CHILDREN) in a helper process"


def edit_source(path: Path, k: int) -> None:
    path.write_text(path.read_text() + f"edit {k}\n")


# --- the floor --------------------------------------------------------------------------------


def floor_commands(graph: Graph, scratch: Path) -> list[str]:
    """The genrules' command lines as mbuild expands them: absolute, quoted paths of the same files."""
    (scratch / "src").mkdir(parents=True)
    (scratch / "out").mkdir()
    cmds = []
    for i in range(graph.n):
        src = scratch / "src" / f"t{i}.txt"
        src.write_text(f"source of t{i}\n")
        files = " ".join([f"'{src}'", *(f"'{scratch}/out/t{d}.out'" for d in graph.deps[i])])
        cmds.append(CMD.format(name=f"t{i}").replace("$(SRCS)", files).replace("$@", f"'{scratch}/out/t{i}.out'"))
    return cmds


def bash_floor(graph: Graph, scratch: Path, jobs: int = JOBS) -> float:
    """Seconds for a plain Python loop to run the graph's bash commands, `jobs` at a time, in dependency order."""
    cmds = floor_commands(graph, scratch)
    env = {**GENRULE_ENV, "HOME": str(scratch), "TMPDIR": str(scratch)}
    waiting = [len(ds) for ds in graph.deps]
    dependents: list[list[int]] = [[] for _ in range(graph.n)]
    for i, ds in enumerate(graph.deps):
        for d in ds:
            dependents[d].append(i)
    ready = [i for i in range(graph.n) if not waiting[i]][::-1]

    def one(i: int) -> None:
        subprocess.run(["bash", "-euo", "pipefail", "-c", cmds[i]], cwd=scratch, env=env, check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        running: dict[Future, int] = {}
        while ready or running:
            while ready and len(running) < jobs:
                i = ready.pop()
                running[pool.submit(one, i)] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                fut.result()
                for j in dependents[running.pop(fut)]:
                    waiting[j] -= 1
                    if not waiting[j]:
                        ready.append(j)
    return time.perf_counter() - start


# --- Bazel ------------------------------------------------------------------------------------


def bazel_processes(err: str) -> int:
    """Actions Bazel ran, from `INFO: N processes: I internal, ...` (internal ones are not actions)."""
    line = re.search(r"^INFO: (\d+) process(?:es)?:(.*)$", err, re.M)
    if line is None:
        raise SystemExit(f"no process count in Bazel's output:\n{err[-2000:]}")
    internal = re.search(r"(\d+) internal", line.group(2))
    return int(line.group(1)) - (int(internal.group(1)) if internal else 0)


@dataclass
class Bazel:
    """Bazel run with its own output root in the temporary directory, shut down and removed at the end."""

    user_root: Path
    flags: list[str] = field(default_factory=list)  # the spawn strategy chosen by probe()
    strategy: str = ""

    def cmd(self, *args: str) -> list[str]:
        return ["bazel", f"--output_user_root={self.user_root}", *args]

    def build(self, root: Path) -> Ran:
        # Debian's /etc/bazel/bazelrc turns on --sandbox_debug (verbose, keeps sandboxes): turned off here.
        return run(self.cmd("build", "//...", f"--jobs={JOBS}", "--nosandbox_debug", "--color=no", "--curses=no", *self.flags), root)

    def shutdown(self, root: Path) -> None:
        if root.exists():
            subprocess.run(self.cmd("shutdown"), cwd=root, capture_output=True)

    def probe(self, tmp: Path) -> None:
        """Pick the spawn strategy that works here: Bazel's default (sandboxed) or, failing that, local."""
        root = tmp / "bazel-probe"
        root.mkdir()
        (root / "WORKSPACE").write_text("")
        (root / "BUILD").write_text("genrule(name='x', outs=['x.out'], cmd='echo x > $@')\n")
        try:
            for flags, name in (([], "default (linux-sandbox)"), (["--spawn_strategy=local"], "--spawn_strategy=local")):
                self.flags = flags
                base = self.cmd("build", "//:x", "--nosandbox_debug", "--color=no", "--curses=no", *flags)
                if subprocess.run(base, cwd=root, capture_output=True).returncode == 0:
                    self.strategy = name
                    return
            raise SystemExit("bazel cannot build a one-genrule workspace here, sandboxed or local")
        finally:
            self.shutdown(root)
            self.remove()

    def version(self) -> str:
        out = subprocess.run(["bazel", "--version"], capture_output=True, text=True).stdout.strip()
        if "no_version" in out:  # Debian's bazel-bootstrap does not know its version; its package does
            pkg = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "bazel-bootstrap"], capture_output=True, text=True)
            out = f"bazel {pkg.stdout.strip()} (bazel-bootstrap)" if pkg.returncode == 0 else out
        return out or "bazel"

    def remove(self) -> None:
        """Bazel leaves read-only directories: make them writable, then remove the output root."""
        if self.user_root.exists():
            subprocess.run(["chmod", "-R", "u+w", str(self.user_root)], capture_output=True)
            shutil.rmtree(self.user_root, ignore_errors=True)


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, its target from issue 12 (if any) and Bazel's figure for the same step (if any)."""

    name: str
    value: float
    cpu: float | None = None  # user + system seconds (mbuild and its workers): what a busy machine can't inflate much
    unit: str = "s"
    target: float | None = None
    bazel: float | None = None
    note: str = ""


def leaf_edits(graph: Graph, repeat: int) -> list[int]:
    """Distinct sinks to edit, one per repetition: each edit reruns exactly one action."""
    sinks = graph.sinks()
    return [sinks[-1 - k * max(1, len(sinks) // repeat) % len(sinks)] for k in range(repeat)]


def bench_mbuild(root: Path, graph: Graph, layout: Layout, rule: str, repeat: int, floor: float | None) -> tuple[list[Figure], str]:
    """Every mbuild figure for one workspace, each from a fresh `mbuild` process; returns them and the RSS method."""
    build = [MBUILD, "build", "//...", f"-j{JOBS}"]
    n = graph.n
    cold = run(build, root)
    if (ran := mbuild_ran(cold.stderr)) != n:
        raise SystemExit(f"cold build ran {ran} actions, expected {n}")
    noops = []
    for _ in range(repeat):
        r = run(build, root)
        if (ran := mbuild_ran(r.stderr)) != 0:
            raise SystemExit(f"no-op build ran {ran} actions")
        noops.append(r)
    rss, rss_how = peak_rss_mb(build, root)
    query = [run([MBUILD, "query", "deps(//...)"], root) for _ in range(repeat)]
    dry = [run([MBUILD, "build", "-n", "//..."], root) for _ in range(repeat)]
    leaves = []
    for k, i in enumerate(leaf_edits(graph, repeat)):
        edit_source(layout.source(root, i), k)
        r = run(build, root)
        if (ran := mbuild_ran(r.stderr)) != 1:
            raise SystemExit(f"one-leaf change (t{i}) ran {ran} actions, expected 1")
        leaves.append(r)
    if rule == "genrule":
        cold_fig = Figure("cold build -j2", cold.seconds, target=FLOOR_TARGET * floor if floor else None, cpu=cold.cpu,
                          note=f"{cold.seconds / floor:.2f}x the bash floor (target <= {FLOOR_TARGET}x)" if floor else "")
    else:
        cold_fig = Figure("cold build -j2", cold.seconds, target=TARGETS.get(("cold py_function", n)), cpu=cold.cpu)
    figures = [
        cold_fig,
        Figure("no-op", *_median(noops), target=TARGETS.get(("no-op", n)), note=f"median of {repeat}"),
        Figure("one-leaf change", *_median(leaves), target=TARGETS.get(("one-leaf", n)), note=f"median of {repeat} edits; 1 action ran each"),
        Figure("query 'deps(//...)'", *_median(query), target=TARGETS.get(("query deps(//...)", n))),
        Figure("build -n //...", *_median(dry), target=TARGETS.get(("build -n", n))),
        Figure("no-op peak RSS", rss, unit="MB", target=TARGETS.get(("no-op peak RSS", n))),
    ]
    return figures, rss_how


def _median(runs: list[Ran]) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of repeated runs."""
    return statistics.median(r.seconds for r in runs), statistics.median(r.cpu for r in runs)


def bench_bazel(bazel: Bazel, root: Path, graph: Graph, layout: Layout, repeat: int) -> dict[str, float]:
    """Bazel on the same genrule graph: cold (server start included), warm no-op, one-leaf change, warm query, cold-JVM no-op."""
    try:
        cold = bazel.build(root)
        if (ran := bazel_processes(cold.stderr)) != graph.n:
            raise SystemExit(f"bazel's cold build ran {ran} actions, expected {graph.n}")
        noops = []
        for _ in range(repeat):
            r = bazel.build(root)
            if (ran := bazel_processes(r.stderr)) != 0:
                raise SystemExit(f"bazel's no-op ran {ran} actions")
            noops.append(r.seconds)
        query = median_of(repeat, bazel.cmd("query", "deps(//...)", "--color=no", "--curses=no"), root)
        leaves = []
        for k, i in enumerate(leaf_edits(graph, repeat)):
            edit_source(layout.source(root, i), k)
            r = bazel.build(root)
            if (ran := bazel_processes(r.stderr)) != 1:
                raise SystemExit(f"bazel's one-leaf change ran {ran} actions, expected 1")
            leaves.append(r.seconds)
        bazel.shutdown(root)
        cold_jvm = bazel.build(root).seconds
        return {"cold build -j2": cold.seconds, "no-op": statistics.median(noops), "one-leaf change": statistics.median(leaves),
                "query 'deps(//...)'": query, "cold-JVM no-op": cold_jvm}
    finally:
        # Removing the output root too: the next graph's cold build must not find this one's action cache.
        bazel.shutdown(root)
        bazel.remove()


def _best_query(root: Path, repeat: int) -> float:
    query = [MBUILD, "query", "//..."]
    run(query, root)  # the first run also compiles the BUILD files into .mbuild/cache/buildc/
    return min(run(query, root).seconds for _ in range(repeat))


def load_linearity(tmp: Path, sizes: list[int], repeat: int) -> None:
    """`mbuild query '//...'` on one BUILD.py of each size, and on max(sizes) targets split into files of each size.

    The first table subtracts start-up (a one-target workspace) and compares with linear growth from
    the smallest file; the second keeps start-up, graph and printing equal, so only file length differs.
    """
    base_root = tmp / "load-base"
    write_trivial(base_root)
    base = _best_query(base_root, repeat)
    total = max(sizes)
    print(f"BUILD-file load linearity: `mbuild query '//...'` on layered genrules, best of {repeat} after a first run   [load {_load()}]")
    print(f"  start-up (a one-target workspace): {base:.3f} s")
    print(f"  {'targets':>8} {'one file':>9} {'loading':>8} {'us/target':>10} {'vs linear':>10}   {f'{total} in files of n':>18} {'vs smallest n':>14}")
    first_per = first_split = None
    for n in sorted(sizes):
        root = tmp / f"load-{n}"
        write_load_file(root, n)
        one = _best_query(root, repeat)
        shutil.rmtree(root)
        if n == total:
            split = one
        else:
            root = tmp / f"load-split-{n}"
            write_mbuild(root, make_graph("layered", total), Layout(packages=True, per_package=n), "genrule")
            split = _best_query(root, repeat)
            shutil.rmtree(root)
        per = (one - base) / n if one > base else None  # None: the loading is below the noise of start-up
        first_per = first_per if first_split else per
        first_split = first_split or split
        per_text = f"{per * 1e6:>10.1f} {(f'{per / first_per:.2f}x') if first_per else 'n/a':>10}" if per else f"{'n/a':>10} {'n/a':>10}"
        print(f"  {n:>8} {one:>8.3f}s {one - base:>7.3f}s {per_text}   {split:>17.3f}s {split / first_split:>13.2f}x")
    print("  vs linear: time per target (start-up subtracted) / the same at the smallest file; 1.00x = linear")
    print(f"  vs smallest n: the same {total} targets in longer files / in the shortest files; 1.00x = linear (test: <= 2.5x)")
    print()


# --- printing ---------------------------------------------------------------------------------


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


UNIT_FORMAT = {"s": "{:.3f} s", "MB": "{:.1f} MB", "x": "{:.2f}x"}


def print_block(title: str, figures: list[Figure], with_bazel: bool) -> None:
    print(f"== {title}   [load {_load()}]")
    head = f"  {'figure':<22} {'mbuild':>10} {'cpu':>8} {'target':>11} {'/target':>8}"
    if with_bazel:
        head += f" {'bazel':>10} {'mbuild/bazel':>13}"
    print(head + "  note")
    for f in figures:
        fmt = UNIT_FORMAT[f.unit]
        cpu = f"{f.cpu:.2f} s" if f.cpu is not None else "-"
        line = f"  {f.name:<22} {fmt.format(f.value):>10} {cpu:>8} {('<= ' + fmt.format(f.target)) if f.target else '-':>11} "
        line += f"{(f'{f.value / f.target:.2f}x') if f.target else '-':>8}"
        if with_bazel:
            line += f" {(fmt.format(f.bazel)) if f.bazel is not None else '-':>10} {(f'{f.value / f.bazel:.2f}x') if f.bazel else '-':>13}"
        print(line + (f"  {f.note}" if f.note else ""))
    print()


# --- main -------------------------------------------------------------------------------------


def _csv(text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if allowed and x not in allowed]
    if bad:
        raise SystemExit(f"unknown value(s) {', '.join(bad)}; pick from {', '.join(allowed or ())}")
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--size", default="1000,10000", help="actions per workspace, comma-separated (default 1000,10000)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="layered, random")
    parser.add_argument("--layout", default=",".join(LAYOUTS), help="one (one BUILD.py at the root), packages (--per-package targets each)")
    parser.add_argument("--per-package", type=int, default=100)
    parser.add_argument("--rules", default=",".join(RULES), help="genrule, py_function")
    parser.add_argument("--no-bazel", action="store_true", help="skip Bazel even if it is on PATH")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; medians (at least 3 is sensible)")
    parser.add_argument("--load-sizes", default="1000,4000,16000", help="BUILD-file sizes for the load linearity check ('' skips it)")
    args = parser.parse_args()
    sizes = [int(x) for x in _csv(args.size)]
    shapes, layouts, rules = _csv(args.shapes, SHAPES), _csv(args.layout, LAYOUTS), _csv(args.rules, RULES)
    if not Path(MBUILD).exists():
        raise SystemExit(f"{MBUILD} not found: run this with the project's venv Python (uv run python bench/bench_scale.py)")
    tmp = Path(tempfile.mkdtemp(prefix="mbuild-bench-scale-"))
    bazel = Bazel(tmp / "bazel-root") if shutil.which("bazel") and not args.no_bazel and "genrule" in rules else None
    try:
        if bazel:
            bazel.probe(tmp)
        print(f"machine: {os.cpu_count()} cores, load {_load()}; Python {sys.version.split()[0]}; {MBUILD}; -j{JOBS}")
        print(f"bazel: {bazel.version() + ', spawn strategy ' + bazel.strategy + ', warm server unless noted' if bazel else 'not run'}")
        print(f"every mbuild figure is a fresh process; medians of {args.repeat}; ratio /target <= 1.00x meets issue 12's target")
        print("cpu: user + system seconds of mbuild and its workers (wall figures inflate on a loaded machine; cpu much less)")
        if "PYTHONDONTWRITEBYTECODE" in os.environ:
            print("PYTHONDONTWRITEBYTECODE is set here: mbuild runs without it (Python's default, bytecode cached, as in a user's shell)")
        print()
        if args.load_sizes.strip():
            load_linearity(tmp, [int(x) for x in _csv(args.load_sizes)], args.repeat)
        rss_how = ""
        for n in sizes:
            for shape in shapes:
                graph = make_graph(shape, n)
                floor = None
                if "genrule" in rules:
                    floor = bash_floor(graph, tmp / "floor")
                    shutil.rmtree(tmp / "floor")
                for layout in (Layout(packages=(name == "packages"), per_package=args.per_package) for name in layouts):
                    for rule in rules:
                        root = tmp / "ws"
                        write_mbuild(root, graph, layout, rule)
                        figures, rss_how = bench_mbuild(root, graph, layout, rule, args.repeat, floor)
                        shutil.rmtree(root)
                        title = f"{shape} {rule}, {layout.name()}, {n} actions"
                        if rule == "genrule":
                            figures.insert(0, Figure(f"bash floor ({n} cmds)", floor, note=f"the same command lines, {JOBS} at a time, plain Python loop"))
                        if bazel and rule == "genrule":
                            broot = tmp / f"bazel-ws-{n}-{shape}-{layout.name().replace(' ', '-')}"
                            write_bazel(broot, graph, layout)
                            theirs = bench_bazel(bazel, broot, graph, layout, args.repeat)
                            shutil.rmtree(broot)
                            for f in figures:
                                f.bazel = theirs.get(f.name)
                            figures.append(Figure("bazel cold-JVM no-op", theirs["cold-JVM no-op"], note="after `bazel shutdown`"))
                            noop = next(f for f in figures if f.name == "no-op")
                            figures.append(Figure("no-op / bazel warm", noop.value / noop.bazel, unit="x", target=BAZEL_NOOP_TARGET,
                                                  note="target: at least 2x faster than Bazel's warm server"))
                        print_block(title, figures, with_bazel=bazel is not None and rule == "genrule")
        if rss_how:
            print(f"peak RSS: {rss_how} (the largest process of the no-op, children included)")
    finally:
        if bazel:
            for ws in (*tmp.glob("bazel-ws-*"), tmp / "bazel-probe"):
                bazel.shutdown(ws)
            bazel.remove()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
