"""lade: long-tailed visual recognition and label shift, with a C core.

Implements "Disentangling Label Distribution for Long-tailed Visual
Recognition" (Hong et al., CVPR 2021): the LADE loss, PC Softmax and their
baselines, plus the practice around them. Every numeric part lives in C
(csrc/); these modules only check arguments, allocate outputs and call it.
Arrays are used zero-copy: pass float32/int64/uint8 C-contiguous NumPy arrays.
"""
from lade._C import DecodeError, get_num_threads, set_num_threads
from lade import data
from lade import nn
from lade import losses, posthoc, priors, sampling, metrics, prior_shift  # noqa: E401
from lade.nn import *  # noqa: F401,F403  (layers, ResNet32, SGD, schedules, train_step, predict)
from lade.nn import SGD, ResNet32, cosine_lr, predict, train_step, warmup_multistep_lr

__version__ = "0.1.0"
