"""Stage 1: read the compressed text corpus and split it deterministically into train/val."""

import gzip
import lzma
import random
from pathlib import Path


def read_text(source: Path) -> str:
    """Read a UTF-8 text file, transparently decompressing `.xz` and `.gz`."""
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(source.suffix, open)
    with opener(source, "rt", encoding="utf-8") as f:
        return f.read()


def prepare_corpus(
    source: Path,
    out_dir: Path,
    val_fraction: float,
    seed: int,
    chunk_paragraphs: int = 32,
    max_bytes: int | None = None,
) -> dict:
    """Write `out_dir/train.txt` and `out_dir/val.txt` and return byte/line counts.

    The text is cut into paragraphs (blank-line separated), grouped into chunks of
    `chunk_paragraphs` consecutive paragraphs, and a seeded random `val_fraction` of the chunks
    becomes validation, so the held-out text is contiguous passages rather than scattered lines.
    `max_bytes` keeps only a prefix of the corpus (for fast test presets).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    text = read_text(source)
    if max_bytes is not None:
        text = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    paragraphs = [p.strip("\n") for p in text.split("\n\n") if p.strip()]
    chunks = [paragraphs[i : i + chunk_paragraphs] for i in range(0, len(paragraphs), chunk_paragraphs)]
    if len(chunks) < 2:
        raise ValueError(f"corpus too small to split: {len(chunks)} chunk(s)")
    n_val = min(len(chunks) - 1, max(1, round(val_fraction * len(chunks))))
    val_ids = set(random.Random(seed).sample(range(len(chunks)), n_val))

    out_dir.mkdir(parents=True, exist_ok=True)
    stats: dict = {"chunks": len(chunks), "val_chunks": n_val}
    for split, keep in (("train", lambda i: i not in val_ids), ("val", lambda i: i in val_ids)):
        body = "\n\n".join(p for i, chunk in enumerate(chunks) if keep(i) for p in chunk) + "\n"
        data = body.encode("utf-8")
        (out_dir / f"{split}.txt").write_bytes(data)
        stats[split] = {"bytes": len(data), "lines": body.count("\n")}
    return stats
