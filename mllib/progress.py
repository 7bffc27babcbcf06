"""Progress checkpoints: what `train` needs to resume after its process died, without pickle.

A work directory holds complete checkpoints only under their final names; anything else is ignored:

    work_dir/step-000120/   one complete progress checkpoint, renamed into place once fsynced
        params.npz          model parameters, named as by checkpoint.flatten ("layers.wq")
        opt_state.npz       optimizer-state leaves, named by tree path (jax.tree_util.keystr, "[1][0].mu['embed']")
        metrics.jsonl       the metrics lines written up to this step
        state.json          format, step, fingerprint of the run, data RNG state, loss window, last loss,
                            and the size and sha256 of the three files above
    work_dir/.tmp-step-000120-*/    being written, or left by a dead process (removed by the next save)
    work_dir/.trash-*/              being removed

Loading takes the newest checkpoint that passes every check (fingerprint, digests, the structure of
both trees against freshly initialised ones) and skips the others with a log line, never raising.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mllib.checkpoint import flatten, read_npz, unflatten, write_npz
from mllib.model import Params

FORMAT = 1
PARAMS_NAME = "params.npz"
OPT_STATE_NAME = "opt_state.npz"
METRICS_NAME = "metrics.jsonl"
STATE_NAME = "state.json"
DATA_FILES = (PARAMS_NAME, OPT_STATE_NAME, METRICS_NAME)
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
KEEP = 2
_STEP_DIR = re.compile(r"step-(\d+)")


class BadProgress(Exception):
    """A progress checkpoint that must not be loaded; the message says why."""


@dataclass
class Progress:
    """Training state after `step` optimizer steps, enough to continue bit for bit."""

    step: int
    params: Params
    opt_state: Any
    rng_state: dict
    window: list[float]  # losses since the last metrics line
    last_loss: float | None  # mean of the last metrics window; None before the first
    metrics: list[str]  # metrics lines so far, each ending in a newline


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def step_dirs(work_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every directory named like a progress checkpoint, newest first."""
    if not work_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in work_dir.iterdir() if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def flatten_tree(tree: Any) -> dict[str, np.ndarray]:
    """Leaves of any pytree as host arrays keyed by their tree path."""
    flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    if len(flat) != len(jax.tree_util.tree_leaves(tree)):
        raise ValueError("tree paths are not unique")
    return flat


