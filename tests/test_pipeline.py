"""The example pipeline (experiments/), at its tiny size: what reruns when a user changes things.

A module fixture copies the repository's workspace (rules/, mllib/, experiments/) into a temp
directory and builds //experiments/tiny:report once; each test edits its own copy of that.
"""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ran, statuses

pytest.importorskip("jax")

REPO = Path(__file__).resolve().parents[1]
TINY = "//experiments/tiny"
STAGES = ["corpus", "tokenizer", "tokens", "train_llama", "eval", "report"]


def mbuild(root: Path, *args: str) -> list[dict]:
    events = root / "events.jsonl"
    proc = subprocess.run([sys.executable, "-m", "mbuild.front.cli", "build", "--events", str(events), *args], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in events.read_text().splitlines()]


def copy_workspace(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline") / "ws"
    root.mkdir()
    shutil.copy(REPO / "WORKSPACE.toml", root)
    for part in ("rules", "mllib", "experiments"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    events = mbuild(root, f"{TINY}:report")
    assert ran(events) == {f"{TINY}:{s}" for s in STAGES}
    return root


@pytest.fixture
def ws(built, tmp_path) -> Path:
    return copy_workspace(built, tmp_path / "ws")


def set_tiny(root: Path, **changes: str) -> None:
    """Rewrite experiments/tiny/BUILD.py with the TINY preset changed (values are Python source)."""
    (root / "experiments/tiny/BUILD.py").write_text(
        textwrap.dedent(
            f"""
            from dataclasses import replace
            from mllib.presets import TINY
            from rules.llm import llama_pipeline

            preset = replace(TINY, {", ".join(f"{k}={v}" for k, v in changes.items())})
            llama_pipeline(preset, corpus="//experiments:data/shakespeare.txt.xz")
            """
        )
    )


def test_second_run_runs_nothing(ws):
    events = mbuild(ws, f"{TINY}:report")
    assert ran(events) == set()
    assert events[-1]["summary"]["cache_hits"] == 6


def test_learning_rate_reruns_train_eval_report(ws):
    set_tiny(ws, train="replace(TINY.train, learning_rate=4e-3)")
    assert ran(mbuild(ws, f"{TINY}:report")) == {f"{TINY}:train_llama", f"{TINY}:eval", f"{TINY}:report"}


def test_vocabulary_size_reruns_tokenizer_and_everything_after(ws):
    set_tiny(ws, vocab_size="400")  # the model's vocabulary (512) still covers it
    assert ran(mbuild(ws, f"{TINY}:report")) == {f"{TINY}:{s}" for s in STAGES[1:]}


def test_tokenizer_code_change_with_same_output_stops_at_the_tokenizer(ws):
    rule = ws / "rules/llm/tokenizer.py"
    rule.write_text(rule.read_text().replace('"""Train the tokenizer', '"""Train (a comment-only edit) the tokenizer'))
    events = mbuild(ws, f"{TINY}:report")
    st = statuses(events)
    assert ran(events) == {f"{TINY}:tokenizer"}, st
    assert all(st[f"{TINY}:{s}"] == "cache_hit" for s in STAGES if s != "tokenizer")


def test_library_change_reruns_its_users(ws):
    lib = ws / "mllib/report.py"
    lib.write_text(lib.read_text() + "\n# edited\n")
    assert ran(mbuild(ws, f"{TINY}:report")) == {f"{TINY}:report"}


def test_checkpoint_loads_back_and_gives_the_same_eval_loss(built):
    from mllib.evaluate import evaluate
    from mllib.presets import TINY as preset

    out = built / "mbuild-out/experiments/tiny"
    mbuild(built, f"{TINY}:train_llama", f"{TINY}:tokens", f"{TINY}:eval")
    recorded = json.loads((out / "eval/eval.json").read_text())
    again = evaluate(out / "train_llama/checkpoint", out / "tokens", preset.eval_batch_size, preset.eval_max_windows)
    assert again["val_loss"] == pytest.approx(recorded["val_loss"], abs=1e-6)
    assert recorded["val_loss"] < recorded["unigram_val_loss"]


def test_report_has_the_curve_and_both_losses(built):
    out = built / "mbuild-out/experiments/tiny/report"
    text = (out / "report.md").read_text()
    assert "unigram baseline loss" in text and "validation loss" in text
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_llama_is_remote_tagged(built):
    from mbuild.labels import parse_label
    from mbuild.model.loader import Loader
    from mbuild.model.workspace import load_workspace

    target = Loader(load_workspace(built)).target(parse_label("//experiments:train_llama"))
    assert target.runs_on_fray and target.resources.cpu == 2


ML_MODULES = ("jax", "optax", "tokenizers", "numpy", "matplotlib")


def test_the_engine_never_imports_ml_libraries():
    """Loading every BUILD file of the example workspace and planning a build imports no ML library."""
    code = textwrap.dedent(
        f"""
        import sys
        from mbuild.front.build import build
        result = build(["//experiments/..."], workspace=__import__("pathlib").Path({str(REPO)!r}), dry_run=True)
        loaded = [m for m in {ML_MODULES!r} if m in sys.modules]
        print(",".join(loaded))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_engine_source_has_no_ml_imports():
    import ast

    for path in (REPO / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ML_MODULES for n in names), f"{path} imports {names}"
