"""Damage harness: damage a real cache at random, again and again, and check no wrong byte is served.

One workspace (8 actions in a diamond-and-chain graph, outputs of 10 B to 70 KB, a genrule over a
source file) is built, then each round applies 1-4 random damages to its local cache (flip,
truncate, rewrite in place, replace, delete, plant extra files, chmod, swap or drop action-cache
records, truncate the database, overwrite 64 KiB of it, make db/ a file, flip bits in its pages)
and builds `//...` again. Every build's outputs are compared with a clean build's bytes.

Counted: damage events, builds, wrong bytes served (must be 0), builds that failed, and builds
killed inside LMDB by page damage it does not check (SIGBUS/SIGABRT): each of those must be
followed by a build that heals (moves the database aside) and serves the right bytes.

    python bench/damage_harness.py                # 100 rounds
    python bench/damage_harness.py --rounds 20 --seed 7
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import damage  # noqa: E402

RULES = """
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "n": attr.int(), "size": attr.int(default=10)}, outputs=["v.txt", "data/blob.bin"])
def node(ctx):
    total = ctx.attr.n + sum(int((d / "v.txt").read_text()) for d in ctx.inputs.deps)
    (ctx.out / "v.txt").write_text(str(total))
    (ctx.out / "data").mkdir()
    (ctx.out / "data" / "blob.bin").write_bytes(bytes([ctx.attr.n % 251]) * ctx.attr.size)
    return {"total": total}
"""


def make_workspace(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "damage"\n')
    (root / "harnessrules.py").write_text(RULES)
    (root / "src").mkdir()
    (root / "src" / "input.txt").write_text("a source file\n")
    (root / "src" / "BUILD.py").write_text("")
    lines = ["from harnessrules import node", "from mbuild.rules import genrule"]
    for i in range(8):
        deps = sorted({f":n{j}" for j in (i - 1, i // 2) if 0 <= j < i})
        lines.append(f'node(name="n{i}", n={i}, size={[10, 5000, 70000][i % 3]}, deps={deps!r})')
    lines.append('genrule(name="g", srcs=[":n7", "//src:input.txt"], outs=["g.txt"], cmd="cat $(SRCS) | sha256sum > $@")')
    (root / "BUILD.py").write_text("\n".join(lines) + "\n")


def build(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbuild.front.cli", "build", "-q", "//..."], cwd=root, capture_output=True, text=True, timeout=600)


def outputs(root: Path) -> dict[str, bytes]:
    out = root / "mbuild-out"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".gitignore"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="mbuild-damage-"))
    try:
        reference_root = base / "reference"
        make_workspace(reference_root)
        assert build(reference_root).returncode == 0
        reference = outputs(reference_root)
        root = base / "ws"
        make_workspace(root)
        assert build(root).returncode == 0
        counts: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        wrong: list[str] = []
        unhealed: list[str] = []
        started = time.monotonic()
        for r in range(args.rounds):
            done = [d for kind in rng.choices(damage.ALL_KINDS, k=rng.randint(1, 4)) if (d := damage.apply(root / ".mbuild/cache", kind, rng))]
            counts["damage events"] += len(done)
            kinds.update(d.kind for d in done)
            proc = build(root)
            counts["builds"] += 1
            if proc.returncode < 0:  # killed inside LMDB: the next build must heal
                counts["builds killed inside LMDB (signal)"] += 1
                proc = build(root)
                counts["builds"] += 1
                if proc.returncode != 0:
                    unhealed.append(f"round {r}: {[str(d) for d in done]}: {proc.returncode} {proc.stderr[-300:]}")
            elif proc.returncode != 0:
                counts["builds failed"] += 1
                unhealed.append(f"round {r}: {[str(d) for d in done]}: exit {proc.returncode}: {proc.stderr[-300:]}")
            if proc.returncode == 0 and outputs(root) != reference:
                wrong.append(f"round {r}: {[str(d) for d in done]}")
            counts["builds that reran something"] += "ran" in proc.stderr or "running" in proc.stderr
        seconds = time.monotonic() - started
        print(f"damage harness: {args.rounds} rounds in {seconds:.0f}s (seed {args.seed})")
        for name in ("damage events", "builds", "builds failed", "builds killed inside LMDB (signal)"):
            print(f"  {name:40s} {counts[name]}")
        print(f"  {'wrong bytes served':40s} {len(wrong)}")
        print(f"  {'failures not healed by the next build':40s} {len(unhealed)}")
        print("  damage kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        for line in wrong + unhealed:
            print("  !", line)
        sys.exit(1 if wrong or unhealed else 0)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
