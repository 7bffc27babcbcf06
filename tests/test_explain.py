"""`mbuild explain`, field-level reasons in `-n`/`status`/events, and `mbuild aquery`: each kind of key
part explained against a known edit, on real workspaces and the real CLI."""

from __future__ import annotations

import dataclasses
import json

import lmdb
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ran
from mbuild.digests import digest_bytes
from mbuild.encoding import encode
from mbuild.keys.action_key import KeyParts
from mbuild.keys.codeprint import CodePrint
from mbuild.keys.explain import diff_parts
from mbuild.keys.records import flatten_config, parts_record

CONFIG_RULES = '''
from dataclasses import dataclass, field
from mbuild import attr, rule


@dataclass(frozen=True)
class Optimizer:
    learning_rate: float = 0.003
    betas: tuple = (0.9, 0.95)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 32
    warmup_steps: int = 30
    seed: int = 0
    optimizer: Optimizer = field(default_factory=Optimizer)


@rule(attrs={"data": attr.label_list(default=[]), "train": attr.value(type=TrainConfig, default=TrainConfig())}, outputs=["model.txt"])
def train(ctx):
    seen = "".join((d / "out.txt").read_text() for d in ctx.inputs.data)
    (ctx.out / "model.txt").write_text(f"{ctx.attr.train.seed}:{seen}")
'''


def pipeline(ws, seed: int = 0, lr: float = 0.003, text: str = "A") -> None:
    ws.write("cfgrules.py", CONFIG_RULES)
    ws.build_file(
        "p",
        f"""
        from cfgrules import train, TrainConfig, Optimizer
        step(name="tokens", text={text!r})
        train(name="train", data=[":tokens"], train=TrainConfig(seed={seed}, optimizer=Optimizer(learning_rate={lr})))
        """,
    )


def explain(ws, *args, cwd=None) -> list[str]:
    proc = ws.mbuild("explain", *args, check=True, cwd=cwd)
    return proc.stdout.splitlines()


def test_a_nested_dataclass_field_is_named_by_its_dotted_path_uncut_in_dry_run_status_and_events(ws):
    pipeline(ws)
    ws.build("//p:train")
    pipeline(ws, seed=1)
    plan = ws.mbuild("build", "-n", "//p:train", check=True).stdout
    assert "would run  //p:train  (train.seed: 0 → 1)" in plan  # a TrainConfig's repr is ~120 chars
    assert "//p:train   would run: train.seed: 0 → 1\n" in ws.mbuild("status", "//p:train", check=True).stdout
    lines = explain(ws, "//p:train")
    assert lines[0].startswith("//p:train: would run (key ") and lines[1:] == ["  train.seed: 0 → 1"]
    pipeline(ws, seed=1, lr=0.01)
    assert "  train.optimizer.learning_rate: 0.003 → 0.01" in explain(ws, "//p:train")
    events = ws.build("//p:train")
    (event,) = [e for e in events if e.get("label") == "//p:train"]
    assert event["status"] == "ran" and event["why"] == "train.optimizer.learning_rate: 0.003 → 0.01; train.seed: 0 → 1"
    # Built: explain now says why that build ran it, from the record before.
    lines = explain(ws, "//p:train")
    assert lines[0].startswith("//p:train: up to date (key ") and "; it ran at " in lines[0]
    assert lines[1:] == ["  train.optimizer.learning_rate: 0.003 → 0.01", "  train.seed: 0 → 1"]


def test_a_code_change_is_named_by_file_and_lines(ws):
    pipeline(ws)
    ws.build("//p:train")
    rules = ws.root / "cfgrules.py"
    kept = ws.root / ".mbuild/cache/cas" / (d := digest_bytes(rules.read_bytes()))[:2] / d[2:]
    assert kept.read_bytes() == rules.read_bytes()  # the keyed source is kept, to name lines later
    text = rules.read_text().splitlines()
    at = text.index("    seen = \"\".join((d / \"out.txt\").read_text() for d in ctx.inputs.data)")
    text[at + 1 : at + 1] = ["    # a comment", "    # and another"]
    rules.write_text("\n".join(text) + "\n")
    assert f"  code cfgrules.py changed (lines {at + 2}–{at + 3})" in explain(ws, "//p:train")
    assert f"(code cfgrules.py changed (lines {at + 2}–{at + 3}))" in ws.mbuild("build", "-n", "//p:train", check=True).stdout
    kept.unlink()
    assert "  code cfgrules.py changed (its earlier source is not kept)" in explain(ws, "//p:train")


