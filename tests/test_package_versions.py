"""Keys hold the versions of the third-party distributions a rule's code imports, and the Python
minor version: upgrading a package reruns what uses it, in every environment sharing the cache."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mbuild
from mbuild.keys.codeprint import CodePrinter
from mbuild.keys.dists import Distributions

REPO = Path(__file__).resolve().parents[1]


def _fake_dist(site: Path, name: str, version: str, top: str) -> Path:
    """A minimal installed distribution, as an installer leaves it: `<name>-<version>.dist-info`."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{top}\n")
    return info


def test_the_table_is_saved_and_reused_until_a_distribution_changes(tmp_path):
    site, cache = tmp_path / "site", tmp_path / "cache"
    info = _fake_dist(site, "Fancy_Lib", "1.0", "fancy")
    assert Distributions(cache, [str(site)]).providing("fancy") == [("fancy-lib", "1.0")]
    assert list((cache / "dists").glob("*.json")), "the table was not saved"
    # Metadata edited in place (no installer does this) is not seen: the saved table answered.
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: Fancy_Lib\nVersion: 9.9\n")
    assert Distributions(cache, [str(site)]).providing("fancy") == [("fancy-lib", "1.0")]
    # An upgrade replaces the dist-info directory, whose name holds the version.
    shutil.rmtree(info)
    _fake_dist(site, "Fancy_Lib", "1.1", "fancy")
    assert Distributions(cache, [str(site)]).providing("fancy") == [("fancy-lib", "1.1")]
    next((cache / "dists").glob("*.json")).write_text("{not json")
    assert Distributions(cache, [str(site)]).providing("fancy") == [("fancy-lib", "1.1")]  # damaged: recomputed


def test_the_first_distribution_on_the_path_is_the_one_in_the_key(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _fake_dist(first, "lib", "2.0", "lib")
    _fake_dist(second, "lib", "1.0", "lib")
    assert Distributions(None, [str(first), str(second)]).providing("lib") == [("lib", "2.0")]


def test_code_print_names_third_party_distributions_not_stdlib_project_or_mbuild(tmp_path):
    site, ws = tmp_path / "site", tmp_path / "ws"
    _fake_dist(site, "fancy", "1.0", "fancy")
    _fake_dist(site, "unused", "3.0", "unused")
    _fake_dist(site, "mbuild", "0.1.0", "mbuild\nrules")  # the engine's own distribution
    (ws / "proj").mkdir(parents=True)
    (ws / "proj" / "__init__.py").write_text("")
    (ws / "proj" / "helpers.py").write_text("def f():\n    import fancy.sub\n")
    (ws / "myrules.py").write_text("import json, os.path\nimport mbuild\nfrom mbuild.rules import genrule\nfrom proj.helpers import f\n")
    printer = CodePrinter(ws, Distributions(None, [str(site)]))
    assert printer.fingerprint(["myrules"]).packages == (("fancy", "1.0"),)


def _uv() -> str | None:
    return os.environ.get("UV") or shutil.which("uv")


def _venv(uv: str, where: Path, packages: list[str]) -> Path:
    """A real virtual environment of this interpreter holding `packages` (from uv's cache once fetched)."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    for cmd in ([uv, "venv", "-q", "--python", sys.executable, str(where)], [uv, "pip", "install", "-q", "--python", str(where / "bin" / "python"), *packages]):
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stderr}"
    return where / "bin" / "python"


RULES = '''
import six
from mbuild import attr, rule

@rule(attrs={}, outputs=["out.txt"])
def uses_six(ctx):
    (ctx.out / "out.txt").write_text(six.__version__)
'''


@pytest.mark.skipif(_uv() is None, reason="needs uv to make the two virtual environments")
def test_upgrading_an_imported_package_reruns_the_action_and_says_so(tmp_path):
    # mbuild's own dependencies at the versions this environment runs (so uv finds them in its
    # cache); mbuild itself from this checkout, through PYTHONPATH; six differs.
    deps = [f"{d}=={importlib.metadata.version(d)}" for d in ("xxhash", "lmdb", "orjson", "click")]
    python_a = _venv(_uv(), tmp_path / "venv-a", [*deps, "six==1.16.0"])
    python_b = _venv(_uv(), tmp_path / "venv-b", [*deps, "six==1.17.0"])
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "mbuild").symlink_to(Path(mbuild.__file__).parent)
    ws = tmp_path / "ws"
    (ws / "p").mkdir(parents=True)
    (ws / "WORKSPACE.toml").write_text('[workspace]\nname = "test"\n')
    (ws / "sixrules.py").write_text(textwrap.dedent(RULES))
    (ws / "p" / "BUILD.py").write_text('from sixrules import uses_six\nuses_six(name="t")\n')

    def mbuild_in(python: Path, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(shim)}
        env.pop("VIRTUAL_ENV", None)
        proc = subprocess.run([str(python), "-m", "mbuild.front.cli", *args], cwd=ws, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def build_in(python: Path) -> str:
        events = ws / "events.jsonl"
        mbuild_in(python, "build", "--events", str(events), "//p:t")
        status = json.loads(events.read_text().splitlines()[0])["status"]
        assert (ws / "mbuild-out" / "p" / "t" / "out.txt").read_text() == ("1.16.0" if python == python_a else "1.17.0")
        return status

    assert build_in(python_a) == "ran"
    assert "would run  //p:t  (six 1.16.0 → 1.17.0)" in mbuild_in(python_b, "build", "-n", "//p:t").stdout
    assert build_in(python_b) == "ran"
    assert build_in(python_a) == "cache_hit"
    assert build_in(python_b) == "cache_hit"
