"""Action keys change with every field that decides an output, and with nothing else."""

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from mbuild.keys.codeprint import CodePrint
from mbuild.keys.action_key import KeyParts, file_input, tree_input

digests = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
base = KeyParts(
    rule="rules.x:impl@1",
    code=CodePrint("0" * 32, (("rules.x", "0" * 32),), packages=(("jax", "0.6.0"), ("tokenizers", "0.20.1")), python="3.12"),
    config=b"d0:",
    outputs=("out.txt",),
    inputs={"src": file_input("pkg/a.txt", "1" * 32), "deps": [tree_input("//pkg:t", "2" * 32)]},
    env={"HF_HOME": "/x"},
    salt="",
)

changes = st.one_of(
    st.text(min_size=1).map(lambda s: ("rule", base.rule + s)),
    digests.filter(lambda d: d != base.code.digest).map(lambda d: ("code", dataclasses.replace(base.code, digest=d))),
    st.sampled_from([(("jax", "0.6.1"), ("tokenizers", "0.20.1")), (("jax", "0.6.0"),), (("jax", "0.6.0"), ("six", "1.17.0"), ("tokenizers", "0.20.1"))])
    .map(lambda p: ("code", dataclasses.replace(base.code, packages=p))),
    st.text().filter(lambda v: v != "3.12").map(lambda v: ("code", dataclasses.replace(base.code, python=v))),
    st.binary(min_size=1).map(lambda b: ("config", base.config + b)),
    st.lists(st.text(min_size=1), min_size=1, max_size=3).map(lambda o: ("outputs", tuple(o)) if tuple(o) != base.outputs else ("outputs", ("x", "y"))),
    digests.filter(lambda d: d != "1" * 32).map(lambda d: ("inputs", {**base.inputs, "src": file_input("pkg/a.txt", d)})),
    digests.filter(lambda d: d != "2" * 32).map(lambda d: ("inputs", {**base.inputs, "deps": [tree_input("//pkg:t", d)]})),
    st.just(("inputs", {**base.inputs, "src": file_input("pkg/b.txt", "1" * 32)})),
    st.just(("inputs", {**base.inputs, "deps": [tree_input("//pkg:u", "2" * 32)]})),
    st.text().filter(lambda v: v != "/x").map(lambda v: ("env", {"HF_HOME": v})),
    st.just(("env", {"HF_HOME": None})),
    st.text(min_size=1).map(lambda s: ("salt", s)),
)


@given(changes)
def test_any_change_to_any_field_changes_the_key(change):
    field, value = change
    assert dataclasses.replace(base, **{field: value}).key() != base.key()


def test_same_parts_same_key():
    assert dataclasses.replace(base).key() == base.key()
    assert len(base.key()) == 32
