"""Per-action overhead of remote execution through fray versus local worker processes.

    .venv/bin/python bench/bench_fray.py [-n 20] [--parallel 4] [--skip-iris] [--llama]

Trivial actions (write one small file) run through `run_action` in three ways:

  workerpool   mbuild.runners.pool.WorkerPool (the local path: pre-started worker processes)
  fray-local   FrayExecutor("local"): fray's LocalClient, a thread of this process
  iris-local   FrayExecutor("iris-local"): a local Iris cluster started here, each action a job
               in its own process

For each there are two measurements:
  sequential   one action at a time, submit -> outcome: the latency one action pays
  parallel     n actions submitted at once, at most --parallel in flight: wall / n
  failing      one failing action at a time (the rule raises), submit -> Failed outcome

Iris's cold start (import + cluster start + first worker boot) is reported separately, and is
not part of the per-action figures.

--llama also times //experiments:train_llama (the only remote-tagged action of the example
pipeline) in a scratch copy of the workspace: its dependencies are built locally first, then the
action runs once in a local worker and once as a job on an iris-local cluster.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mbuild.action.spec import ActionSpec, ExecConfig, Failed, Ran  # noqa: E402
from mbuild.rebuild.run_once import run_action  # noqa: E402
from mbuild.runners.fray.executor import FrayExecutor  # noqa: E402
from mbuild.model.attrs import Resources  # noqa: E402
from mbuild.runners.pool import WorkerPool  # noqa: E402

RULE = '''
def trivial(ctx):
    (ctx.out / "out.txt").write_text(ctx.attr.text)
    return None


def fails(ctx):
    raise ValueError("bench failure " + ctx.attr.text)
'''


def make_specs(module: str, n: int, rule: str = "trivial") -> list[ActionSpec]:
    res = Resources(cpu=0.25, ram="256m", disk="256m")
    return [
        ActionSpec(uuid.uuid4().hex, f"//bench:t{i}", f"{module}:{rule}", {"text": str(i)}, {}, {}, ("out.txt",), {}, res)
        for i in range(n)
    ]


class Runner:
    """Run specs through one path; `sequential` and `parallel` return per-action seconds."""

    def __init__(self, kind: str, parallel: int, services=None):
        self.kind, self.q = kind, queue.Queue()
        if kind == "workerpool":
            self.pool = WorkerPool(parallel, lambda task, payload, exc: self.q.put((task.tag, payload, exc)))
        else:
            backend = "local" if kind == "fray-local" else "iris-local"
            self.ex = FrayExecutor(backend, max_jobs=parallel, on_done=lambda tag, o, exc, source: self.q.put((tag, o, exc)), services=services)

    def submit(self, spec: ActionSpec, config: ExecConfig, tag) -> None:
        if self.kind == "workerpool":
            self.pool.submit(run_action, (spec, config), tag)
        else:
            self.ex.submit(spec, config, tag)

    def get(self, expect: type = Ran):
        tag, outcome, exc = self.q.get(timeout=600)
        if exc is not None or not isinstance(outcome, expect):
            raise RuntimeError(f"{self.kind}: {tag}: {exc or (outcome.error if isinstance(outcome, Failed) else outcome)}")
        return tag

    def sequential(self, specs, config, expect: type = Ran) -> list[float]:
        times = []
        for i, s in enumerate(specs):
            t = time.perf_counter()
            self.submit(s, config, i)
            self.get(expect)
            times.append(time.perf_counter() - t)
        return times

    def parallel(self, specs, config) -> float:
        t = time.perf_counter()
        for i, s in enumerate(specs):
            self.submit(s, config, i)
        for _ in specs:
            self.get()
        return (time.perf_counter() - t) / len(specs)

    def close(self) -> None:
        if self.kind == "workerpool":
            self.pool.close()
        else:
            self.ex.close()


def bench_trivial(n: int, parallel: int, kinds: list[str]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-fray-"))
    module = f"benchrules_{os.getpid()}"
    (root / f"{module}.py").write_text(textwrap.dedent(RULE))
    sys.path.insert(0, str(root))
    results = {}
    try:
        for kind in kinds:
            config = ExecConfig(str(root), str(root / f"cache-{kind}"))
            runner = Runner(kind, parallel)
            try:
                t = time.perf_counter()
                runner.sequential(make_specs(module, 1), config)  # the first action: worker start / cluster start + boot
                cold = time.perf_counter() - t
                runner.parallel(make_specs(module, parallel), config)  # every slot warm
                seq = runner.sequential(make_specs(module, n), config)
                par = runner.parallel(make_specs(module, n), config)
                failed = runner.sequential(make_specs(module, max(3, n // 4), "fails"), config, Failed)
            finally:
                t = time.perf_counter()
                runner.close()
                shutdown = time.perf_counter() - t
            results[kind] = {"cold": cold, "seq": seq, "par": par, "failed": failed, "shutdown": shutdown}
            print(f"  {kind:11s} first action {cold:7.3f}s   sequential median {statistics.median(seq) * 1000:8.1f} ms "
                  f"(min {min(seq) * 1000:.1f}, max {max(seq) * 1000:.1f})   parallel {par * 1000:8.1f} ms/action   "
                  f"failing action {statistics.median(failed) * 1000:8.1f} ms   close {shutdown:.2f}s", flush=True)
    finally:
        sys.path.remove(str(root))
        shutil.rmtree(root, ignore_errors=True)
    return results


def bench_llama() -> None:
    """train_llama: local worker vs iris-local job, its dependencies built beforehand."""
    from mbuild.front.build import build
    from mbuild.model.graph import build_graph
    from mbuild.model.loader import Loader
    from mbuild.model.targets import Target
    from mbuild.schedule.scheduler import Scheduler
    from mbuild.schedule.status import BuildOptions
    from mbuild.model.workspace import load_workspace
    from mbuild.labels import parse_label

    src = HERE.parent
    root = Path(tempfile.mkdtemp(prefix="bench-llama-"))
    try:
        shutil.copytree(src / "experiments", root / "experiments", ignore=shutil.ignore_patterns("__pycache__"))
        (root / "WORKSPACE.toml").write_text('[workspace]\nname = "bench"\n')
        ws = load_workspace(root)
        t = time.perf_counter()
        res = build(["//experiments:tokens"], workspace=ws)
        assert res.ok, "building the dependencies failed"
        print(f"  dependencies (corpus, tokenizer, tokens) built locally in {time.perf_counter() - t:.1f}s", flush=True)
        label = parse_label("//experiments:train_llama")
        loader = Loader(ws)
        graph = build_graph(loader, [label])
        s = Scheduler(ws, graph, [label], BuildOptions(jobs=1))
        s._hash_sources()
        spec = None
        for i, node in enumerate(graph.order):
            if not isinstance(node, Target):
                continue
            st = s.status[i]
            st.parts = s._key_parts(node, i)
            st.key = st.parts.key()
            if node.label == label:
                spec = s._spec(i)
                break
            result = s._lookup(st.key)
            st.result, st.digest = result, result.tree
        config = s.exec_config
        print(f"  train_llama resources: {spec.resources}", flush=True)
        for kind in ("iris-local", "workerpool"):
            s.db.delete_result(spec.key)
            runner = Runner(kind, 1, s.services)  # the scheduler's open stores: one LMDB environment per process
            try:
                t = time.perf_counter()
                runner.submit(spec, config, "train")
                runner.get()
                wall = time.perf_counter() - t
            finally:
                runner.close()
            result = s._lookup(spec.key)
            print(f"  train_llama via {kind:10s}: {wall:6.1f}s wall (the rule itself: {result.meta['seconds']:.1f}s, pid {result.meta['pid']})", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--skip-iris", action="store_true")
    ap.add_argument("--llama", action="store_true")
    ap.add_argument("--llama-only", action="store_true")
    args = ap.parse_args()
    if args.llama_only:
        print("//experiments:train_llama:")
        bench_llama()
        return
    kinds = ["workerpool", "fray-local"] + ([] if args.skip_iris else ["iris-local"])
    print(f"{args.n} trivial actions per measurement, --parallel {args.parallel}, {os.cpu_count()} cores", flush=True)
    r = bench_trivial(args.n, args.parallel, kinds)
    base_seq = statistics.median(r["workerpool"]["seq"])
    base_par = r["workerpool"]["par"]
    base_fail = statistics.median(r["workerpool"]["failed"])
    print("\nper action, relative to the local worker pool:")
    for kind, v in r.items():
        seq, fail = statistics.median(v["seq"]), statistics.median(v["failed"])
        print(f"  {kind:11s} sequential {seq * 1000:8.1f} ms ({seq / base_seq:6.1f}x, +{(seq - base_seq) * 1000:7.1f} ms)   "
              f"parallel {v['par'] * 1000:8.1f} ms ({v['par'] / base_par:6.1f}x)   failing {fail * 1000:8.1f} ms ({fail / base_fail:6.1f}x)")
    if args.llama:
        print("\n//experiments:train_llama:")
        bench_llama()


if __name__ == "__main__":
    main()
