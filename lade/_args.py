"""Checks of scalar arguments in the Python layer, before NumPy allocates from them or the
bindings convert them: a bad value raises TypeError / ValueError naming lade's function and the
argument, never a bare OverflowError, MemoryError or a silent int() truncation."""
import math
import numbers

import numpy as np

INT_MAX = 2 ** 31 - 1  # the C core counts classes, rows, bins and iterations with int
# the most classes a lade model has (csrc/nn/resnet.c lade_resnet_create), so the most its features are classified into
MAX_CLASSES = 1_000_000


def whole(value, func, arg, lo=None, hi=INT_MAX):
    """`value` as an int (a Python or NumPy integer, not bool) in [lo, hi]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{func}: argument '{arg}' must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{func}: argument '{arg}' must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{func}: argument '{arg}' must be <= {hi}, got {value}")
    return value


def real(value, func, arg, lo=None, hi=None, lo_open=False):
    """`value` as a finite float (a Python or NumPy real, not bool) in [lo, hi] ((lo, hi] with lo_open)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}: argument '{arg}' must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (lo is not None and (value < lo or (lo_open and value == lo))) or (
            hi is not None and value > hi):
        bound = f"{'>' if lo_open else '>='} {lo}" if hi is None else f"in {'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"{func}: argument '{arg}' must be finite{'' if lo is None else ' and ' + bound}, "
                         f"got {value}")
    return value


def empty(shape, dtype, func):
    """np.empty, with a MemoryError that names the function and the size asked for."""
    try:
        return np.empty(shape, dtype)
    except MemoryError:
        raise MemoryError(f"{func}: cannot allocate an output of shape {shape} ({np.dtype(dtype).name})") from None
