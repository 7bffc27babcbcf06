"""The `mbuild` command line. `mbuild //pkg:target` is short for `mbuild build //pkg:target`."""

from __future__ import annotations

import gc
import os
import shutil
import sys
from pathlib import Path

import click

from mbuild.errors import MbuildError
from mbuild.events import Console, quiet_storage_logs
from mbuild.front.dispatch import NoSuchCommand, looks_like_pattern, with_command
from mbuild.front.gc import gc_command
from mbuild.front.query.command import query
from mbuild.front.records import add_record_commands
from mbuild.schedule.status import State
from mbuild.model.workspace import MARKER, is_mbuild_dir, load_workspace


_MAX_OUTPUT_LINES = 20
_GROUP_OPTIONS = ("-C", "-h", "--help", "--version")


class _Main(click.Group):
    """A group whose default command is `build` when the first word is a label."""

    def parse_args(self, ctx, args):
        # `mbuild -j 4 //x` and `mbuild //x` build; `mbuild bulid //x` is no such command.
        try:
            args = with_command(args, self.commands, _GROUP_OPTIONS)
        except NoSuchCommand as exc:
            click.echo(str(exc), err=True)
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and looks_like_pattern(args[0]):
            return "build", self.commands["build"], args
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MbuildError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # Ctrl-C outside a build's run (loading, a query): same status as during one
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "directory", type=click.Path(file_okay=False, exists=True), help="Run as if started in DIRECTORY.")
@click.version_option(package_name="mbuild")
def main(directory: str | None) -> None:
    """mbuild: a content-addressed build and cache engine for ML pipelines.

    \b
      mbuild //experiments:train_llama        build a target (same as `mbuild build ...`)
      mbuild build //experiments/...          build every target under a package
      mbuild build --dry-run //experiments:all   show what would run, and why
      mbuild explain //experiments:train_llama   why it would run (or why it ran)
    """
    if directory:
        os.chdir(directory)


@main.command()
@click.argument("patterns", nargs=-1, required=True)
@click.option("-j", "--jobs", type=int, help="Local actions at once, 1 to 256; 0 = the number of cores (default: [build].jobs).")
@click.option("-k", "--keep-going", is_flag=True, default=None, help="Keep building everything that does not depend on a failure.")
@click.option("-n", "--dry-run", is_flag=True, help="Show the plan: which actions are cache hits and which would run, and why. Runs nothing.")
@click.option("--events", type=click.Path(dir_okay=False, path_type=Path), help="Write one JSON line per action and a summary line to FILE.")
@click.option("--retry-failed/--no-retry-failed", default=True, help="Rerun actions that failed before with the same key (default), or fail at once naming the earlier failure.")
@click.option("--remote-cache", "remote_cache", metavar="URL", help="Use this remote cache (gs://, s3://, file://) instead of [remote].url.")
@click.option("--no-remote", is_flag=True, help="Use no remote cache, whatever WORKSPACE.toml says.")
@click.option("--remote-upload/--no-remote-upload", default=None, help="Upload results to the remote cache, or only read from it (default: [remote].upload).")
@click.option("--fray", "fray_backend", type=click.Choice(["local", "iris", "iris-local"]), help="Where remote-tagged actions (those asking for resources) run (default: [fray].backend).")
@click.option("--remote-jobs", type=int, help="Remote-tagged actions at once, 1 to 256 (default: [fray].remote_jobs).")
@click.option("-q", "--quiet", is_flag=True, help="Print only failures and the summary.")
@click.option("-v", "--verbose", is_flag=True, help="Stream each running action's own output lines, prefixed by its label.")
@click.option("--profile", type=click.Path(dir_okay=False, path_type=Path), help="Write a Chrome trace-event file (Perfetto, chrome://tracing) of the build to FILE.")
def build(patterns, jobs, keep_going, dry_run, events, retry_failed, remote_cache, no_remote, remote_upload, fray_backend, remote_jobs, quiet, verbose, profile):
    """Build targets named by labels or patterns (//pkg:name, //pkg:all, //pkg/..., //...)."""
    from mbuild.front.build import build as run_build
    from mbuild.front.records import record_build

    gc.disable()  # a build allocates many long-lived objects and makes no garbage cycles worth collecting
    quiet_storage_logs()
    if no_remote and remote_cache:
        raise click.UsageError("--no-remote and --remote-cache contradict each other")
    remote = "" if no_remote else remote_cache
    ws = load_workspace()
    console = Console(quiet=quiet)
    if verbose or (not quiet and sys.stderr.isatty()):  # the live console and -v's log follower (and rich) load only then
        from mbuild.front.live import make_console

        console = make_console(quiet=quiet, verbose=verbose)
    try:
        result = run_build(
            patterns, workspace=ws, jobs=jobs, keep_going=keep_going, dry_run=dry_run, events=events, retry_failed=retry_failed,
            remote=remote, remote_upload=remote_upload, fray=fray_backend, remote_jobs=remote_jobs, console=console, profile=profile, checked=True,
        )
    finally:
        console.close()
    if dry_run:
        _print_plan(result)
    console.transcript = []
    _print_summary(result, console)
    if not dry_run:
        record_build(ws, sys.argv[1:], result, console.transcript)
    if result.interrupted:
        # Actions running on threads of this process (fray's LocalClient) cannot be stopped, and
        # the interpreter would wait for them at exit. Everything is recorded and synced by now;
        # their leases go stale with this process.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(result.summary.exit_code)
    sys.exit(result.summary.exit_code)


