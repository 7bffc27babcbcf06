"""The standard rules: py_function, genrule, filegroup."""

import json

from conftest import ran


def test_py_function_gets_config_named_inputs_and_output_dir(ws):
    ws.write("lib/stats.py", '''
import json
def count(config, inputs, out):
    words = inputs["text"].read_text().split()
    (out / "stats.json").write_text(json.dumps({"words": len(words), "tag": config["tag"]}))
    return {"words": len(words)}
''')
    ws.write("lib/__init__.py", "")
    ws.write("p/doc.txt", "a b c d")
    ws.build_file("p", 'py_function(name="s", fn="lib.stats:count", config={"tag": "t"}, inputs={"text": "doc.txt"}, outs=["stats.json"])\n')
    ws.build("//p:s")
    assert json.loads((ws.root / "mbuild-out/p/s/stats.json").read_text()) == {"words": 4, "tag": "t"}
    # the function's module is in the key: editing it reruns the action
    (ws.root / "lib/stats.py").write_text((ws.root / "lib/stats.py").read_text() + "\n# edited\n")
    assert ran(ws.build("//p:s")) == {"//p:s"}


def test_py_function_value_reaches_dependents(ws):
    ws.write("lib2/__init__.py", "")
    ws.write("lib2/f.py", '''
def produce(config, inputs, out):
    (out / "x").write_text("x")
    return {"answer": 42}
''')
    ws.write(f"{ws.rules}_v.py", '''
from mbuild import attr, rule

@rule(attrs={"src": attr.label()}, outputs=["v.txt"])
def show(ctx):
    (ctx.out / "v.txt").write_text(str(ctx.values.src["answer"]))
''')
    ws.build_file("p", f'from {ws.rules}_v import show\npy_function(name="a", fn="lib2.f:produce")\nshow(name="b", src=":a")\n')
    ws.build("//p:b")
    assert (ws.root / "mbuild-out/p/b/v.txt").read_text() == "42"


def test_genrule_expansions(ws):
    ws.write("p/one.txt", "1\n")
    ws.write("p/two.txt", "2\n")
    ws.build_file(
        "p",
        '''
        genrule(name="cat", srcs=["one.txt", "two.txt"], outs=["both.txt"], cmd="cat $(SRCS) > $@")
        genrule(name="loc", srcs=[":cat", "one.txt"], outs=["a/x.txt", "b.txt"],
                cmd="cp $(location :cat) $(OUT_DIR)/a/x.txt && wc -l < $(location one.txt) > $(OUT_DIR)/b.txt")
        ''',
    )
    ws.build("//p:loc")
    assert (ws.root / "mbuild-out/p/loc/a/x.txt").read_text() == "1\n2\n"
    assert (ws.root / "mbuild-out/p/loc/b.txt").read_text().strip() == "1"


def test_genrule_failure_shows_the_command(ws):
    ws.build_file("p", 'genrule(name="g", outs=["x"], cmd="echo oops >&2; exit 3")\n')
    ws.build("//p:g", ok=False)
    assert "command exited with status 3" in ws.last.stderr
    assert "oops" in ws.last.stderr


def test_genrule_runs_with_a_fixed_path_not_the_users(ws):
    ws.build_file("p", 'genrule(name="g", outs=["p.txt"], cmd="echo $PATH > $@")\n')
    ws.mbuild("//p:g", check=True, env={"PATH": "/somewhere/odd:/usr/bin:/bin"})
    assert (ws.root / "mbuild-out/p/g/p.txt").read_text().strip() == "/usr/local/bin:/usr/bin:/bin"


def test_filegroup_keeps_package_relative_paths(ws):
    ws.write("p/data/a.txt", "a")
    ws.write("p/data/b.txt", "b")
    ws.build_file("p", 'from mbuild import glob\nfilegroup(name="data", srcs=glob(["data/*.txt"]))\nstep(name="use", deps=[":data"])\n')
    ws.build("//p:use")
    assert (ws.root / "mbuild-out/p/use/out.txt").read_text() == "+a+b"


def test_symlinks_in_outputs_must_stay_inside(ws):
    ws.build_file("p", 'genrule(name="ok", outs=["f"], cmd="echo x > $@ && ln -s f $(OUT_DIR)/link")\ngenrule(name="bad", outs=["f"], cmd="echo x > $@ && ln -s /etc/passwd $(OUT_DIR)/link")\n')
    ws.build("//p:ok")
    assert (ws.root / "mbuild-out/p/ok/link").read_text() == "x\n"
    ws.build("//p:bad", ok=False)
    assert "absolute" in ws.last.stderr