def test_an_input_change_is_followed_one_level_down_with_deep(ws):
    pipeline(ws)
    ws.build("//p:train")
    pipeline(ws, text="A2")
    lines = explain(ws, "--deep", "//p:train")
    assert lines[0] == "//p:train: would run (after its dependencies that would run)"
    assert lines[1] == "  dependency //p:tokens will run, so its output may change"
    assert lines[2].startswith("    //p:tokens: would run (key ") and lines[3] == "      text: 'A' → 'A2'"
    assert explain(ws, "//p:train") == lines[:2]  # not deep: the dependency is named, not explained
    ws.build("//p:train")
    lines = explain(ws, "--deep", "//p:train")
    assert "up to date" in lines[0]
    assert lines[1].startswith("  input //p:tokens: output digest ") and " → " in lines[1]
    assert lines[2].startswith("    //p:tokens: up to date (key ") and lines[2].endswith(" because")
    assert lines[3] == "      text: 'A' → 'A2'"


def test_the_environment_and_the_salt_are_explained(ws):
    ws.build_file("p", 'step(name="e", text="E", env=["EXPLAIN_TEST_VAR"])\n')
    ws.mbuild("build", "//p:e", check=True, env={"EXPLAIN_TEST_VAR": "one"})
    assert explain_env(ws, "two") == ["  env EXPLAIN_TEST_VAR: 'one' → 'two'"]
    proc = ws.mbuild("explain", "//p:e", check=True, env={"EXPLAIN_TEST_VAR": ""})
    assert proc.stdout.splitlines()[1:] == ["  env EXPLAIN_TEST_VAR: 'one' → ''"]
    ws.build_file("p", 'step(name="e", text="E", env=["EXPLAIN_TEST_VAR", "EXPLAIN_TEST_TOKEN"])\n')
    proc = ws.mbuild("explain", "//p:e", check=True, env={"EXPLAIN_TEST_VAR": "one", "EXPLAIN_TEST_TOKEN": "hunter2"})
    assert proc.stdout.splitlines()[1].startswith("  env EXPLAIN_TEST_TOKEN: newly declared ((hidden: digest ")
    proc = ws.mbuild("aquery", "--output", "json", "//p:e", check=True, env={"EXPLAIN_TEST_VAR": "one", "EXPLAIN_TEST_TOKEN": "hunter2"})
    assert "hunter2" not in proc.stdout and json.loads(proc.stdout)["actions"][0]["env"]["EXPLAIN_TEST_VAR"] == "one"
    ws.build_file("p", 'step(name="e", text="E", env=["EXPLAIN_TEST_VAR"])\n')
    (ws.root / "WORKSPACE.toml").write_text('[workspace]\nname = "test"\nsalt = "rotated"\n')
    proc = ws.mbuild("explain", "//p:e", check=True, env={"EXPLAIN_TEST_VAR": "one"})
    assert proc.stdout.splitlines()[1:] == ["  workspace salt: '' → 'rotated'"]


def explain_env(ws, value: str) -> list[str]:
    return ws.mbuild("explain", "//p:e", check=True, env={"EXPLAIN_TEST_VAR": value}).stdout.splitlines()[1:]


def test_never_built_and_relative_labels(ws):
    pipeline(ws)
    assert explain(ws, ":train", cwd=ws.root / "p") == ["//p:train: would run (after its dependencies that would run)", "  never built"]
    ws.build("//p:train")
    assert explain(ws, "train", cwd=ws.root / "p")[1:] == ["  never built before"]


def test_a_bad_label_is_one_error_line_and_a_non_zero_exit(ws):
    pipeline(ws)
    for args, message in (
        (("explain", "//p:nope"), "error: no target named 'nope' in package '//p'"),
        (("explain", "//p:a b"), "error: invalid label '//p:a b'"),
        (("explain", "//p:all"), "error: explain takes one target label, not the pattern '//p:all'"),
        (("explain", "//p:BUILD.py"), "error: //p:BUILD.py is a source file (p/BUILD.py), not a rule target"),
        (("aquery", "deps(//nopkg:x)"), "error: no package '//nopkg'"),
    ):
        proc = ws.mbuild(*args)
        assert proc.returncode != 0 and proc.stderr.startswith(message) and len(proc.stderr.splitlines()) == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_aquery_lists_every_part_of_each_key_as_text_and_json(ws):
    pipeline(ws)
    ws.build("//p:tokens")
    proc = ws.mbuild("aquery", "--output", "json", "deps(//p:train)", check=True)
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "mbuild-aquery/1"
    by_label = {a["label"]: a for a in doc["actions"]}
    assert set(by_label) == {"//p:tokens", "//p:train"}
    tokens, train = by_label["//p:tokens"], by_label["//p:train"]
    assert set(train) == {"label", "kind", "state", "key", "rule", "code", "config", "inputs", "env", "outputs", "salt"}
    assert tokens["state"] == "cached" and len(tokens["key"]) == 32 and train["state"] == "would_run" and len(train["key"]) == 32
    assert train["rule"] == "cfgrules:train@1" and train["kind"] == "train" and train["outputs"] == ["model.txt"]
    assert {m["module"]: m["path"] for m in train["code"]["modules"]} == {"cfgrules": "cfgrules.py"}
    assert all(len(m["digest"]) == 32 for m in train["code"]["modules"]) and train["code"]["python"].startswith("3.")
    assert train["config"]["train.seed"] == "0" and train["config"]["train.optimizer.betas"] == "(0.9, 0.95)"
    (dep,) = train["inputs"]["data"]
    assert dep["kind"] == "tree" and dep["name"] == "//p:tokens" and len(dep["digest"]) == 32
    assert train["env"] == {} and train["salt"] == ""
    text = ws.mbuild("aquery", "deps(//p:train)", cwd=ws.root / "p", check=True).stdout
    assert f"action //p:train  (train)\n  key:      {train['key']}  [would run]\n  rule:     cfgrules:train@1\n" in text
    assert "    train.optimizer.learning_rate = 0.003\n" in text and f"    data: //p:tokens  output {dep['digest']}\n" in text
    # A key after a dependency that would run is not known yet: said so, not invented.
    pipeline(ws, text="B")
    doc = json.loads(ws.mbuild("aquery", "--output", "json", "//p:train", check=True).stdout)
    (train,) = doc["actions"]
    assert train["state"] == "unknown" and train["key"] is None and train["inputs"]["data"][0]["digest"] is None


