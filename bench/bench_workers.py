"""Worker start-up benchmark: from spawning a fresh worker process to its first answer.

Worker start is on the cold-build path (one per slot, and again after a worker is killed), so this
measures what a slot pays before its first action runs: the interpreter, `import mbuild`, the
driver's sys.path, and the worker's own set-up (parent-death signal, reaper). Each sample is a new
WorkerPool of one slot running one trivial task; the figure is spawn-to-answer, not pool close.
The reaper's share is measured on its own too: it is a fork, far below the noise of the rest.

    python bench/bench_workers.py              # 30 samples
    python bench/bench_workers.py --samples 100
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import time

from mbuild.runners import worker_process as worker
from mbuild.runners.pool import WorkerPool


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


def reaper_start() -> float:
    """Seconds a worker spends starting its reaper (a fork), measured in a throwaway child process
    in a process group of its own (the reaper kills that group when the child exits)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        start = time.perf_counter()
        worker._start_reaper()
        os.write(write, str(time.perf_counter() - start).encode())
        os._exit(0)
    os.close(write)
    try:
        return float(os.read(read, 64))
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    forks = [reaper_start() for _ in range(args.samples)]  # first: fork() wants a single-threaded process
    one_start()  # warm the page cache
    times = sorted(one_start() for _ in range(args.samples))
    q1, median, q3 = statistics.quantiles(times, n=4)
    print(f"worker start-up (spawn to first answer), {args.samples} samples on {os.cpu_count()} cores:")
    print(f"  median {median * 1e3:.1f} ms, quartiles {q1 * 1e3:.1f}-{q3 * 1e3:.1f} ms, min {times[0] * 1e3:.1f} ms")
    print(f"  of which starting the reaper (a fork): median {statistics.median(forks) * 1e3:.2f} ms, max {max(forks) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
