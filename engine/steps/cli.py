"""`executor_main(steps=[...])`: the command line of a pipeline script, with Marin's flags and mbuild's.

    uv run python experiments/llama_steps.py --dry_run       # every step: hit, or would run and why
    uv run python experiments/llama_steps.py --prefix /data/runs --max_concurrent 4
    uv run python experiments/llama_steps.py --run_only 'tokenize/.*'

Exit status: 0 when every step is done, 1 when a step failed, 2 for bad usage (one line, no
traceback), 130 after Ctrl-C (running steps are stopped; nothing of theirs is published).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from mbuild.errors import MbuildError
from mbuild.events import Console
from mbuild.steps.plan import expand
from mbuild.steps.runner import PreviousTaskFailedError, StepRunner, StepsFailed
from mbuild.steps.spec import StepRef, StepSpec


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parser(description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dry_run", "--dry-run", "-n", action="store_true", help="print every step: hit, or would run and why; run nothing")
    p.add_argument("--prefix", help="where step outputs go (default: $MBUILD_PREFIX, else <workspace>/mbuild-steps)")
    p.add_argument("--force_run_failed", "--force-run-failed", type=_bool, nargs="?", const=True, default=True,
                   help="run steps that failed before with the same key again (default: true)")
    p.add_argument("--run_only", "--run-only", nargs="+", metavar="REGEX", help="run only steps whose name matches one of these (and their dependencies)")
    p.add_argument("--max_concurrent", "--max-concurrent", type=int, help="steps at once (default: the number of cores)")
    p.add_argument("--events", type=Path, help="write one JSON line per step and a summary to this file")
    p.add_argument("--remote-cache", default="", help="a remote cache URL (default: none; in-place outputs are the shared copy)")
    p.add_argument("--no-remote", action="store_true", help="use no remote cache")
    p.add_argument("--fray", help="where steps with resources run: local, iris or iris-local (default: [fray] of WORKSPACE.toml)")
    p.add_argument("--adopt_marin", "--adopt-marin", action="store_true",
                   help="take step directories Marin already finished (.executor_status SUCCESS) as done")
    p.add_argument("-k", "--keep_going", "--keep-going", action="store_true", default=True,
                   help="independent steps keep going after a failure (always on, as in Marin)")
    return p


def select(steps: Sequence[StepSpec], patterns: Sequence[str] | None) -> list[StepSpec]:
    """The steps (with their dependencies) whose name matches one of `patterns` (re.fullmatch... or search)."""
    every = expand(steps)
    if not patterns:
        return list(steps)
    compiled = [re.compile(p) for p in patterns]
    chosen = [s for s in every if any(c.search(s.name) for c in compiled)]
    if not chosen:
        raise MbuildError(f"--run_only {' '.join(patterns)}: no step matches (steps: {', '.join(s.name for s in every[:10])}{' ...' if len(every) > 10 else ''})")
    return chosen


def executor_main(steps: Sequence[StepSpec | StepRef], description: str | None = None, argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run `steps`, exit with the run's status (returns it when `argv` is given)."""
    args = parser(description).parse_args(argv)
    console = Console()
    code = 0
    try:
        specs = [s.step if isinstance(s, StepRef) else s for s in steps]
        runner = StepRunner(prefix=args.prefix, events=args.events, console=console,
                            remote_cache="" if args.no_remote else args.remote_cache, fray=args.fray,
                            adopt_marin=args.adopt_marin)
        result = runner.run(select(specs, args.run_only), dry_run=args.dry_run, force_run_failed=args.force_run_failed,
                            max_concurrent=args.max_concurrent, keep_going=args.keep_going)
        s = result.summary
        if not args.dry_run:
            console.error(f"steps: {s.actions} in all, {s.ran} ran, {s.cache_hits} cached ({s.early_cutoff} by early cutoff), {s.seconds:.2f}s")
        else:
            console.error(f"steps: {result.count('hit')} cached, {result.count('would_run')} would run")
    except StepsFailed as exc:
        for failure in exc.failures:
            cause = failure.__cause__
            console.error(f"error: {failure}" + (f": {type(cause).__name__}: {cause}" if cause is not None else ""))
        console.error(f"error: {exc}")
        code = 1
    except PreviousTaskFailedError as exc:
        console.error(f"error: {exc}")
        code = 1
    except MbuildError as exc:
        console.error(f"error: {exc}")
        code = 2
    except KeyboardInterrupt:
        code = 130
    if argv is not None:
        return code
    sys.exit(code)
