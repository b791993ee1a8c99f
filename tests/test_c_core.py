"""Runs the C core's own tests (built without Python) normally and under
AddressSanitizer + UndefinedBehaviorSanitizer, and the worker-pool tests under ThreadSanitizer."""
import re
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"


@pytest.mark.parametrize("target", ["test", "sanitize", "tsan"])
def test_c_core(target):
    run = subprocess.run(["make", "-s", "-C", str(CSRC), target], capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    print(output)
    summary = re.findall(r"^(\d+) passed, (\d+) failed$", run.stdout, re.M)
    assert run.returncode == 0, output[-4000:]
    assert summary, "the C test runner printed no summary line"
    passed, failed = map(int, summary[-1])
    assert failed == 0 and passed > 0
    assert "runtime error" not in output and "ERROR: AddressSanitizer" not in output
    assert "WARNING: ThreadSanitizer" not in output
