"""The binding code in csrc/python/gen/ is what csrc/python/bindings.def declares: setup.py generates it
before each build, so a stale copy means the extension under test was built from other declarations."""
import subprocess
import sys

from conftest import REPO_ROOT


def test_the_generated_binding_code_matches_the_declarations():
    run = subprocess.run([sys.executable, str(REPO_ROOT / "csrc/python/gen_bindings.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
