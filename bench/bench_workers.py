"""Worker start-up benchmark: from spawning a fresh worker process to its first answer.

Worker start is on the cold-build path (one per slot, and again after a worker is killed), so this
measures what a slot pays before its first action runs: the interpreter, `import mbuild`, the
driver's sys.path, and the worker's own set-up (parent-death signal, reaper). Each sample is a new
WorkerPool of one slot running one trivial task; the figure is spawn-to-answer, not pool close.

    python bench/bench_workers.py              # 30 samples
    python bench/bench_workers.py --samples 100
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import time

from mbuild.workers import WorkerPool


def one_start() -> float:
    """Seconds from submitting to a new pool (which spawns its worker) to the task's answer."""
    answers: queue.Queue = queue.Queue()
    start = time.perf_counter()
    pool = WorkerPool(1, lambda task, payload, exc: answers.put((payload, exc)))
    try:
        pool.submit(os.getpid, (), None)
        payload, exc = answers.get(timeout=60)
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
    if exc is not None:
        raise SystemExit(f"the worker failed: {exc}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    one_start()  # warm the page cache
    times = sorted(one_start() for _ in range(args.samples))
    q1, median, q3 = statistics.quantiles(times, n=4)
    print(f"worker start-up (spawn to first answer), {args.samples} samples on {os.cpu_count()} cores:")
    print(f"  median {median * 1e3:.1f} ms, quartiles {q1 * 1e3:.1f}-{q3 * 1e3:.1f} ms, min {times[0] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
