"""`mbuild query`: Bazel's query language over the target graph.

    parse(text) -> Expr                          parser.py (grammar in its docstring), syntax.py
    evaluate(text | Expr, loader) -> QueryResult evaluate.py, over graph.py's QueryGraph
    render(result, format) -> str                output.py
    query                                        command.py: the click command

Submodules are imported on use: registering the command must not slow other commands' start-up.
"""

# The `--output` formats, here so that the command can list them without importing the machinery.
FORMATS = ("label", "label_kind", "package", "json", "graph", "minrank", "maxrank", "tree", "location", "build")
