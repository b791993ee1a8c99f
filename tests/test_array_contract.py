"""The array contract (issue 2, item 6), case by case, over layers, the model and the loss.

- A wrong dtype raises TypeError; a non-contiguous, misaligned or byte-swapped
  array, a wrong shape or a read-only output raises ValueError (a byte-swapped
  array may also be reported as a dtype mismatch, TypeError).
- The message names the function, the argument, what was expected and what came.
- Outputs passed in are the very arrays written (no silent copy).
- Bad sizes and indices raise instead of crashing; the cases that could write
  out of bounds run in a child process so that a crash shows as a failure.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lade
import lade.nn as lnn
from conftest import REPO_ROOT


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def positive(*shape):
    return (np.abs(f32(*shape)) + 0.5).astype(np.float32)


def model_call(method):
    """A model method as a plain function; the model runs one training forward
    first so that backward has something to differentiate."""
    net = lade.ResNet32(num_classes=10, variant="lade", seed=0)
    net.forward(f32(2, 3, 8, 8), train=True)
    return getattr(net, method)


# Each target: (function name in messages, callable, good keyword arguments,
# {argument: (role "in"/"out", a wrong shape to try[, the other argument it is checked against])}).
# None: the argument has no shape case (its shape is what the others are checked against).
# When a shape only disagrees with another argument, a message naming either of the two is right.
def targets():
    x, w = f32(2, 3, 7, 7), f32(4, 3, 3, 3)
    bn_x = f32(2, 3, 5, 5)
    logits = f32(6, 10)
    return [
        ("conv2d_forward", lnn.conv2d_forward,
         dict(x=x, weight=w, bias=f32(4), padding=1, out=np.zeros((2, 4, 7, 7), np.float32)),
         {"x": ("in", (2, 5, 7, 7)), "weight": ("in", (4, 3, 3)), "bias": ("in", (5,)),
          "out": ("out", (2, 4, 7, 8))}),
        ("conv2d_backward", lnn.conv2d_backward,
         dict(dout=f32(2, 4, 7, 7), x=x, weight=w, padding=1, dx=np.zeros_like(x),
              dweight=np.zeros_like(w), dbias=np.zeros(4, np.float32)),
         {"dout": ("in", (2, 4, 6, 7)), "dx": ("out", (2, 3, 7, 6)), "dweight": ("out", (4, 3, 3, 2)),
          "dbias": ("out", (3,))}),
        ("batchnorm2d_forward_train", lnn.batchnorm2d_forward_train,
         dict(x=bn_x, weight=positive(3), bias=f32(3), running_mean=f32(3), running_var=positive(3),
              out=np.zeros_like(bn_x)),
         {"x": ("in", (2, 3, 5)), "weight": ("in", (4,)), "running_mean": ("out", (2,)),
          "running_var": ("out", (4,)), "out": ("out", (2, 3, 5, 4))}),
        ("batchnorm2d_forward_eval", lnn.batchnorm2d_forward_eval,
         dict(x=bn_x, weight=positive(3), bias=f32(3), running_mean=f32(3), running_var=positive(3),
              out=np.zeros_like(bn_x)),
         {"bias": ("in", (2,)), "running_var": ("in", (5,)), "out": ("out", (1, 3, 5, 5))}),
        ("batchnorm2d_backward", lnn.batchnorm2d_backward,
         dict(dout=f32(2, 3, 5, 5), x=bn_x, weight=positive(3), save_mean=f32(3), save_invstd=positive(3),
              dx=np.zeros_like(bn_x), dweight=np.zeros(3, np.float32), dbias=np.zeros(3, np.float32)),
         {"dout": ("in", (2, 3, 5, 6)), "save_invstd": ("in", (4,)), "dx": ("out", (2, 3, 6, 5)),
          "dbias": ("out", (2,))}),
        ("relu_forward", lnn.relu_forward, dict(x=bn_x, out=np.zeros_like(bn_x)),
         {"x": None, "out": ("out", (2, 3, 5, 6))}),
        ("relu_backward", lnn.relu_backward,
         dict(dout=f32(2, 3, 5, 5), out=positive(2, 3, 5, 5), dx=np.zeros_like(bn_x)),
         {"out": ("in", (2, 3, 5, 6)), "dx": ("out", (2, 3, 6, 5))}),
        ("add_forward", lnn.add_forward, dict(a=bn_x, b=f32(2, 3, 5, 5), out=np.zeros_like(bn_x)),
         {"b": ("in", (2, 3, 5, 6)), "out": ("out", (2, 3, 6, 5))}),
        ("add_backward", lnn.add_backward, dict(dout=bn_x, da=np.zeros_like(bn_x), db=np.zeros_like(bn_x)),
         {"da": ("out", (2, 3, 5, 6)), "db": ("out", (2, 4, 5, 5))}),
        ("concat_forward", lnn.concat_forward, dict(a=bn_x, b=f32(2, 2, 5, 5), out=np.zeros((2, 5, 5, 5), np.float32)),
         {"b": ("in", (3, 2, 5, 5)), "out": ("out", (2, 6, 5, 5))}),
        ("concat_backward", lnn.concat_backward,
         dict(dout=f32(2, 5, 5, 5), split=3, da=np.zeros_like(bn_x), db=np.zeros((2, 2, 5, 5), np.float32)),
         {"dout": None, "da": ("out", (2, 3, 5, 4)), "db": ("out", (2, 3, 5, 5))}),
        ("global_avgpool_forward", lnn.global_avgpool_forward, dict(x=bn_x, out=np.zeros((2, 3), np.float32)),
         {"x": ("in", (2, 3, 5)), "out": ("out", (3, 2))}),
        ("global_avgpool_backward", lnn.global_avgpool_backward,
         dict(dout=f32(2, 3), height=5, width=5, dx=np.zeros_like(bn_x)),
         {"dout": ("in", (2, 3, 1)), "dx": ("out", (2, 3, 5, 4))}),
        ("maxpool2d_forward", lnn.maxpool2d_forward,
         dict(x=f32(2, 3, 6, 6), kernel_size=2, out=np.zeros((2, 3, 3, 3), np.float32),
              argmax=np.zeros((2, 3, 3, 3), np.int32)),
         {"x": ("in", (2, 3, 6)), "out": ("out", (2, 3, 3, 4)), "argmax": ("out", (2, 3, 4, 3))}),
        ("maxpool2d_backward", lnn.maxpool2d_backward,
         dict(dout=f32(2, 3, 3, 3), argmax=np.zeros((2, 3, 3, 3), np.int32), height=6, width=6,
              dx=np.zeros((2, 3, 6, 6), np.float32)),
         {"argmax": ("in", (2, 3, 3, 4)), "dx": ("out", (2, 3, 6, 5))}),
        ("shortcut_a_forward", lnn.shortcut_a_forward,
         dict(x=f32(2, 4, 6, 6), out_channels=8, out=np.zeros((2, 8, 3, 3), np.float32)),
         {"x": ("in", (2, 4, 6)), "out": ("out", (2, 8, 3, 4))}),
        ("shortcut_a_backward", lnn.shortcut_a_backward,
         dict(dout=f32(2, 8, 3, 3), in_channels=4, height=6, width=6, dx=np.zeros((2, 4, 6, 6), np.float32)),
         {"dout": ("in", (2, 8, 3, 4)), "dx": ("out", (2, 4, 6, 5))}),
        ("linear_forward", lnn.linear_forward,
         dict(x=f32(5, 7), weight=f32(3, 7), bias=f32(3), out=np.zeros((5, 3), np.float32)),
         {"x": ("in", (5, 6), "weight"), "weight": ("in", (3, 8), "x"), "bias": ("in", (4,)),
          "out": ("out", (5, 4))}),
        ("linear_backward", lnn.linear_backward,
         dict(dout=f32(5, 3), x=f32(5, 7), weight=f32(3, 7), dx=np.zeros((5, 7), np.float32),
              dweight=np.zeros((3, 7), np.float32), dbias=np.zeros(3, np.float32)),
         {"dout": ("in", (4, 3)), "dweight": ("out", (3, 6)), "dbias": ("out", (2,))}),
        ("causal_norm_forward", lnn.causal_norm_forward,
         dict(x=f32(5, 8), weight=f32(3, 8), heads=2, tau=16.0, gamma=0.03, mean=f32(8), alpha=1.5,
              out=np.zeros((5, 3), np.float32)),
         {"x": ("in", (5, 6), "weight"), "weight": ("in", (3, 7), "x"), "mean": ("in", (9,)),
          "out": ("out", (5, 4))}),
        ("causal_norm_backward", lnn.causal_norm_backward,
         dict(dout=f32(5, 3), x=f32(5, 8), weight=f32(3, 8), heads=2, tau=16.0, gamma=0.03,
              dx=np.zeros((5, 8), np.float32), dweight=np.zeros((3, 8), np.float32)),
         {"dout": ("in", (4, 3)), "dx": ("out", (5, 7)), "dweight": ("out", (3, 6))}),
        ("ResNet32.forward", model_call("forward"),
         dict(images=f32(2, 3, 8, 8), out=np.zeros((2, 10), np.float32)),
         {"images": ("in", (2, 1, 8, 8)), "out": ("out", (2, 11))}),
        ("ResNet32.backward", model_call("backward"), dict(dlogits=f32(2, 10)),
         {"dlogits": ("in", (2, 9))}),
        ("softmax_ce", lade.losses.softmax_ce,
         dict(logits=logits, labels=np.arange(6, dtype=np.int64), grad=np.zeros_like(logits)),
         {"logits": ("in", (6,)), "labels": ("in", (5,)), "grad": ("out", (6, 9))}),
    ]


def case_list():
    cases = []
    for func, _, _, args in targets():
        for arg, spec in args.items():
            kinds = ["dtype", "non_contiguous", "misaligned", "byteswapped"]
            if spec is not None:
                kinds.append("shape")
                if spec[0] == "out":
                    kinds.append("read_only")
            cases += [(func, arg, kind) for kind in kinds]
    return cases


def find_target(func):
    for target in targets():
        if target[0] == func:
            return target
    raise KeyError(func)


def wrong_dtype(good):
    return good.astype(np.float64) if good.dtype == np.float32 else good.astype(np.float32)


def non_contiguous(good):
    wide = np.zeros(good.shape[:-1] + (2 * good.shape[-1],), good.dtype)
    view = wide[..., ::2]
    view[...] = good
    return view


def misaligned(good):
    raw = np.zeros(good.nbytes + 1, np.uint8)[1:]
    view = raw.view(good.dtype).reshape(good.shape)
    view[...] = good
    assert not view.flags.aligned
    return view


def byteswapped(good):
    return good.astype(good.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))


def read_only(good):
    copy = good.copy()
    copy.flags.writeable = False
    return copy


def check_message(message, func, arg, expected, got, partner=None):
    names = (f"lade.{func}", f"lade.nn.{func}", f"lade.losses.{func}")
    assert any(n in message for n in names), f"message does not name the function lade[.nn].{func}: {message!r}"
    args = [a for a in (arg, partner) if a]
    assert any(f"'{a}'" in message or f'"{a}"' in message for a in args), (
        f"message does not name argument {' or '.join(args)}: {message!r}")
    low = message.lower()
    assert any(e.lower() in low for e in expected), f"message does not say what was expected {expected}: {message!r}"
    assert any(g.lower() in low for g in got), f"message does not say what came {got}: {message!r}"


def shape_text(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@pytest.mark.parametrize("func,arg,kind", case_list(), ids=lambda v: str(v))
def test_bad_array_is_rejected_with_a_clear_message(func, arg, kind):
    _, fn, good_kwargs, args = find_target(func)
    good = good_kwargs[arg]
    before = {k: v.copy() for k, v in good_kwargs.items() if isinstance(v, np.ndarray)}
    if kind == "dtype":
        bad, error = wrong_dtype(good), TypeError
        expected, got = [str(good.dtype)], [str(bad.dtype)]
    elif kind == "non_contiguous":
        bad, error = non_contiguous(good), ValueError
        expected, got = ["contiguous"], ["non-contiguous", "not contiguous", "strides"]
    elif kind == "misaligned":
        bad, error = misaligned(good), ValueError
        expected, got = ["aligned", "alignment"], ["misaligned", "unaligned", "not aligned"]
    elif kind == "byteswapped":
        bad, error = byteswapped(good), (ValueError, TypeError)
        expected, got = ["native", str(good.dtype)], ["swapped", "non-native", bad.dtype.str]
    elif kind == "shape":
        bad_shape = args[arg][1]
        bad, error = np.zeros(bad_shape, good.dtype), ValueError
        # what came: the full shape, or the offending size in it
        expected = [shape_text(good.shape), "must have", "must match", "expected", "dimensions"]
        got = [shape_text(bad_shape)] + [f"got {d}" for d in bad_shape]
    else:  # read_only
        bad, error = read_only(good), ValueError
        expected, got = ["writeable", "writable"], ["read-only", "readonly", "not writeable"]
    kwargs = dict(good_kwargs, **{arg: bad})
    with pytest.raises(error) as info:
        fn(**kwargs)
    partner = args[arg][2] if kind == "shape" and len(args[arg]) > 2 else None
    if partner:  # the message may blame the partner: then what came is the partner's shape
        got.append(shape_text(good_kwargs[partner].shape))
    check_message(str(info.value), func, arg, expected, got, partner)
    # a rejected call changes none of the caller's arrays
    for name, value in before.items():
        assert np.array_equal(good_kwargs[name], value, equal_nan=True), f"{name} changed by a rejected call"


def test_shape_mismatch_between_arguments_names_both_sizes():
    with pytest.raises(ValueError) as info:
        lnn.conv2d_forward(f32(2, 5, 7, 7), f32(4, 3, 3, 3))
    msg = str(info.value)
    check_message(msg, "conv2d_forward", "x", ["3"], ["5"])


def outputs_of(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("func", [t[0] for t in targets() if t[0] not in ("ResNet32.backward",)])
def test_given_outputs_are_the_arrays_written(func):
    """No silent copy: every output passed in comes back as the same object and holds the result."""
    _, fn, kwargs, args = find_target(func)
    outs = [k for k, spec in args.items() if spec is not None and spec[0] == "out"
            and k not in ("running_mean", "running_var")]
    fresh = {k: v for k, v in kwargs.items() if k not in outs}
    expected = outputs_of(fn(**fresh))
    for k in outs:
        kwargs[k][...] = 0
    got = outputs_of(fn(**kwargs))
    returned = [r for r in got if isinstance(r, np.ndarray)]
    for k in outs:
        assert any(r is kwargs[k] for r in returned), f"{func}: the '{k}' passed in is not the array returned"
    for e, g in zip(expected, got):
        if isinstance(e, np.ndarray):
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6, err_msg=f"{func}: result differs with given outputs")


def test_running_stats_are_updated_in_the_callers_arrays():
    rmean, rvar = np.zeros(3, np.float32), np.ones(3, np.float32)
    lnn.batchnorm2d_forward_train(f32(2, 3, 5, 5), positive(3), f32(3), rmean, rvar)
    assert rmean.any() and not np.all(rvar == 1), "running statistics passed in were not updated in place"


def test_model_views_are_not_copies():
    net = lade.ResNet32(num_classes=10)
    assert not net.params.flags.owndata, "params owns its data: a copy, not a view of the C buffer"
    first = net.params
    net.params[0] = 42.0
    assert first[0] == 42.0 and net.parameters()["conv1.weight"].flat[0] == 42.0


# ---------------------------------------------------------------------------------------------------------------
# bad sizes and indices: an exception, never a crash

def raises_value_error_in_child(code):
    """Runs `code` in a fresh interpreter; it must end with a ValueError or
    TypeError (or RuntimeError for a call out of order), caught and reported,
    not a crash or a silent success."""
    script = textwrap.dedent("""
        import numpy as np, lade, lade.nn as lnn
        def f32(*s): return np.random.default_rng(0).standard_normal(s).astype(np.float32)
        try:
        {body}
        except (ValueError, TypeError, RuntimeError) as e:
            print("RAISED", type(e).__name__, e)
        else:
            print("NO ERROR")
    """).format(body=textwrap.indent(textwrap.dedent(code).strip(), "    "))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"crashed with return code {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("RAISED"), f"no error raised for:\n{code}\nstdout: {proc.stdout}"
    return proc.stdout


@pytest.mark.parametrize("code", [
    "lnn.conv2d_forward(f32(1, 2, 3, 3), f32(2, 2, 5, 5))",                   # kernel larger than the image
    "lnn.conv2d_forward(f32(1, 2, 5, 5), f32(2, 2, 3, 3), stride=0)",
    "lnn.conv2d_forward(f32(1, 2, 5, 5), f32(2, 2, 3, 3), padding=-1)",
    "lnn.conv2d_forward(f32(1, 2, 5, 5), f32(2, 2, 3, 3), stride=(1, 2, 3))",
    "lnn.conv2d_backward(f32(1, 2, 3, 3), f32(1, 2, 5, 5), f32(2, 2, 3, 3), padding=1)",  # dout of the wrong size
    "lnn.maxpool2d_forward(f32(1, 1, 4, 4), 0)",
    "lnn.maxpool2d_forward(f32(1, 1, 4, 4), 2, padding=2)",                  # padding above kernel/2
    "lnn.maxpool2d_backward(f32(1, 1, 2, 2), np.full((1, 1, 2, 2), 10**6, np.int32), 4, 4)",
    "lnn.maxpool2d_backward(f32(1, 1, 2, 2), np.full((1, 1, 2, 2), -1, np.int32), 4, 4)",
    "lnn.shortcut_a_forward(f32(1, 8, 4, 4), 4)",                            # fewer output channels
    "lnn.shortcut_a_forward(f32(1, 4, 4, 4), 7)",                            # odd channel padding
    "lnn.concat_backward(f32(1, 4, 2, 2), 5)",                               # split beyond the channels
    "lnn.global_avgpool_backward(f32(2, 3), 0, 4)",
    "lnn.add_forward(f32(2, 3), f32(3, 2))",
    "lnn.linear_forward(f32(4, 5), f32(3, 6))",
    "lade.losses.softmax_ce(f32(3, 4), np.array([0, 4, 1], np.int64))",      # label out of range
    "lade.losses.softmax_ce(f32(3, 4), np.array([0, -1, 1], np.int64))",
    "lade.losses.softmax_ce(f32(3, 4), np.array([0, 1], np.int64))",
    "lade.ResNet32(num_classes=10).backward(f32(2, 10))",                    # no forward yet
    "net = lade.ResNet32(num_classes=10); net.forward(f32(2, 3, 8, 8)); net.backward(f32(3, 10))",
    "lade.ResNet32(num_classes=0)",
    "lade.ResNet32(variant='resnet50')",
    "lade.set_num_threads(0)",
], ids=lambda c: c[:60])
def test_bad_sizes_raise_instead_of_crashing(code):
    raises_value_error_in_child(code)


def test_backward_after_an_eval_forward_is_refused():
    net = lade.ResNet32(num_classes=10)
    net.forward(f32(2, 3, 8, 8), train=False)
    with pytest.raises((RuntimeError, ValueError), match="ResNet32.backward"):
        net.backward(f32(2, 10))
    assert not net.grads.any()


def test_empty_batch_does_not_crash():
    for call in (lambda: lnn.conv2d_forward(f32(0, 2, 5, 5), f32(3, 2, 3, 3)),
                 lambda: lnn.relu_forward(f32(0, 2, 5, 5)),
                 lambda: lade.ResNet32(num_classes=10).forward(f32(0, 3, 8, 8))):
        try:
            out = call()
        except ValueError as e:
            assert "lade." in str(e)
        else:
            assert out.shape[0] == 0


def overlapping_pair(first, second):
    """Copies of two arrays placed in one buffer so that the last element of the first
    is the first element of the second: a partial overlap, as two slices of one array give."""
    step = second.itemsize
    start = first.nbytes - step
    raw = np.zeros((start + second.nbytes) // 8 + 2, np.float64).view(np.uint8)
    a = raw[:first.nbytes].view(first.dtype).reshape(first.shape)
    b = raw[start:start + second.nbytes].view(second.dtype).reshape(second.shape)
    b[...] = second
    a[...] = first
    assert np.shares_memory(a, b)
    return a, b


def overlap_cases():
    cases = []
    for func, _, kwargs, args in targets():
        outs = [k for k, spec in args.items() if spec is not None and spec[0] == "out"]
        ins = [k for k, v in kwargs.items() if isinstance(v, np.ndarray) and k not in outs]
        cases += [(func, out, inp) for out in outs for inp in ins]
    return cases


@pytest.mark.parametrize("func,out,inp", overlap_cases(), ids=lambda v: str(v))
def test_output_overlapping_an_input_is_refused(func, out, inp):
    """An output that shares memory with an input would be read after it is written:
    refused with a message that names both arguments, and nothing is written."""
    _, fn, kwargs, _ = find_target(func)
    kwargs = dict(kwargs)
    kwargs[inp], kwargs[out] = overlapping_pair(kwargs[inp], kwargs[out])
    before = kwargs[out].copy()
    with pytest.raises(ValueError) as err:
        fn(**kwargs)
    message = str(err.value)
    assert f"'{out}'" in message and f"'{inp}'" in message and "share memory" in message, message
    assert func.split(".")[-1] in message, message
    np.testing.assert_array_equal(kwargs[out], before)


def test_two_outputs_sharing_memory_are_refused():
    dout = f32(2, 3, 5, 5)
    both = np.zeros((2, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="'da'.*'db'"):
        lnn.add_backward(dout, da=both, db=both)


@pytest.mark.parametrize("name", ["relu_forward", "add_forward", "pc_adjust", "softmax", "tau_normalize",
                                  "pc_adjust_multilabel", "pc_sigmoid"])
def test_elementwise_functions_compute_in_place(name):
    """An output that is exactly an input (out=x) computes in place: these kernels
    read each element (or row) before writing it. A shifted view is still refused."""
    x = f32(4, 10, seed=3)
    prior = np.linspace(1.0, 0.1, 10).astype(np.float32)
    prior /= prior.sum()
    call = {"relu_forward": lambda a, out: lnn.relu_forward(a, out=out),
            "add_forward": lambda a, out: lnn.add_forward(a, a * 2, out=out),
            "pc_adjust": lambda a, out: lade.posthoc.pc_adjust(a, prior, out=out),
            "softmax": lambda a, out: lade.posthoc.softmax(a, 2.0, out=out),
            "tau_normalize": lambda a, out: lade.posthoc.tau_normalize(a, 1.0, out=out),
            "pc_adjust_multilabel": lambda a, out: lade.posthoc.pc_adjust_multilabel(a, prior, 1 - prior, out=out),
            "pc_sigmoid": lambda a, out: lade.posthoc.pc_sigmoid(a, prior, out=out)}[name]
    expected = call(x.copy(), None)
    inplace = x.copy()
    assert call(inplace, inplace) is inplace
    np.testing.assert_allclose(inplace, expected, rtol=1e-6, atol=1e-7)
    buf = np.concatenate([x.ravel(), np.zeros(1, np.float32)])
    with pytest.raises(ValueError, match="share memory"):
        call(buf[:-1].reshape(x.shape), buf[1:].reshape(x.shape))


@pytest.mark.parametrize("name", ["lade_loss", "softmax_ce", "reweight"])
def test_accumulating_and_renormalising_functions_refuse_in_place(name):
    """grad is zeroed before it is accumulated, and reweight could fail halfway through
    its rows: with the input as output either would destroy the input."""
    logits = f32(6, 10, seed=4)
    labels = np.arange(6, dtype=np.int64)
    prior = np.full(10, 0.1, np.float32)
    probs = lade.posthoc.softmax(logits)
    call = {"lade_loss": lambda: lade.losses.lade_loss(logits, labels, prior, 0.1, 0.01, grad=logits),
            "softmax_ce": lambda: lade.losses.softmax_ce(logits, labels, grad=logits),
            "reweight": lambda: lade.prior_shift.reweight(probs, prior, prior, out=probs)}[name]
    saved = (logits.copy(), probs.copy())
    with pytest.raises(ValueError, match="share memory"):
        call()
    np.testing.assert_array_equal(logits, saved[0])
    np.testing.assert_array_equal(probs, saved[1])
