"""Packaging: `python -m build` gives an sdist and a wheel built from it; `auditwheel repair` bundles OpenBLAS
and libturbojpeg into the wheel, which pip installs into a fresh virtual environment, where it trains.

Proves: the sdist holds everything the build needs (the wheel is built from the sdist, not from the
checkout) and every test, the C core's included; the repaired wheel's extension loads its native libraries from the wheel itself, not from the
system's apt packages; an installed lade runs a training step outside the source tree.
"""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from conftest import REPO_ROOT

CHECK_INSTALLED = r"""
import io, sys
import numpy as np
import lade

assert "site-packages" in lade.__file__, lade.__file__
maps = open("/proc/self/maps").read().split("\n")
for lib in ("libopenblas", "libturbojpeg"):
    paths = {line.split()[-1] for line in maps if lib in line}
    assert paths and all("/lade.libs/" in p for p in paths), (lib, paths)

net = lade.ResNet32(num_classes=10, variant="lade", seed=0)
opt = lade.SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
loss = lade.losses.LADELoss(lade.priors.prior_from_counts(np.arange(10, 0, -1)), alpha=0.1, remine_lambda=0.01)
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 3, 32, 32)).astype(np.float32)
y = np.arange(8, dtype=np.int64)
before = net.params.copy()
value = lade.train_step(net, opt, x, y, loss)
assert np.isfinite(value) and not np.array_equal(before, net.params)
print("installed lade trained one step, loss", value)
"""


# The fresh venv must see nothing of the checkout: with the checkout on PYTHONPATH, pip would find its
# lade.egg-info, call lade 0.1.0 "already installed" and skip the wheel.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=CLEAN_ENV, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_sdist_carries_every_test_and_the_c_core_tests(tmp_path):
    # built from a copy of the tracked files: the checkout's lade.egg-info/SOURCES.txt would add what an
    # earlier build listed, whatever MANIFEST.in now says
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\n")
    src = tmp_path / "src"
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file() and not name.startswith("zoo/"):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, src / name)
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", tmp_path, src])
    (sdist,) = tmp_path.glob("lade-*.tar.gz")
    with tarfile.open(sdist) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    wanted = [name for name in tracked if name.startswith(("tests/", "csrc/tests/", "csrc/fuzz/fuzz_"))]
    assert len(wanted) > 20 and "tests/conftest.py" in wanted and "csrc/tests/main.c" in wanted
    assert sorted(set(wanted + ["csrc/Makefile"]) - shipped) == []


@pytest.mark.slow
def test_the_repaired_wheel_installs_into_a_fresh_venv_and_trains(tmp_path):
    dist = tmp_path / "dist"
    # sdist first, then the wheel from the unpacked sdist (what `python -m build` does); no isolation so that
    # the build uses the numpy and setuptools already installed instead of downloading them
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, REPO_ROOT])
    sdists, wheels = list(dist.glob("lade-*.tar.gz")), list(dist.glob("lade-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(dist)

    repaired = tmp_path / "wheelhouse"
    proc = _run([sys.executable, "-m", "auditwheel", "show", wheels[0]])
    plat = next(word for word in proc.stdout.split() if word.strip('".').startswith("manylinux_")).strip('".')
    _run([sys.executable, "-m", "auditwheel", "repair", "--plat", plat, "-w", repaired, wheels[0]])
    (wheel,) = repaired.glob("lade-*.whl")
    bundled = [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("lade.libs/")]
    assert any("libopenblas" in n for n in bundled) and any("libturbojpeg" in n for n in bundled), bundled

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel])
    proc = _run([py, "-c", CHECK_INSTALLED], cwd=tmp_path)
    assert "trained one step" in proc.stdout
