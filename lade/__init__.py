"""lade: long-tailed visual recognition and label shift, with a C core.

Implements "Disentangling Label Distribution for Long-tailed Visual
Recognition" (Hong et al., CVPR 2021): the LADE loss, PC Softmax and their
baselines, plus the practice around them. Every numeric part lives in C
(csrc/); these modules only check arguments, allocate outputs and call it.
Arrays are used zero-copy: pass float32/int64/uint8 C-contiguous NumPy arrays.
"""
import os as _os

# OpenBLAS's idle threads spin (sched_yield) for about 2^28 cycles after each
# GEMM, taking a core from lade's own pool, which runs between GEMMs. A short
# timeout lets them sleep instead. It must be set before OpenBLAS loads (with
# lade._C); a value the user has set wins.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from lade._C import DecodeError, cpu_info, get_num_threads, set_isa, set_num_threads  # noqa: E402
from lade import data
from lade import nn
from lade import losses, posthoc, priors, sampling, metrics, prior_shift, decoupled, zoo  # noqa: E401
from lade.nn import *  # noqa: F401,F403  (layers, ResNet32, ResNet18, SGD, schedules, train_step, predict)
from lade.nn import SGD, ResNet18, ResNet32, cosine_lr, predict, train_step, warmup_multistep_lr

__version__ = "0.1.0"