def _print_plan(result) -> None:
    for label, st in result.statuses.items():
        if st.state is State.HIT:
            click.echo(f"  hit        {label}")
        elif st.state is State.WOULD_RUN:
            click.echo(f"  would run  {label}  ({st.why})")
            if st.holder is not None:
                click.echo(f"             running now elsewhere: held by {st.holder.describe()}")
        elif st.state is State.SKIPPED:
            click.echo(f"  skipped    {label}")


def _print_summary(result, console: Console) -> None:
    s = result.summary
    ws_root = Path.cwd()
    parts = [f"{s.actions} action{'s' if s.actions != 1 else ''}"]
    if result.interrupted:
        head = "Build interrupted"
    elif s.exit_code == 0:
        head = "Plan" if any(st.state is State.WOULD_RUN for st in result.statuses.values()) else "Build succeeded"
    else:
        head = "Build FAILED"
    counts = (
        (s.ran, "ran"),
        (s.cache_hits, "cache hits" + (f" ({s.remote_hits} remote)" if s.remote_hits else "")),
        (s.failed, "failed"),
        (s.skipped, "skipped"),
        (s.not_started, "not started"),
    )
    parts.extend(f"{count} {word}" for count, word in counts if count)
    if s.bytes_up or s.bytes_down:
        parts.append(f"{_size(s.bytes_up)} up, {_size(s.bytes_down)} down")
    would = sum(st.state is State.WOULD_RUN for st in result.statuses.values())
    if would:
        parts.append(f"{would} would run")
    console.error(f"{head}: {', '.join(parts)} in {s.seconds:.2f}s")
    if s.early_cutoff:
        stopped = ", ".join(s.cutoff_at[:3]) + (f" and {len(s.cutoff_at) - 3} more" if len(s.cutoff_at) > 3 else "")
        console.error(f"  {s.early_cutoff} action{'s' if s.early_cutoff != 1 else ''} skipped by early cutoff: {stopped} reran to identical outputs")
    for label, st in result.failures:
        first, *rest = (st.error or "").splitlines() or [""]
        console.error(f"  FAILED {label}: {first}")
        for line in rest:
            console.error(f"         {line}")
    skipped = [(lab, st) for lab, st in result.statuses.items() if st.state is State.SKIPPED]
    for label, st in skipped[:10]:
        console.error(f"  skipped {label} (depends on failed {st.because})")
    if len(skipped) > 10:
        console.error(f"  ... and {len(skipped) - 10} more skipped")
    shown = list(result.outputs.items())
    for label, path in shown[:_MAX_OUTPUT_LINES]:
        rel = os.path.relpath(path, ws_root)
        console.out(f"  {label} -> {path if rel.startswith('..') else rel}/")
    if len(shown) > _MAX_OUTPUT_LINES:
        console.out(f"  ... and {len(shown) - _MAX_OUTPUT_LINES} more under {os.path.relpath(shown[0][1].parents[1], ws_root)}/")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@main.command()