def make_rng(state: dict) -> np.random.Generator:
    """A numpy Generator continuing from a saved `bit_generator.state` (PCG64 only)."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise BadProgress(f"RNG state is not a PCG64 state: {str(state)[:80]}")
    bit_generator = np.random.PCG64()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def canonical(doc: Any) -> Any:
    """A JSON value as it reads back after a round trip (tuples become lists), for comparisons."""
    return json.loads(json.dumps(doc, sort_keys=True))


def save_progress(work_dir: Path, progress: Progress, fingerprint: dict, keep: int = KEEP) -> Path:
    """Write `progress` as `work_dir/step-NNNNNN/` atomically, then prune to the newest `keep`; returns its path."""
    work_dir.mkdir(parents=True, exist_ok=True)
    final = work_dir / step_dir_name(progress.step)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=work_dir))
    write_npz(tmp / PARAMS_NAME, flatten(progress.params), fsync=True)
    write_npz(tmp / OPT_STATE_NAME, flatten_tree(progress.opt_state), fsync=True)
    _write_fsynced(tmp / METRICS_NAME, "".join(progress.metrics).encode("utf-8"))
    state = {
        "format": FORMAT,
        "step": progress.step,
        "fingerprint": fingerprint,
        "rng": progress.rng_state,
        "window": progress.window,
        "last_loss": progress.last_loss,
        "files": {name: _file_digest(tmp / name) for name in DATA_FILES},
    }
    _write_fsynced(tmp / STATE_NAME, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    _fsync_dir(tmp)
    if final.exists():  # one that failed to load at start, now rewritten
        _discard(final)
    os.rename(tmp, final)
    _fsync_dir(work_dir)
    prune(work_dir, progress.step, keep)
    return final


def prune(work_dir: Path, newest: int, keep: int = KEEP) -> None:
    """Remove all but the `keep` newest checkpoints up to step `newest`, later ones (which failed to load) and leftovers."""
    kept = 0
    for step, path in step_dirs(work_dir):
        if step <= newest and kept < keep:
            kept += 1
        else:
            _discard(path)
    for path in work_dir.iterdir():
        if path.name.startswith((TMP_PREFIX, TRASH_PREFIX)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def load_progress(
    work_dir: Path,
    fingerprint: dict,
    params_like: Params,
    opt_state_like: Any,
    log: Callable[[str], None] | None = None,
) -> Progress | None:
    """The newest progress checkpoint in `work_dir` that passes every check, or None; skips (and logs) the rest.

    `params_like` and `opt_state_like` are freshly initialised trees, or their jax.eval_shape: a
    checkpoint must have exactly their leaf names, shapes and dtypes, and `fingerprint` must equal the one it was saved with.
    """
    for step, path in step_dirs(work_dir):
        try:
            return read_progress(path, step, fingerprint, params_like, opt_state_like)
        except (BadProgress, OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            if log:
                log(f"skipping progress checkpoint {path.name}: {type(exc).__name__}: {exc}")
    return None


def read_progress(path: Path, step: int, fingerprint: dict, params_like: Params, opt_state_like: Any) -> Progress:
    """Read and check one progress checkpoint directory; raises BadProgress (or an I/O or parse error) if unusable."""
    state = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
    if not isinstance(state, dict):
        raise BadProgress(f"{STATE_NAME} is not an object")
    if state.get("format") != FORMAT:
        raise BadProgress(f"format {state.get('format')!r}, expected {FORMAT}")
    if state.get("step") != step:
        raise BadProgress(f"state.json says step {state.get('step')!r}")
    if state.get("fingerprint") != canonical(fingerprint):
        raise BadProgress("written by a run with another configuration or other data")
    for name in DATA_FILES:
        if _file_digest(path / name) != state["files"][name]:
            raise BadProgress(f"{name} does not match the size and sha256 in {STATE_NAME}")
    params = unflatten(_checked_arrays(path / PARAMS_NAME, flatten(params_like, leaf=_spec)))
    opt_specs = {jax.tree_util.keystr(k): _spec(leaf) for k, leaf in jax.tree_util.tree_flatten_with_path(opt_state_like)[0]}
    leaves = _checked_arrays(path / OPT_STATE_NAME, opt_specs)
    treedef = jax.tree_util.tree_structure(opt_state_like)
    opt_state = jax.tree_util.tree_unflatten(treedef, list(leaves.values()))
    make_rng(state["rng"])
    window, last_loss = state["window"], state["last_loss"]
    if not isinstance(window, list) or not all(isinstance(x, float) for x in window):
        raise BadProgress("loss window is not a list of floats")
    if last_loss is not None and not isinstance(last_loss, float):
        raise BadProgress("last_loss is not a float")
    metrics = (path / METRICS_NAME).read_text(encoding="utf-8").splitlines(keepends=True)
    return Progress(step, params, opt_state, state["rng"], window, last_loss, metrics)


def _spec(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an array or a jax.ShapeDtypeStruct."""
    return tuple(leaf.shape), np.dtype(leaf.dtype)


def _checked_arrays(path: Path, specs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
    """The arrays of an npz in the order of `specs`, which they must match exactly in names, shapes and dtypes."""
    arrays = read_npz(path)
    if sorted(arrays) != sorted(specs):
        missing, extra = sorted(set(specs) - set(arrays)), sorted(set(arrays) - set(specs))
        raise BadProgress(f"{path.name} has other arrays than expected (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, (shape, dtype) in specs.items():
        if _spec(arrays[name]) != (shape, dtype):
            raise BadProgress(f"{path.name}: {name} is {arrays[name].dtype}{list(arrays[name].shape)}, expected {dtype}{list(shape)}")
    return {name: arrays[name] for name in specs}


def _file_digest(path: Path) -> dict:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"size": path.stat().st_size, "sha256": digest}


def _write_fsynced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    """Remove a directory this module wrote: rename it out of sight first, so no half-deleted checkpoint stays under its name."""
    trash = Path(tempfile.mkdtemp(prefix=f"{TRASH_PREFIX}{path.name}-", dir=path.parent))
    try:
        os.rename(path, trash / path.name)
    except FileNotFoundError:
        pass
    shutil.rmtree(trash, ignore_errors=True)
