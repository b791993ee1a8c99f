"""Each default and limit has one owner, and the places that show it agree (issue 27 §3): the LADE
loss's alpha and remine_lambda (lade.losses.LADE_DEFAULTS, read by the CLI and the API; the C core's
LADE_DEFAULT_* behind lade._C.lade_fit), the thread and loader-worker limits (the C core's, mirrored by
lade/app/config.py to refuse a bad value before a run writes anything)."""
import inspect
import re

import numpy as np
import pytest

import lade
from conftest import REPO_ROOT
from lade import _C, decoupled
from lade.app import config
from lade.losses import LADE_DEFAULTS


def _c_define(header, name):
    return float(re.search(rf"#define {name} (\S+)", (REPO_ROOT / "csrc/include" / header).read_text())[1])


def test_the_lade_loss_defaults_agree_in_c_the_cli_and_the_api():
    for key, macro in (("alpha", "LADE_DEFAULT_ALPHA"), ("remine_lambda", "LADE_DEFAULT_REMINE_LAMBDA")):
        value = LADE_DEFAULTS[key]
        assert _c_define("lade_ltmath.h", macro) == value
        assert f"{key}={value:g}" in _C.lade_fit.__doc__  # the binding's default, from the C macro
        assert config.LOSS_OPTIONS["lade"][key][1] == value
        assert inspect.signature(decoupled.lade_retrain).parameters[key].default == value


def test_the_thread_and_worker_limits_agree_in_c_and_the_cli():
    assert _c_define("lade_base.h", "LADE_MAX_THREADS") == config.MAX_THREADS
    assert _c_define("lade_data.h", "LADE_MAX_LOADER_WORKERS") == config.MAX_WORKERS
    with pytest.raises(ValueError, match=rf"in \[1, {config.MAX_THREADS}\], got {config.MAX_THREADS + 1}"):
        lade.set_num_threads(config.MAX_THREADS + 1)
    images, labels = np.zeros((2, 3, 32, 32), np.uint8), np.zeros(2, np.int64)
    with pytest.raises(ValueError, match=rf"'num_workers' must be in \[1, {config.MAX_WORKERS}\]"):
        _C.Loader(_C.Transform("cifar_test"), 1, images, labels, num_workers=config.MAX_WORKERS + 1, prefetch=1)