@click.argument("patterns", nargs=-1, required=True)
def status(patterns):
    """Where the actions of PATTERNS stand now: cached, or would run (and why), who is running
    them elsewhere (host, pid, since when), and what failed before. Runs nothing."""
    import time

    from mbuild.front.build import build as run_build

    result = run_build(patterns, dry_run=True, console=Console(quiet=True))
    width = max((len(str(label)) for label in result.statuses), default=0)
    for label, st in result.statuses.items():
        name = str(label).ljust(width)
        if st.state is State.HIT:
            click.echo(f"{name}  cached")
            continue
        if st.state is State.SKIPPED:
            click.echo(f"{name}  blocked by {st.because}")
            continue
        click.echo(f"{name}  would run: {st.why}")
        pad = " " * width
        if st.holder is not None:
            click.echo(f"{pad}  running now: held by {st.holder.describe()}")
        if st.failed_before:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.failed_before.get("at", 0)))
            click.echo(f"{pad}  failed before ({when} on {st.failed_before.get('host')}): {st.failed_before.get('error', '').splitlines()[0]}")


@main.command()
@click.option("--outputs-only", is_flag=True, help="Remove materialised outputs but keep the local cache.")
def clean(outputs_only):
    """Remove the outputs directory and the local cache (the next build reruns or fetches everything).

    Only directories mbuild created (holding its marker) are removed."""
    ws = load_workspace()
    targets = [ws.outputs_dir] + ([] if outputs_only else [ws.cache_dir])
    for path in targets:
        path = path.resolve()
        if path == ws.root or path in ws.root.parents or path == Path.home():
            raise MbuildError(f"refusing to remove {path}: it contains the workspace or is your home directory")
        if not path.exists():
            continue
        if not is_mbuild_dir(path):
            click.echo(f"left {ws.relpath(path)} alone: mbuild did not create it (no mbuild {MARKER} in it)", err=True)
            continue
        _remove_mbuild_dir(path)
        click.echo(f"removed {ws.relpath(path)}")


def _remove_mbuild_dir(path: Path) -> None:
    """Remove a directory mbuild made, its marker last: an interrupted clean leaves it still marked as mbuild's."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name == MARKER:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    os.unlink(path / MARKER)
    os.rmdir(path)


@main.command()
@click.argument("label")
@click.option("--deep", is_flag=True, help="Explain each changed dependency too, one level down (and so on through theirs).")
def explain(label, deep):
    """Why the action of LABEL would run, or why it ran at its last build: each part of its key
    that differs from the last key recorded for it (configuration by dotted path, code by file and
    lines, inputs by label and digest, environment, versions). Runs nothing, records nothing."""
    from mbuild.front.explain import Explainer
    from mbuild.front.plan import make_plan, one_target
    from mbuild.model.loader import Loader

    gc.disable()
    quiet_storage_logs()
    ws = load_workspace()
    loader = Loader(ws)
    target = one_target(ws, loader, label, "explain")
    for line in Explainer(make_plan(ws, loader, [target]), deep).lines(target):
        click.echo(line)


@main.command()
@click.argument("words", nargs=-1, required=True, metavar="EXPRESSION...")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="How to print the actions.")
def aquery(words, output):
    """The actions of the targets a query expression selects (`mbuild query`'s language), each
    with its key and every part that went into it: rule and version, code modules and their
    digests, configuration, inputs and their digests, environment. Runs nothing."""
    from mbuild.front.aquery import action, render_json, render_text
    from mbuild.front.plan import make_plan
    from mbuild.front.query.command import command_line_query
    from mbuild.front.query.evaluate import evaluate
    from mbuild.model.loader import Loader
    from mbuild.model.targets import Target

    gc.disable()
    quiet_storage_logs()
    ws = load_workspace()
    loader = Loader(ws)
    result = evaluate(command_line_query(words), loader, ws.package_at(Path.cwd()) or "")
    labels = sorted(n.label for i in result.members if isinstance(n := result.graph.nodes[i], Target))
    if not labels:
        click.echo("Empty results", err=True)
    plan = make_plan(ws, loader, labels) if labels else None
    actions = [action(plan, label) for label in labels] if plan else []
    sys.stdout.write(render_json(actions) if output == "json" else render_text(actions))


main.add_command(query)
main.add_command(gc_command)
add_record_commands(main)

if __name__ == "__main__":
    main()
