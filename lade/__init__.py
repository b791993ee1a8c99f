"""lade: long-tailed visual recognition and label shift, with a C core.

Implements "Disentangling Label Distribution for Long-tailed Visual
Recognition" (Hong et al., CVPR 2021): the LADE loss, PC Softmax and their
baselines, plus the practice around them. Every numeric part lives in C
(csrc/); these modules only check arguments, allocate outputs and call it.
Arrays are used zero-copy: pass float32/int64/uint8 C-contiguous NumPy arrays.
"""
from lade._C import DecodeError, get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["DecodeError", "get_num_threads", "set_num_threads"]
