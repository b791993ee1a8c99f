"""Builds the libFuzzer targets of csrc/fuzz (clang, ASan + UBSan) and runs
each for a bounded time from its seed corpus. A crash, sanitizer report,
leak, timeout or out-of-memory makes libFuzzer exit non-zero."""
import os
import resource
import shutil
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(REPO_ROOT, "csrc")
BUILD = os.path.join(REPO_ROOT, "build", "fuzz")  # git-ignored

FUZZ_SECONDS = 60  # per target, as issue 4 asks of CI
TARGETS = ["jpeg", "listfile", "cifar"]


@pytest.fixture(scope="module")
def fuzzers():
    assert shutil.which("clang"), "clang is needed for the fuzz targets (.ci/setup installs it with LADE_TEST_DEPS=1)"
    result = subprocess.run(["make", "-C", CSRC, "fuzz", f"BUILD={BUILD}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return BUILD


@pytest.fixture(scope="module")
def fuzz_runs(fuzzers, tmp_path_factory):
    """All targets at once, each for FUZZ_SECONDS of wall time: the three share the cores, so the
    module takes one bounded period instead of three."""
    # libFuzzer reads its RSS as the process's peak RSS, which Linux carries over from this (large) pytest
    # process through fork/exec: the RSS limit is 2 GiB above that inherited peak, and any single
    # allocation over 2 GiB is a failure in its own right.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    runs = {}
    for target in TARGETS:
        seeds = os.path.join(CSRC, "fuzz", "corpus", target)
        assert len(os.listdir(seeds)) >= 2
        scratch = tmp_path_factory.mktemp(f"fuzz_{target}")
        # new inputs go to the first (scratch) corpus folder; the seeds stay untouched
        cmd = [os.path.join(fuzzers, f"fuzz_{target}"), f"-max_total_time={FUZZ_SECONDS}",
               f"-rss_limit_mb={inherited_mb + 2048}", "-malloc_limit_mb=2048", "-timeout=20", "-print_final_stats=1",
               f"-artifact_prefix={scratch}/", str(scratch), seeds]
        # output to a file, not a pipe: a pipe nobody drains while another target is awaited would stall it
        with open(scratch / "log.txt", "w") as log:
            runs[target] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), scratch / "log.txt")
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target(fuzz_runs, target):
    proc, log = fuzz_runs[target]
    proc.wait(timeout=FUZZ_SECONDS * 3 + 60)
    stderr = log.read_text(errors="replace")
    assert proc.returncode == 0, f"fuzz_{target} failed:\n{stderr[-6000:]}"
    assert "Done" in stderr and "stat::number_of_executed_units" in stderr
