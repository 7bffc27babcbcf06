"""Crash safety: the harness in bench/crash_harness.py, at a size that fits the test suite.

Builders are SIGKILLed at fault-injection points and at random moments; after every round the
cache is audited (no entry with a missing or wrong blob), and the final outputs must be exactly
right with no two overlapping executions of an action. The full run (60 rounds) is the benchmark.
"""

import json
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "bench" / "crash_harness.py"


def test_killed_builders_never_leave_a_served_corrupt_entry():
    proc = subprocess.run([sys.executable, str(HARNESS), "--rounds", "10", "--actions", "15", "--seed", "3"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert figures["kills"] >= 3
    assert figures["corrupt_entries_found"] == 0
    assert figures["overlapping_executions (duplicates)"] == 0
    assert figures["final_outputs_wrong"] == 0
