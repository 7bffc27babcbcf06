"""docs/first-workspace.md as written: its files, taken from the page, and its commands, run in
order in an empty directory, do what the page says they do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "first-workspace.md"


def blocks(lang: str) -> list[str]:
    return [body for fence, body in re.findall(r"```(\w*)\n(.*?)```", PAGE.read_text(), re.S) if fence == lang]


def test_the_walkthrough_runs_as_written(tmp_path):
    root = tmp_path / "hello"
    root.mkdir()

    def mbuild(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "mbuild.front.cli", *args], cwd=root, capture_output=True, text=True, timeout=120, env=os.environ)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    (root / "WORKSPACE.toml").write_text("")  # `touch WORKSPACE.toml`
    assert "Empty results" in mbuild("query", "//...")

    python = blocks("python")
    files = {body.split("\n", 1)[0][2:].strip(): body.split("\n", 1)[1] for body in python if re.match(r"# \S+\.py\n", body)}
    assert set(files) == {"wordcount.py", "BUILD.py", "top_words.py"}
    poem = next(body for body in blocks("sh") if "poem.txt <<" in body)
    subprocess.run(["bash", "-euc", poem], cwd=root, check=True)
    (root / "wordcount.py").write_text(files["wordcount.py"])
    (root / "BUILD.py").write_text(files["BUILD.py"])

    assert "1 ran" in mbuild("//:counts")
    assert (root / "mbuild-out/counts/counts.json").read_text().startswith('{\n "a": 2,\n "and": 2,')
    assert "1 cache hits" in mbuild("//:counts")

    (root / "top_words.py").write_text(files["top_words.py"])
    addition = next(body for body in python if body.startswith("from top_words import"))
    with open(root / "BUILD.py", "a") as f:
        f.write("\n" + addition)
    assert "1 ran, 1 cache hits" in mbuild("//:top")
    assert (root / "mbuild-out/top/top.txt").read_text() == "2 a\n2 and\n2 in\n"

    build = root / "BUILD.py"
    build.write_text(build.read_text().replace("n=3", "n=5"))
    assert re.search(r"would run\s+//:top\s+\(n: 3 → 5\)", mbuild("build", "-n", "//:top"))
    assert "n: 3 → 5" in mbuild("explain", "//:top")
    mbuild("//:top")

    code = root / "wordcount.py"
    code.write_text(code.read_text().replace("def count_words", "# Words are split on whitespace.\ndef count_words"))
    assert "1 action skipped by early cutoff: //:counts reran to identical outputs" in mbuild("//:top")

    with open(root / "poem.txt", "a") as f:
        f.write("and a runcible spoon\n")
    plan = mbuild("build", "-n", "//:top")
    assert "input source poem.txt: content digest" in plan and "dependency //:counts will run" in plan
    assert "2 ran" in mbuild("//:top")
    assert "input //:counts: output digest" in mbuild("explain", "//:top")
    assert mbuild("query", "deps(//:top)").split() == ["//:top", "//:counts", "//:poem.txt"]
