"""Resumable training: cost of a progress checkpoint, and a tiny run killed at 70% then resumed vs uninterrupted.

    python bench/bench_resume.py                       # tiny + default sizes, kill at 70% (tiny preset)
    python bench/bench_resume.py --sizes tiny default small --kill-at 0.7 --checkpoint-every 20
    python bench/bench_resume.py --engine --compile-cache --tiny-steps 1000   # through mbuild: build, SIGKILL, rebuild

Part 1 times `save_progress` (fsynced, with digests) and `read_progress` on freshly initialised
trees of each size, and one optimizer step (from train()'s own log), so the overhead per
checkpoint_every steps can be read off. Part 2 runs train() in fresh processes, as the engine will:
an uninterrupted run, a run SIGKILLed once its log reaches the kill step, and the resumed run;
it checks the resumed outputs are byte-identical. With --engine, part 2 goes through mbuild instead:
`mbuild build //experiments/tiny:train_llama` uninterrupted in one copy of the workspace; in
another, a build whose process group is SIGKILLed once the progress checkpoint at the kill step
exists in the action's working directory, then the rebuild (which resumes there). Times are of the
whole `mbuild` command. The machine is shared and noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mllib.config import LlamaConfig, TrainConfig  # noqa: E402
from mllib.presets import SMALL, TINY  # noqa: E402

# The sizes of experiments/BUILD.py (the default pipeline), spelled out here to avoid loading a BUILD file.
DEFAULT_MODEL = LlamaConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, d_ff=352, seq_len=128)
DEFAULT_TRAIN = TrainConfig(steps=300, batch_size=32, learning_rate=3e-3, warmup_steps=30, seed=0)
SIZES = {"tiny": (TINY.model, TINY.train), "default": (DEFAULT_MODEL, DEFAULT_TRAIN), "small": (SMALL.model, SMALL.train)}

CHILD = """
import json, sys, time
from pathlib import Path
from mllib.config import LlamaConfig, TrainConfig
from mllib.train import train
spec = json.loads(sys.argv[1])
log_file = open(spec["log"], "a", encoding="utf-8")
def log(line):
    log_file.write(line + "\\n")
    log_file.flush()
work = Path(spec["work"]) if spec["work"] else None
train(LlamaConfig(**spec["model"]), TrainConfig(**spec["train"]), Path(spec["data"]), Path(spec["out"]), log, work)
"""


def make_data(root: Path) -> Path:
    """The tiny preset's token shards (vocab 512: any of the sizes here can train on them)."""
    from mllib.corpus import prepare_corpus
    from mllib.shards import tokenize_splits
    from mllib.tokenizer import train_tokenizer

    corpus = REPO / "experiments" / "data" / "shakespeare.txt.xz"
    prepare_corpus(corpus, root / "corpus", TINY.val_fraction, TINY.split_seed, max_bytes=TINY.corpus_max_bytes)
    train_tokenizer(root / "corpus" / "train.txt", TINY.vocab_size, root / "tokenizer.json")
    splits = {s: root / "corpus" / f"{s}.txt" for s in ("train", "val")}
    tokenize_splits(root / "tokenizer.json", splits, root / "data", TINY.shard_tokens)
    return root / "data"


