"""The basic rules: call a Python function, run a shell command, group source files.

Every dependency reaches an action as a path: a source file as its path, a target as its
output directory. See BUILD.md for the full contract.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from mbuild import ActionContext, attr, rule
from mbuild import resolve_rule

# A fixed, ordinary PATH: the tools a genrule finds are part of the machine, not of the user's shell.
GENRULE_PATH = "/usr/local/bin:/usr/bin:/bin"


@rule(
    attrs={
        "fn": attr.code(doc="The function to call, as 'package.module:function'. Its module's source is in the key."),
        "config": attr.value(default=None, doc="Passed as the first argument (any encodable value: dict, dataclass, ...)."),
        "inputs": attr.label_dict(default={}, doc="Named dependencies; the function gets a dict of the same names to paths."),
        "outs": attr.string_list(default=[], doc="Outputs the function must create under its output directory."),
    },
    outputs=lambda config: config["outs"],
)
def py_function(ctx: ActionContext):
    """Call `fn(config, inputs, out_dir)`; its return value (JSON) becomes the target's value.
    With `resumable=True`: `fn(config, inputs, out_dir, work_dir=...)`, the directory kept across failed attempts.
    With `in_place=True`, `out_dir` is where the output stays: a `Path` for a local [outputs].prefix,
    else the gs:// or s3:// URL (a str); `fs=` is an fsspec filesystem for it."""
    fn = resolve_rule(ctx.attr.fn)
    out = ctx.out
    extra = {}
    if ctx.out_url is not None:
        out = ctx.out_url if "://" in ctx.out_url else Path(ctx.out_url)
        extra["fs"] = ctx.out_fs
    if ctx.work is not None:
        extra["work_dir"] = ctx.work
    return fn(ctx.attr.config, dict(ctx.inputs.inputs), out, **extra)


_MAKE_VAR = re.compile(r"\$\((location|locations|SRCS|OUTS|OUT_DIR|OUT_URL|WORK_DIR)(?:\s+([^)]+))?\)")


@rule(
    attrs={
        "srcs": attr.label_list(default=[], doc="Inputs; a target contributes every file of its output tree."),
        "outs": attr.string_list(doc="Files the command must create (relative to the output directory)."),
        "cmd": attr.string(doc="A bash command. $(SRCS), $(OUTS), $@, $<, $(OUT_DIR), $(location LABEL) are expanded."),
    },
    outputs=lambda config: config["outs"],
)
def genrule(ctx: ActionContext):
    """Run a bash command with a fixed PATH in a scratch directory; it writes the declared outputs."""
    srcs = [p for path in ctx.inputs.srcs for p in _files_of(path)]
    if ctx.out_url is not None and "://" in ctx.out_url:  # in place in a bucket: the command writes the URLs
        outs = [f"{ctx.out_url}/{o}" for o in ctx.attr.outs]
    else:
        base = Path(ctx.out_url) if ctx.out_url is not None else ctx.out
        outs = [base / o for o in ctx.attr.outs]
        for o in outs:
            o.parent.mkdir(parents=True, exist_ok=True)
    locations = _spellings({label: _files_of(path) for label, path in zip(ctx.labels.srcs, ctx.inputs.srcs)})

    def expand(match: re.Match) -> str:
        name, arg = match.group(1), (match.group(2) or "").strip()
        if name == "SRCS":
            return " ".join(shlex.quote(str(p)) for p in srcs)
        if name == "OUTS":
            return " ".join(shlex.quote(str(p)) for p in outs)
        if name == "OUT_DIR":
            return shlex.quote(str(ctx.out))
        if name == "OUT_URL":
            if ctx.out_url is None:
                raise ValueError("$(OUT_URL) needs in_place=True on the target")
            return shlex.quote(ctx.out_url)
        if name == "WORK_DIR":
            if ctx.work is None:
                raise ValueError("$(WORK_DIR) needs resumable=True on the target")
            return shlex.quote(str(ctx.work))
        paths = locations.get(arg)
        if paths is None:
            raise ValueError(f"$({name} {arg}): {arg!r} is not one of srcs (write it exactly as in srcs)")
        if name == "location" and len(paths) != 1:
            raise ValueError(f"$(location {arg}) expands to {len(paths)} files; use $(locations {arg})")
        return " ".join(shlex.quote(str(p)) for p in paths)

    cmd = _MAKE_VAR.sub(expand, ctx.attr.cmd)
    if "$@" in cmd:
        if len(outs) != 1:
            raise ValueError("$@ needs exactly one output")
        cmd = cmd.replace("$@", shlex.quote(str(outs[0])))
    if "$<" in cmd:
        if len(srcs) != 1:
            raise ValueError("$< needs exactly one source file")
        cmd = cmd.replace("$<", shlex.quote(str(srcs[0])))
    env = {"PATH": GENRULE_PATH, "HOME": str(ctx.tmp), "TMPDIR": str(ctx.tmp), "LANG": "C.UTF-8", "OUT_DIR": str(ctx.out)}
    if ctx.work is not None:
        env["WORK_DIR"] = str(ctx.work)
    if ctx.out_url is not None:
        env["OUT_URL"] = ctx.out_url
    env.update({k: v for k, v in ctx.env.items() if v is not None})
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], cwd=ctx.tmp, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"command exited with status {proc.returncode}: {ctx.attr.cmd}")
    return None


def _spellings(by_label: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Each label under its canonical form and, when unambiguous, as ':name' and 'name'."""
    out = dict(by_label)
    short: dict[str, list[str]] = {}
    for label in by_label:
        name = label.split(":", 1)[1]
        short.setdefault(name, []).append(label)
    for name, labels in short.items():
        if len(labels) == 1:
            out.setdefault(f":{name}", by_label[labels[0]])
            out.setdefault(name, by_label[labels[0]])
    return out


def _files_of(path: Path | str) -> list[Path | str]:
    if isinstance(path, str):  # an in-place output in a bucket: its URL
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
    return [path]


@rule(attrs={"srcs": attr.label_list(doc="Source files (or targets) to group.")})
def filegroup(ctx: ActionContext):
    """Copy the sources into one output tree: each at its label's name (`//pkg:data/a.txt` -> `data/a.txt`)."""
    for path, label in zip(ctx.inputs.srcs, ctx.labels.srcs):
        _place(path, ctx.out / label.split(":", 1)[1])
    return None


def _place(src: Path, dest: Path) -> None:
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.is_file():
                _place(p, dest / p.relative_to(src))
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    if os.access(src, os.X_OK):
        os.chmod(dest, 0o755)
