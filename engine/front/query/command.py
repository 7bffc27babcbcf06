"""`mbuild query`: the command line. Register it on the main group with `main.add_command(query)`.

Only `click` is imported here; the query machinery is imported when the command runs, so that
registering the command costs other commands nothing at start-up.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mbuild.front.query import FORMATS

if TYPE_CHECKING:
    from mbuild.front.query.syntax import Expr

_SHORTHANDS = {"deps": 1, "rdeps": 1, "path": 2}
ORDERS = ("no", "deps", "auto", "full")  # Bazel's --order_output values


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("words", nargs=-1, required=True, metavar="EXPRESSION...")
@click.option("--output", type=click.Choice(FORMATS), default="label", show_default=True, help="How to print the result.")
@click.option("--order_output", "--order-output", "order_output", type=click.Choice(ORDERS), default="auto", show_default=True,
              help="no: labels sorted by name; deps, auto, full: in dependency order (what the other formats always use).")
@click.option("-k", "--keep_going", "--keep-going", "keep_going", is_flag=True,
              help="Accepted for Bazel's sake: a query that meets an error still stops there with the error (exit 2).")
@click.option("--noimplicit_deps", "--noimplicit-deps", "noimplicit_deps", is_flag=True,
              help="Accepted for Bazel's sake: mbuild targets have no implicit dependencies, so nothing changes.")
def query(words: tuple[str, ...], output: str, order_output: str, keep_going: bool, noimplicit_deps: bool) -> None:
    """Answer a question about the target graph, in Bazel's query language. Only BUILD files are
    loaded: nothing is built, run or read from the cache.

    \b
      mbuild query 'deps(//experiments:train_llama)'     what training depends on
      mbuild query 'rdeps(//..., //experiments:corpus)'  what changes if the corpus does
      mbuild query 'somepath(//eval:x, //data:download)' how one target reaches another
      mbuild query 'kind(genrule, deps(//a:b)) except //third_party/...'
    \b
    Shorthands:
      mbuild query deps X        deps(X)
      mbuild query rdeps X       rdeps(//..., X)
      mbuild query path X Y      somepath(X, Y)

    Formats: label (default; each target before what it depends on), label_kind, package, json,
    graph (GraphViz dot), minrank, maxrank, tree, location (file:line:col: kind label), build (the
    declaration as a BUILD file would hold it). See BUILD.md (Query) for the language.
    """
    from mbuild.model.loader import Loader
    from mbuild.model.workspace import load_workspace
    from mbuild.front.query.evaluate import evaluate
    from mbuild.front.query.output import render

    gc.disable()  # loading makes many long-lived objects and no garbage cycles worth collecting
    ws = load_workspace()
    result = evaluate(command_line_query(words), Loader(ws), ws.package_at(Path.cwd()) or "")
    if not result.members:
        click.echo("Empty results", err=True)
    try:
        sys.stdout.write(render(result, output, ordered=order_output != "no"))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader (`| head`) has gone; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def command_line_query(words: tuple[str, ...]) -> str | Expr:
    """The query the command line asks: a shorthand (`deps X`, `rdeps X`, `path X Y`) as its
    syntax tree, or else the words joined by spaces. Shorthand arguments are expressions."""
    from mbuild.front.query.parser import parse
    from mbuild.front.query.syntax import Call, Word

    head, rest = words[0], words[1:]
    if _SHORTHANDS.get(head) != len(rest):
        return " ".join(words)
    args = tuple(parse(arg) for arg in rest)
    if head == "deps":
        return Call("deps", args)
    if head == "rdeps":
        return Call("rdeps", (Word("//..."), *args))
    return Call("somepath", args)