def checkpoint_cost(name: str, model: LlamaConfig, cfg: TrainConfig, work: Path, repeats: int) -> dict:
    """Median seconds to save and to load one progress checkpoint of this size, and its bytes."""
    import jax
    import numpy as np

    from mllib.model import init_params
    from mllib.progress import Progress, read_progress, save_progress, step_dirs
    from mllib.train import make_optimizer

    params = init_params(model, jax.random.key(0))
    opt_state = make_optimizer(cfg, params).init(params)
    rng = np.random.default_rng(0).bit_generator.state
    metrics = ['{"step": 10, "train_loss": 5.0, "lr": 0.001}\n'] * (cfg.steps // cfg.log_every)
    fingerprint = {"bench": name}
    saves, loads = [], []
    for i in range(1, repeats + 1):
        t = time.perf_counter()
        path = save_progress(work, Progress(i, params, opt_state, rng, [1.0], 1.0, metrics), fingerprint)
        saves.append(time.perf_counter() - t)
        t = time.perf_counter()
        read_progress(path, i, fingerprint, params, opt_state)
        loads.append(time.perf_counter() - t)
    size = sum(f.stat().st_size for f in step_dirs(work)[0][1].iterdir())
    return {"save_s": statistics.median(saves), "load_s": statistics.median(loads), "mb": size / 1e6}


def step_time(model: LlamaConfig, cfg: TrainConfig, data: Path, out: Path, steps: int) -> float:
    """Seconds per optimizer step after compilation, timed at train()'s log lines."""
    from mllib.train import train

    stamps: list[float] = []
    short = replace(cfg, steps=steps, warmup_steps=1, log_every=1)
    train(model, short, data, out, log=lambda line: stamps.append(time.perf_counter()) if line.startswith("step ") else None)
    return (stamps[-1] - stamps[1]) / (len(stamps) - 2)  # from the end of step 2: the first includes compiling


def start_child(
    model: LlamaConfig, cfg: TrainConfig, data: Path, out: Path, work: Path | None, log: Path, compile_cache: Path | None
) -> subprocess.Popen:
    """train() in a fresh interpreter; with compile_cache, JAX's persistent compilation cache lives there."""
    spec = {"model": asdict(model), "train": asdict(cfg), "data": str(data), "out": str(out), "work": str(work or ""), "log": str(log)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if compile_cache:
        env |= {"JAX_COMPILATION_CACHE_DIR": str(compile_cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=env)


def reap(child: subprocess.Popen) -> float:
    """Wait for the child; returns the CPU seconds (user + system) it used, steadier than wall time on a shared machine."""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def wait_for_line(log: Path, prefix: str, child: subprocess.Popen) -> float:
    """Poll the child's log until a line starts with prefix; returns the time it was seen."""
    while not (log.exists() and any(line.startswith(prefix) for line in log.read_text().splitlines())):
        if child.poll() is not None:
            raise SystemExit(f"child exited {child.returncode} before logging {prefix!r}")
        time.sleep(0.02)
    return time.perf_counter()


def kill_and_resume(model: LlamaConfig, cfg: TrainConfig, data: Path, root: Path, kill_at: float, compile_cache: bool) -> dict:
    """Wall times of an uninterrupted run, a run killed at kill_at of its steps, and its resumption.

    With compile_cache, the uninterrupted run starts with an empty cache and the killed run fills
    the one its resumption reads, as a first attempt would for the second.
    """
    root.mkdir(parents=True)
    plain_cache, work_cache = (root / "cache-plain", root / "cache-work") if compile_cache else (None, None)
    t = time.perf_counter()
    plain_cpu = reap(start_child(model, cfg, data, root / "plain", None, root / "plain.log", plain_cache))
    plain = time.perf_counter() - t
    kill_step = int(cfg.steps * kill_at)
    t = time.perf_counter()
    child = start_child(model, cfg, data, root / "killed", root / "work", root / "killed.log", work_cache)
    first_checkpoint = wait_for_line(root / "killed.log", "progress checkpoint", child) - t
    wait_for_line(root / "killed.log", f"step {kill_step}/", child)  # log_every must divide kill_step
    os.kill(child.pid, signal.SIGKILL)
    killed_cpu = reap(child)
    killed = time.perf_counter() - t
    t = time.perf_counter()
    resumed_cpu = reap(start_child(model, cfg, data, root / "resumed", root / "work", root / "resumed.log", work_cache))
    resumed = time.perf_counter() - t
    same = all((root / "resumed" / f).read_bytes() == (root / "plain" / f).read_bytes() for f in ("checkpoint/params.npz", "metrics.jsonl"))
    resumed_from = [line for line in (root / "resumed.log").read_text().splitlines() if line.startswith("resuming")]
    return {
        "plain_s": plain, "first_checkpoint_s": first_checkpoint, "killed_after_s": killed, "resume_s": resumed, "ratio": resumed / plain,
        "plain_cpu": plain_cpu, "killed_cpu": killed_cpu, "resume_cpu": resumed_cpu, "cpu_ratio": resumed_cpu / plain_cpu,
        "identical": same, "log": resumed_from,
    }


ENGINE_BUILD = """
from dataclasses import replace
from mllib.presets import TINY
from rules.llm import llama_pipeline

llama_pipeline(replace(TINY, train=replace(TINY.train, steps={steps}, warmup_steps={warmup}, checkpoint_every={every})), corpus="//experiments:data/shakespeare.txt.xz")
"""
TRAIN_LABEL = "//experiments/tiny:train_llama"


def start_build(root: Path, label: str, compile_cache: Path | None) -> subprocess.Popen:
    """`mbuild build label` in its own process group (its workers die with it)."""
    env = dict(os.environ)
    if compile_cache:
        env |= {"JAX_COMPILATION_CACHE_DIR": str(compile_cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "mbuild.front.cli", "build", "-q", label], cwd=root, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def timed_build(root: Path, label: str, compile_cache: Path | None) -> tuple[float, float]:
    """Wall and CPU seconds of one successful build."""
    t = time.perf_counter()
    child = start_build(root, label, compile_cache)
    cpu = reap(child)
    if child.returncode != 0:
        raise SystemExit(f"mbuild build {label} exited {child.returncode}: {child.stderr.read()[-2000:]}")
    return time.perf_counter() - t, cpu


def engine_kill_and_resume(cfg: TrainConfig, root: Path, kill_at: float, compile_cache: bool) -> dict:
    """Through mbuild: an uninterrupted build of train_llama, a build SIGKILLed at kill_at, the rebuild."""
    ws = root / "ws"
    ws.mkdir(parents=True)
    shutil.copy(REPO / "WORKSPACE.toml", ws)
    for part in ("rules", "mllib", "experiments"):
        shutil.copytree(REPO / part, ws / part, ignore=shutil.ignore_patterns("__pycache__"))
    (ws / "experiments/tiny/BUILD.py").write_text(ENGINE_BUILD.format(steps=cfg.steps, warmup=cfg.warmup_steps, every=cfg.checkpoint_every))
    timed_build(ws, "//experiments/tiny:tokens", None)
    plain = root / "plain"
    shutil.copytree(ws, plain, symlinks=True)
    plain_cache, work_cache = (root / "cache-plain", root / "cache-work") if compile_cache else (None, None)
    plain_s, plain_cpu = timed_build(plain, TRAIN_LABEL, plain_cache)
    kill_step = int(cfg.steps * kill_at) // cfg.checkpoint_every * cfg.checkpoint_every
    t = time.perf_counter()
    child = start_build(ws, TRAIN_LABEL, work_cache)
    while not list(ws.glob(f".mbuild/cache/inplace/.mbuild-work/*/e*-*/step-{kill_step:06d}")):
        if child.poll() is not None:
            raise SystemExit(f"the build exited {child.returncode} before checkpoint {kill_step}: {child.stderr.read()[-2000:]}")
        time.sleep(0.01)
    os.killpg(child.pid, signal.SIGKILL)
    killed_cpu = reap(child)
    killed = time.perf_counter() - t
    resume_s, resume_cpu = timed_build(ws, TRAIN_LABEL, work_cache)
    out = Path("mbuild-out/experiments/tiny/train_llama")
    same = all((ws / out / f).read_bytes() == (plain / out / f).read_bytes() for f in ("checkpoint/params.npz", "metrics.jsonl"))
    logs = "".join(p.read_text() for p in (ws / ".mbuild/cache/logs").glob("*.log"))
    return {
        "plain_s": plain_s, "killed_after_s": killed, "resume_s": resume_s, "ratio": resume_s / plain_s,
        "plain_cpu": plain_cpu, "killed_cpu": killed_cpu, "resume_cpu": resume_cpu, "cpu_ratio": resume_cpu / plain_cpu,
        "identical": same, "log": [line for line in logs.splitlines() if line.startswith("resuming")], "kill_step": kill_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["tiny", "default"], choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="steps timed per size in part 1")
    parser.add_argument("--kill-at", type=float, default=0.7)
    parser.add_argument("--checkpoint-every", type=int, default=None, help="override the tiny preset's value in part 2")
    parser.add_argument("--tiny-steps", type=int, default=None, help="override the tiny preset's steps in part 2 (warmup: a tenth)")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--compile-cache", action="store_true", help="part 2 with JAX's persistent compilation cache")
    parser.add_argument("--engine", action="store_true", help="part 2 through mbuild builds (SIGKILL of the builder's process group)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_resume_") as tmp:
        root = Path(tmp)
        data = make_data(root / "data")
        for name in args.sizes:
            model, cfg = SIZES[name]
            cost = checkpoint_cost(name, model, cfg, root / f"ckpt_{name}", args.repeats)
            per_step = step_time(model, cfg, data, root / f"steps_{name}", args.steps)
            every = cfg.checkpoint_every
            overhead = cost["save_s"] / (every * per_step) if every else 0.0
            print(
                f"{name:8s} checkpoint {cost['mb']:7.1f} MB  save {cost['save_s'] * 1e3:7.1f} ms  load {cost['load_s'] * 1e3:7.1f} ms  "
                f"step {per_step * 1e3:7.1f} ms  checkpoint_every {every}: overhead {overhead:.2%}",
                flush=True,
            )
        if not args.skip_kill:
            cfg = TINY.train
            if args.checkpoint_every is not None:
                cfg = replace(cfg, checkpoint_every=args.checkpoint_every)
            if args.tiny_steps is not None:
                cfg = replace(cfg, steps=args.tiny_steps, warmup_steps=args.tiny_steps // 10)
            if args.engine:
                result = engine_kill_and_resume(cfg, root / "engine", args.kill_at, args.compile_cache)
                result["first_checkpoint_s"] = float("nan")
            else:
                result = kill_and_resume(TINY.model, cfg, data, root / "kill", args.kill_at, args.compile_cache)
            print(
                f"{'mbuild build' if args.engine else 'train()'} tiny {cfg.steps} steps, kill at {args.kill_at:.0%} (checkpoint_every {cfg.checkpoint_every}, compile cache {args.compile_cache}): "
                f"uninterrupted {result['plain_s']:.1f}s, first checkpoint after {result['first_checkpoint_s']:.1f}s, killed after {result['killed_after_s']:.1f}s, resume {result['resume_s']:.1f}s = {result['ratio']:.0%} "
                f"of uninterrupted; CPU {result['plain_cpu']:.1f}s / killed {result['killed_cpu']:.1f}s / resume {result['resume_cpu']:.1f}s "
                f"= {result['cpu_ratio']:.0%}; identical outputs: {result['identical']}; {result['log']}"
            )


if __name__ == "__main__":
    main()
