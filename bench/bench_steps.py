"""The Python step front against the BUILD-file front on the same synthetic DAG (bench/synth.py):
n trivial steps, cold, no-op and one-leaf change, each as a fresh process, in one run.

    uv run python bench/bench_steps.py -n 1000 --shape random

The steps pipeline is a script (`steps_pipeline.py`) in the same synthetic workspace: one
StepSpec per target, whose fn writes the same small file the synthetic rule writes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth  # noqa: E402

PIPELINE = '''
import functools, os, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mbuild import StepRunner, StepSpec
from synthsteps import write

EDGES = {edges!r}
SALT = os.environ.get("LEAF_SALT", "")
steps = []
for i, deps in enumerate(EDGES):
    salt = SALT if i == 0 else ""
    ds = [steps[d] for d in deps]
    steps.append(StepSpec(f"s/t{{i}}", functools.partial(write, n=i, salt=salt, deps=ds), deps=ds, hash_attrs={{"n": i, "salt": salt}}))
used = {{d for ds in EDGES for d in ds}}
result = StepRunner(prefix=Path(__file__).resolve().parent / "steps-out").run([s for i, s in enumerate(steps) if i not in used])
print("ran", result.summary.ran)
'''

STEP_FN = '''
from pathlib import Path

def write(output_path, n, salt, deps):
    """What bench/synth.py's rule writes: derived from its inputs (so a changed leaf changes its dependents)."""
    parts = [str(n), salt] + [Path(d.output_path, "out.txt").read_text()[:32] for d in deps]
    Path(output_path, "out.txt").write_text("|".join(parts))
'''


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - start, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--shape", choices=synth.SHAPES, default="random")
    parser.add_argument("--root", type=Path, default=Path("/tmp/mbuild-bench-steps"))
    args = parser.parse_args()
    import os
    import random
    import shutil

    if args.root.exists():
        shutil.rmtree(args.root)
    synth.generate(args.root, args.shape, args.n)
    edges = synth.edges(args.shape, args.n, random.Random(0))
    (args.root / "synthsteps.py").write_text(STEP_FN)
    (args.root / "steps_pipeline.py").write_text(PIPELINE.format(edges=edges))
    py = sys.executable
    build = [py, "-m", "mbuild.front.cli", "build", "//:top"]
    steps = [py, "steps_pipeline.py"]
    env = dict(os.environ)
    rows = []
    for front, cmd in (("BUILD files", build), ("Python steps", steps)):
        cold, _ = timed(cmd, args.root, env)
        noop, _ = timed(cmd, args.root, env)
        if front == "BUILD files":
            synth.touch_leaf(args.root)
            leaf, _ = timed(cmd, args.root, env)
        else:
            leaf, _ = timed(cmd, args.root, {**env, "LEAF_SALT": "changed"})
        rows.append((front, cold, noop, leaf))
    print(f"{args.n} trivial actions ({args.shape}), {os.cpu_count()} cores")
    print(f"{'front':<14}{'cold':>10}{'no-op':>10}{'one leaf':>10}")
    for front, cold, noop, leaf in rows:
        print(f"{front:<14}{cold:>9.2f}s{noop:>9.2f}s{leaf:>9.2f}s")
    print(f"no-op ratio steps/BUILD: {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
