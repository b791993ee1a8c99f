"""Build of lade's C extension (lade._C).

Native libraries come from pkg-config: OpenBLAS ("openblas") and
libjpeg-turbo's TurboJPEG API ("libturbojpeg"). On Debian/Ubuntu:
    apt-get install libopenblas-dev libturbojpeg0-dev pkg-config
"""
import glob
import os
import runpy
import shlex
import subprocess

import numpy
from setuptools import Extension, setup

NATIVE = {
    "openblas": "libopenblas-dev",
    "libturbojpeg": "libturbojpeg0-dev",
}


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("lade build: pkg-config is missing (apt-get install pkg-config)")
    except subprocess.CalledProcessError as e:
        missing = [NATIVE[p] for p in NATIVE if subprocess.run(["pkg-config", "--exists", p]).returncode]
        raise SystemExit(
            "lade build: native libraries not found by pkg-config: "
            f"{e.stderr.strip()}\nInstall them with: apt-get install {' '.join(missing)}"
        )
    return shlex.split(out.stdout)


# The binding code generated from csrc/python/bindings.def (csrc/python/gen/, not in git).
runpy.run_path("csrc/python/gen_bindings.py", run_name="__main__")

cflags = pkg_config("--cflags", *NATIVE)
libs = pkg_config("--libs", *NATIVE)

# csrc/ by subsystem: base (status, threads), nn, ltmath (long-tail math), data, python (bindings).
SUBSYSTEMS = ["base", "nn", "ltmath", "data", "python"]
sources = [f for sub in SUBSYSTEMS for f in sorted(glob.glob(f"csrc/{sub}/*.c"))]
extra = ["-std=c11", "-D_GNU_SOURCE", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra",
         "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Wno-psabi",
         "-Werror=implicit-function-declaration", "-pthread"]
if os.environ.get("LADE_NATIVE", "0") == "1":
    # Opt-in: the code outside the kernels tuned for the build machine (the
    # wheel is then not portable). The hot kernels need no flag: every variant
    # is built and the CPU picks one at import (csrc/nn/cpu.c).
    extra.append("-march=native")

setup(
    ext_modules=[
        Extension(
            "lade._C",
            sources=sources,
            include_dirs=[numpy.get_include(), "csrc/include", "csrc"],
            extra_compile_args=extra + cflags,
            extra_link_args=libs + ["-pthread", "-lm"],
            depends=glob.glob("csrc/include/*.h") + glob.glob("csrc/*/*.h") + glob.glob("csrc/python/gen/*.h"),
        )
    ],
)
