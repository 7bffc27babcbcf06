"""Synthetic workspaces for benchmarks and tests: chains, wide fans, diamond lattices, random DAGs.

`generate(root, shape, n)` writes a workspace of `n` trivial actions spread over packages of
`per_package` targets each, plus `//:top` depending on every sink, with a rule module
`synthrules.py` whose action writes one small file.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

SHAPES = ("chain", "fan", "diamond", "random")

RULES = '''"""A trivial rule for synthetic workspaces: writes one small file derived from its inputs."""

from mbuild import attr, rule


@rule(attrs={"deps": attr.label_list(default=[]), "n": attr.int(), "salt": attr.string(default="")}, outputs=["out.txt"])
def step(ctx):
    parts = [str(ctx.attr.n), ctx.attr.salt]
    for d in ctx.inputs.deps:
        parts.append((d / "out.txt").read_text()[:32])
    (ctx.out / "out.txt").write_text("|".join(parts))
'''


def edges(shape: str, n: int, rng: random.Random) -> list[list[int]]:
    """For each node i, the nodes it depends on (all < i, so the graph is acyclic)."""
    if shape == "chain":
        return [[i - 1] if i else [] for i in range(n)]
    if shape == "fan":  # one root depending on everything else: maximal width
        return [[] for _ in range(n - 1)] + [list(range(n - 1))]
    if shape == "diamond":  # a lattice of layers of width w; each node depends on two of the layer before
        w = max(2, int(n**0.5))
        out = []
        for i in range(n):
            layer, pos = divmod(i, w)
            if layer == 0:
                out.append([])
            else:
                prev = (layer - 1) * w
                out.append(sorted({prev + pos, prev + (pos + 1) % w}))
        return out
    if shape == "random":  # each node depends on up to 3 random earlier nodes (~300k edges at 100k)
        return [sorted(set(rng.sample(range(i), min(i, 3)))) for i in range(n)]
    raise ValueError(f"unknown shape {shape!r}; pick one of {SHAPES}")


def label(i: int, per_package: int) -> tuple[str, str]:
    return f"p{i // per_package:04d}", f"t{i}"


def generate(root: Path, shape: str, n: int, per_package: int = 100, seed: int = 0) -> list[str]:
    """Write the workspace; returns the labels of the sinks (targets nothing depends on)."""
    rng = random.Random(seed)
    deps = edges(shape, n, rng)
    root.mkdir(parents=True, exist_ok=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "synthetic"\n')
    (root / "synthrules.py").write_text(RULES)
    packages: dict[str, list[str]] = {}
    for i in range(n):
        pkg, name = label(i, per_package)
        dep_labels = []
        for d in deps[i]:
            dpkg, dname = label(d, per_package)
            dep_labels.append(f":{dname}" if dpkg == pkg else f"//{dpkg}:{dname}")
        packages.setdefault(pkg, []).append(f"step(name={name!r}, n={i}, deps={dep_labels!r})")
    for pkg, lines in packages.items():
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "BUILD.py").write_text("from synthrules import step\n\n" + "\n".join(lines) + "\n")
    used = {d for ds in deps for d in ds}
    sinks = ["//{}:{}".format(*label(i, per_package)) for i in range(n) if i not in used]
    # One root target over every sink, so "build the whole pipeline" is one label: //:top
    (root / "BUILD.py").write_text(f"from synthrules import step\n\nstep(name='top', n=-1, deps={sinks!r})\n")
    return sinks


def touch_leaf(root: Path, per_package: int = 100, salt: str = "changed") -> str:
    """Change the configuration of target 0 (a leaf in every shape); returns its label."""
    pkg, name = label(0, per_package)
    build = root / pkg / "BUILD.py"
    text = build.read_text()
    build.write_text(text.replace(f"step(name={name!r}, n=0,", f"step(name={name!r}, salt={salt!r}, n=0,", 1))
    return f"//{pkg}:{name}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--shape", choices=SHAPES, default="random")
    parser.add_argument("-n", type=int, default=10_000)
    args = parser.parse_args()
    sinks = generate(args.root, args.shape, args.n)
    print(f"wrote {args.n} targets ({args.shape}) under {args.root}; {len(sinks)} sinks")