def _label_records(ws) -> dict[str, dict]:
    env = lmdb.open(str(ws.root / ".mbuild/cache/db"), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin(db=env.open_db(b"labels", create=False)) as txn:
            return {bytes(k).decode(): orjson.loads(v) for k, v in txn.cursor()}
    finally:
        env.close()


def test_records_are_written_only_when_a_key_changes_and_keep_one_earlier_record(ws):
    pipeline(ws)
    ws.build("//p:train")
    first = _label_records(ws)
    (ws.root / "p/BUILD.py").touch()  # no no-op answer: an ordinary build, every action a hit
    assert ran(ws.build("//p:train")) == set()
    assert _label_records(ws) == first
    ws.mbuild("explain", "--deep", "//p:train", check=True)
    ws.mbuild("aquery", "//p:train", check=True)
    assert _label_records(ws) == first  # explain and aquery record nothing
    for seed in (1, 2, 3):
        pipeline(ws, seed=seed)
        ws.build("//p:train")
    record = _label_records(ws)["//p:train"]
    assert record["config"]["train.seed"][1] == "3" and record["previous"]["config"]["train.seed"][1] == "2"
    assert "previous" not in record["previous"] and record["how"] == "ran"


# --- property: the diff of two configurations names exactly the leaves that differ ------------

leaves = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, width=32), st.text(max_size=80), st.booleans(), st.none())


@dataclasses.dataclass(frozen=True)
class _Inner:
    a: object
    b: object


configs = st.dictionaries(
    st.sampled_from(["x", "y", "z"]),
    st.one_of(leaves, st.builds(_Inner, leaves, leaves), st.dictionaries(st.sampled_from(["k", "m"]), leaves, min_size=1)),
    max_size=3,
)


def _parts() -> KeyParts:
    return KeyParts("m:r@1", CodePrint("d", (("m", "d"),)), b"", ("o",), {}, {}, "")


def test_a_value_whose_type_changed_but_not_its_fields_is_named():
    @dataclasses.dataclass(frozen=True)
    class Other:
        a: object
        b: object

    (change,) = diff_parts(parts_record({"x": _Inner(1, 2)}, _parts()), parts_record({"x": Other(1, 2)}, _parts()))
    assert change.text == f"x: {_Inner.__module__}.{_Inner.__qualname__} → {Other.__module__}.{Other.__qualname__}"


@settings(max_examples=200, deadline=None)
@given(configs, configs)
def test_config_diff_names_each_changed_leaf_in_full(before, after):
    changes = diff_parts(parts_record(before, _parts()), parts_record(after, _parts()))
    flat_before, flat_after = flatten_config(before), flatten_config(after)
    changed = {
        p for p in flat_before.keys() | flat_after.keys()
        if p not in flat_before or p not in flat_after or encode(flat_before[p]) != encode(flat_after[p])
    }
    named = {c.text.split(": ", 1)[0] for c in changes}
    assert named == changed
    for c in changes:
        path = c.text.split(": ", 1)[0]
        if path in flat_after:
            assert c.text.endswith(repr(flat_after[path]))  # never cut


def test_a_record_of_an_unexpected_shape_is_said_unreadable_not_a_crash():
    now = parts_record({"x": 1}, _parts())
    for broken in ({"v": 2, "format": now["format"]}, {**now, "config": {"x": 5}}, {**now, "inputs": "not a dict"}, {**now, "modules": 3, "code": "other"}):
        (change,) = diff_parts(broken, now)
        assert change.text.startswith("its last record could not be read")
