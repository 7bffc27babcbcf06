"""Checkpoints without pickle: `params.npz` of flattened named arrays plus `config.json`.

The npz is written with fixed zip timestamps (unlike `np.savez`), so equal params give equal bytes.
"""

import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mllib.config import LlamaConfig
from mllib.model import Params

PARAMS_NAME = "params.npz"
CONFIG_NAME = "config.json"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def flatten(params: Params, prefix: str = "", leaf: Callable[[Any], Any] = np.asarray) -> dict[str, Any]:
    """Nested dict of arrays -> {"layers.wq": leaf(array), ...}, by default host numpy arrays."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}.", leaf))
        else:
            flat[name] = leaf(value)
    return flat


def unflatten(flat: dict[str, Any]) -> Params:
    """Inverse of `flatten`."""
    params: Params = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = params
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return params


def write_npz(path: Path, arrays: dict[str, np.ndarray], fsync: bool = False) -> None:
    """Write named arrays as an uncompressed npz in name order with fixed timestamps (same arrays, same bytes).

    With `fsync`, the file's data is on disk when this returns (for progress checkpoints).
    """
    with open(path, "wb") as out:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, array in sorted(arrays.items()):
                with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH), "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(array, order="C"), allow_pickle=False)  # keeps 0-d arrays 0-d
        if fsync:
            out.flush()
            os.fsync(out.fileno())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz, fully read (never unpickles)."""
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def save_checkpoint(path: Path, config: LlamaConfig, params: Params, meta: dict | None = None) -> None:
    """Write `path/params.npz` and `path/config.json` ({"model": config fields, "meta": meta})."""
    path.mkdir(parents=True, exist_ok=True)
    write_npz(path / PARAMS_NAME, flatten(params))
    doc = {"model": asdict(config), "meta": meta or {}}
    (path / CONFIG_NAME).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_checkpoint(path: Path) -> tuple[LlamaConfig, Params]:
    """Read a checkpoint directory back into (config, params as numpy arrays)."""
    doc = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    params = unflatten(read_npz(path / PARAMS_NAME))
    return LlamaConfig(**doc["model"]), params
