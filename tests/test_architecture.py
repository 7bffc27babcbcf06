"""The engine's layers hold: import-linter's contracts pass, the picture in docs/ shows the layers the
contract enforces, and no engine module grows past ~400 lines without saying why."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_LINES = 400


def test_import_contracts_hold():
    proc = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c for c in config["contracts"] if c["type"] == "layers"]
    return layers["layers"]


def test_the_picture_shows_the_enforced_layers():
    """docs/architecture.mmd names every package layer of the contract, in the contract's order."""
    picture = (ROOT / "docs/architecture.mmd").read_text()
    assert picture in (ROOT / "docs/architecture.md").read_text()  # the page embeds the same diagram
    packages = [name for layer in _layers() for name in re.split(r"[|:]", layer) if (ROOT / "engine" / name.strip()).is_dir()]
    chain = re.search(r"^\s*schedule --> .*$", picture, re.M).group(0)
    order = [p.strip() for p in chain.split("-->")]
    expected = [p.strip() for p in packages if p.strip() not in ("front", "steps")]
    assert order[: len(expected)] == expected
    for name in packages:
        assert re.search(rf'^\s*{name.strip()}\["{name.strip()}/', picture, re.M), f"{name} missing from the picture"


def test_modules_stay_small_or_say_why():
    big = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_LINES and "over 400 lines because" not in text[:3000]:
            big.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert not big, "modules over 400 lines whose docstring does not say why:\n" + "\n".join(big)



def test_every_engine_package_is_installed():
    """A package missing from pyproject's list works in the editable checkout and is absent from a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    engine = ROOT / "engine"
    found = {".".join(["mbuild", *p.parent.relative_to(engine).parts]) for p in engine.rglob("__init__.py")}
    assert found - listed == set()
