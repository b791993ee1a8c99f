"""The Causal Norm classifier (Tang et al. 2020, spec §1.7): the layer against a PyTorch implementation
written here and against finite differences, TDE inference, the running feature mean (a buffer, in the
state_dict, the checkpoint and the zoo's weights), the config keys, a short training, a resumed run
bit for bit, and the report's two rows (Causal Norm, PC Causal Norm)."""
import sys

import numpy as np
import pytest
import torch

import lade
import lade.nn as lnn
from lade import losses, zoo
from lade.app import config, decoupled_stage, evaluation, runs, training, zoo_entries
from lade.app.cli import main
from test_cli import TINY, run_main, tiny_root  # noqa: F401  (tiny_root is a fixture)
from test_layers import BWD_TOL, FWD_TOL, assert_close, finite_difference, projected, randn, t64

CIFAR = dict(heads=2, tau=16.0, gamma=1 / 32, alpha=1.5, mean_momentum=0.9)  # spec §5.1


def torch_causal_norm(x, w, heads, tau, gamma, mean=None, alpha=0.0):
    """The classifier as the spec states it, in PyTorch: per head, x / |x| and w / (|w| + gamma), their
    products summed and scaled by tau / heads; TDE removes alpha * cos(x, m) * m / |m| from x / |x|."""
    size = x.shape[1] // heads
    out = 0
    for h in range(heads):
        xs, ws = x[:, h * size:(h + 1) * size], w[:, h * size:(h + 1) * size]
        nx = xs / xs.norm(dim=1, keepdim=True)
        nw = ws / (ws.norm(dim=1, keepdim=True) + gamma)
        if mean is not None:
            m = mean[h * size:(h + 1) * size]
            nm = m / m.norm()
            cos = (nx * nm).sum(dim=1, keepdim=True) / nx.norm(dim=1, keepdim=True)
            nx = nx - alpha * cos * nm
        out = out + (nx * (tau / heads)) @ nw.T
    return out


# ------------------------------------------------------------------------------------------- the layer

LAYER_CASES = [(5, 12, 7, 3, 1 / 32), (8, 128, 100, 2, 1 / 32), (4, 64, 10, 1, 0.0), (1, 6, 1, 2, 0.5)]


@pytest.mark.parametrize("n,fin,fout,heads,gamma", LAYER_CASES, ids=str)
def test_causal_norm_matches_torch(rng, n, fin, fout, heads, gamma):
    x, weight, mean = randn(rng, n, fin), 0.3 * randn(rng, fout, fin), randn(rng, fin)
    xt, wt = t64(x, True), t64(weight, True)
    ref = torch_causal_norm(xt, wt, heads, 16.0, gamma)
    out = lnn.causal_norm_forward(x, weight, heads, 16.0, gamma)
    assert_close(out, ref, FWD_TOL, "causal_norm_forward")
    tde = lnn.causal_norm_forward(x, weight, heads, 16.0, gamma, mean=mean, alpha=1.5)
    assert_close(tde, torch_causal_norm(t64(x), t64(weight), heads, 16.0, gamma, t64(mean), 1.5), FWD_TOL,
                 "causal_norm_forward with TDE")
    assert np.array_equal(lnn.causal_norm_forward(x, weight, heads, 16.0, gamma, mean=mean, alpha=0.0), out)
    dout = randn(rng, n, fout)
    ref.backward(t64(dout))
    dx, dw = lnn.causal_norm_backward(dout, x, weight, heads, 16.0, gamma)
    assert_close(dx, xt.grad, BWD_TOL, "causal_norm_backward dx")
    assert_close(dw, wt.grad, BWD_TOL, "causal_norm_backward dweight")
    start = [randn(rng, *g.shape) for g in (dx, dw)]
    given = [s.copy() for s in start]
    result = lnn.causal_norm_backward(dout, x, weight, heads, 16.0, gamma, dx=given[0], dweight=given[1])
    for r, g, s, f, name in zip(result, given, start, (dx, dw), ("dx", "dweight")):
        assert r is g, f"causal_norm_backward returned a different array for {name}"
        assert_close(g, s.astype(np.float64) + f, 1e-6, f"causal_norm_backward accumulation into {name}")


def test_causal_norm_finite_differences(rng):
    x, weight = randn(rng, 3, 8), randn(rng, 5, 8)
    proj = rng.standard_normal((3, 5))
    dx, dw = lnn.causal_norm_backward(proj.astype(np.float32), x, weight, 2, 4.0, 0.25)
    for analytic, array, name in ((dx, x, "dx"), (dw, weight, "dweight")):
        numeric = finite_difference(lambda: projected(lnn.causal_norm_forward(x, weight, 2, 4.0, 0.25), proj), array,
                                    eps=1e-3)
        assert_close(analytic, numeric, 5e-3, f"causal_norm {name} vs finite differences")


def test_causal_norm_bad_arguments_are_named(rng):
    x, weight = randn(rng, 3, 8), randn(rng, 5, 8)
    with pytest.raises(ValueError, match=r"lade.causal_norm_forward: causal norm: heads must be >= 1 and divide the "
                                          r"feature size 8, got 3"):
        lnn.causal_norm_forward(x, weight, 3, 16.0, 0.1)
    with pytest.raises(ValueError, match=r"tau must be finite and > 0, got -1"):
        lnn.causal_norm_forward(x, weight, 2, -1.0, 0.1)
    with pytest.raises(ValueError, match=r"lade.causal_norm_forward: argument 'mean'"):
        lnn.causal_norm_forward(x, weight, 2, 16.0, 0.1, mean=randn(rng, 7))


# ------------------------------------------------------------------------------------------- the model

def test_model_names_its_tensors_and_checks_its_arguments():
    net = lade.ResNet32(100, classifier="causal_norm", **CIFAR)
    state = net.state_dict()
    assert "fc.bias" not in state and state["fc.weight"].shape == (100, 128)
    assert list(net.running_stats())[-1] == "fc.feature_mean" and state["fc.feature_mean"].shape == (128,)
    assert not state["fc.feature_mean"].any()
    assert net.num_params == 550388 - 100 and net.buffers.size == 2528 + 128
    assert net.classifier == "causal_norm" and net.causal_norm == CIFAR
    assert lade.ResNet32(10).causal_norm is None
    with pytest.raises(TypeError, match=r"lade.ResNet32: classifier='causal_norm' needs the argument 'alpha'"):
        lade.ResNet32(10, classifier="causal_norm", **{k: v for k, v in CIFAR.items() if k != "alpha"})
    with pytest.raises(ValueError, match=r"lade.ResNet32: argument 'tau' is an option of classifier='causal_norm', "
                                         r"got it with classifier='linear'"):
        lade.ResNet32(10, tau=16.0)
    with pytest.raises(ValueError, match=r"lade.ResNet32: argument 'classifier' must be one of"):
        lade.ResNet32(10, classifier="cosine")
    with pytest.raises(ValueError, match=r"lade.ResNet32: causal norm: heads must be >= 1 and divide the feature size "
                                         r"64, got 3"):
        lade.ResNet32(10, "classic", classifier="causal_norm", **dict(CIFAR, heads=3))
    with pytest.raises(ValueError, match=r"mean_momentum must be in \[0, 1\], got 2"):
        lade.ResNet32(10, classifier="causal_norm", **dict(CIFAR, mean_momentum=2))
    net18 = lade.ResNet18(10, stem_stride=1, classifier="causal_norm", **CIFAR)
    assert net18.running_stats()["fc.feature_mean"].shape == (512,)


def _batch(rng, n=8, classes=5):
    images = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    return images, (np.arange(n) % classes).astype(np.int64)


def test_running_mean_moves_at_every_committed_step_and_gives_the_tde_logits(rng):
    net = lade.ResNet32(5, seed=3, classifier="causal_norm", **CIFAR)
    opt = lade.SGD(net, lr=0.05)
    mean = net.running_stats()["fc.feature_mean"]  # a view: it follows the model
    expected = np.zeros(128)
    for step in range(3):
        images, labels = _batch(rng)
        lade.train_step(net, opt, images, labels)
        expected = 0.9 * expected + net.features.astype(np.float64).mean(axis=0)  # the step's training features
        np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-6)
    # a step refused for a non-finite loss leaves the mean as it was
    before = mean.copy()
    with pytest.raises(FloatingPointError):
        lade.train_step(net, opt, images, labels, loss=lambda f, y, g: (float("nan"), np.zeros_like(f)))
    assert np.array_equal(mean, before)
    # eval mode: TDE with the running mean, as PyTorch computes it from the same features and weights
    logits = net.forward(images, train=False)
    features = net.features
    ref = torch_causal_norm(t64(features), t64(net.parameters()["fc.weight"]), 2, 16.0, 1 / 32, t64(mean), 1.5)
    assert_close(logits, ref, FWD_TOL, "eval-mode TDE logits")
    assert np.array_equal(logits, lnn.causal_norm_forward(features, net.parameters()["fc.weight"], 2, 16.0, 1 / 32,
                                                          mean=mean, alpha=1.5))
    no_tde = torch_causal_norm(t64(features), t64(net.parameters()["fc.weight"]), 2, 16.0, 1 / 32)
    assert np.abs(logits - no_tde.numpy()).max() > 1e-2  # TDE does change them


def test_the_model_gradient_matches_finite_differences(rng):
    net = lade.ResNet32(5, "classic", seed=2, classifier="causal_norm", **CIFAR)
    images, labels = _batch(rng, n=4)
    logits = net.forward(images, train=True, defer_running_stats=True)
    _, dlogits = losses.softmax_ce(logits, labels)
    net.zero_grad()
    net.backward(dlogits)
    params = net.parameters()
    for name in ("fc.weight", "layer3.4.conv2.weight", "conv1.weight"):
        view = params[name]
        index = np.unravel_index(np.abs(net.gradients()[name]).argmax(), view.shape)  # well above the noise
        saved, eps = float(view[index]), 2e-3  # tau 16 on unit-norm features: the loss curves fast
        f = []
        for sign in (1, -1):
            view[index] = saved + sign * eps
            f.append(losses.softmax_ce(net.forward(images, train=True, defer_running_stats=True), labels)[0])
        view[index] = saved
        numeric = (f[0] - f[1]) / (2 * eps)
        assert net.gradients()[name][index] == pytest.approx(numeric, rel=0.05, abs=2e-3), name


def test_a_short_training_lowers_the_loss(rng):
    net = lade.ResNet32(5, seed=1, classifier="causal_norm", **CIFAR)
    opt = lade.SGD(net, lr=0.05)
    images, labels = _batch(rng, n=16)
    loss = losses.make("causal_norm")
    values = [lade.train_step(net, opt, images, labels, loss) for _ in range(15)]
    assert values[-1] < 0.5 * values[0], values


def test_two_replicas_move_the_mean_as_the_whole_batch(rng):
    """Per replica (no reducer) each replica's features come from its own BN statistics, so the average of
    their means is not the whole batch's (as for BN's running statistics, which average_buffers averages
    alike); with a reducer both replicas hold the whole batch's mean, bit for bit the same."""
    from test_distributed import two_replica_threads
    lade.set_num_threads(1)
    images, _ = _batch(rng, n=6)
    probe = rng.standard_normal((6, 5)).astype(np.float32)
    whole = lade.ResNet32(5, seed=4, classifier="causal_norm", **CIFAR)
    whole.forward(images, train=True)
    halves = [lade.ResNet32(5, seed=4, classifier="causal_norm", **CIFAR) for _ in range(2)]
    for k in (0, 1):
        halves[k].forward(images[3 * k:3 * k + 3], train=True)
    average = (halves[0].running_stats()["fc.feature_mean"] + halves[1].running_stats()["fc.feature_mean"]) / 2
    mean = whole.running_stats()["fc.feature_mean"]
    assert np.abs(average - mean).max() > 1e-4  # the halves' BN statistics differ: so do their features
    synced = [lade.ResNet32(5, seed=4, classifier="causal_norm", **CIFAR) for _ in range(2)]
    two_replica_threads(synced, images, probe)
    np.testing.assert_array_equal(synced[0].buffers, synced[1].buffers)
    np.testing.assert_allclose(synced[0].running_stats()["fc.feature_mean"], mean, rtol=1e-5, atol=1e-6)
    calls, _ = lade.distributed.sync_bn_bytes_per_step(whole, 2)
    assert calls == 3 * 33 + 1


# ------------------------------------------------------------------------------------------- the config

@pytest.mark.parametrize("raw, key, message", [
    ({"model": {"classifier": "cosine"}}, "model.classifier", "must be one of"),
    ({"model": {"classifier": "causal_norm"}}, "model.classifier", "trained with loss.name causal_norm"),
    ({"loss": {"name": "causal_norm"}}, "loss.name", "needs model.classifier causal_norm"),
    ({"model": {"tau": 16.0}}, "model.tau", "not a known key for model.classifier 'linear'"),
    ({"model": {"classifier": "causal_norm", "heads": 0}, "loss": {"name": "causal_norm"}}, "model.heads",
     "must be in"),
    ({"model": {"classifier": "causal_norm", "tau": 0}, "loss": {"name": "causal_norm"}}, "model.tau", "> 0.0"),
    ({"model": {"classifier": "causal_norm", "gamma": -1}, "loss": {"name": "causal_norm"}}, "model.gamma", ">= 0.0"),
    ({"model": {"classifier": "causal_norm", "alpha": "x"}, "loss": {"name": "causal_norm"}}, "model.alpha",
     "must be a number"),
    ({"model": {"classifier": "causal_norm", "mean_momentum": 1.5}, "loss": {"name": "causal_norm"}},
     "model.mean_momentum", "<= 1.0"),
])
def test_bad_classifier_settings_are_rejected_naming_the_key(raw, key, message):
    with pytest.raises(config.ConfigError, match=f"'{key}' .*{message}"):
        config.validate(raw)


def test_the_shipped_configs_and_overrides():
    for imbalance in (100, 50, 10):
        cfg = config.load(f"cifar100_lt_{imbalance}_causal_norm")
        assert cfg["data"]["imbalance"] == imbalance and cfg["loss"] == {"name": "causal_norm"}
        assert {k: cfg["model"][k] for k in CIFAR} == CIFAR and cfg["model"]["classifier"] == "causal_norm"
        net = training.build_model(cfg, 100)
        assert net.causal_norm == CIFAR and net.variant == "lade"
    # the defaults of the options are config.py's alone: a config naming only the classifier gets them
    cfg = config.validate({"model": {"classifier": "causal_norm"}, "loss": {"name": "causal_norm"}})
    assert {k: cfg["model"][k] for k in CIFAR} == CIFAR
    # switching takes two overrides, checked together; switching back drops the options
    ce = config.load("cifar100_lt_50_ce")
    cn, changes = config.apply_overrides(ce, ["model.classifier=causal_norm", "loss.name=causal_norm", "model.alpha=2"])
    assert cn["model"]["alpha"] == 2.0 and [c[0] for c in changes] == ["model.classifier", "loss.name", "model.alpha"]
    back, _ = config.apply_overrides(cn, ["model.classifier=linear", "loss.name=softmax_ce"])
    assert back == ce
    assert losses.test_time_form("causal_norm") == "add_target"


# ------------------------------------------------------------------------- a run: resume, report, zoo

CAUSAL = ["model.classifier=causal_norm", "loss.name=causal_norm"]


def _train(tiny_root, out, *extra):  # noqa: F811
    return ["train", "--config", "cifar10_lt_10_ce", "--out", out, "--data-root", tiny_root, "--quiet", *TINY,
            *CAUSAL, *extra]


def _state(run_dir):
    with np.load(run_dir / runs.CHECKPOINT) as ck:
        return {k: ck[k].copy() for k in ("params", "buffers", "velocity", "steps", "epoch")}


@pytest.fixture(scope="module")
def causal_run(tiny_root, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("causal") / "run"
    assert main([str(a) for a in _train(tiny_root, out, "optim.epochs=2")]) == 0
    return out


def test_a_stopped_run_resumes_bit_for_bit(tiny_root, causal_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    code, _, err = run_main(_train(tiny_root, out, "optim.epochs=2", "--stop-after", 1), capsys)
    assert code == 0 and "continue with --resume" in err
    code, _, err = run_main(["train", "--out", out, "--resume", "--data-root", tiny_root, "--quiet"], capsys)
    assert code == 0 and "resuming" in err
    a, b = _state(out), _state(causal_run)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert np.array_equal(np.load(out / "test_logits.npy"), np.load(causal_run / "test_logits.npy"))
    cfg = config.load(causal_run / "config.yaml")
    net = training.build_model(cfg, 10)
    runs.load_checkpoint(causal_run, net, lade.SGD(net, 0.1), cfg)
    assert net.running_stats()["fc.feature_mean"].any()  # the checkpoint holds the trained mean


def test_evaluate_reports_causal_norm_and_pc_causal_norm(causal_run):
    result = evaluation.evaluate_run(causal_run, estimated_prior=False)
    labels = [m["label"] for m in result["methods"]]
    assert labels[:2] == ["PC Causal Norm", "Causal Norm"] and result["test_time_form"] == "add_target"
    assert "PC Causal Norm" in (causal_run / "report.md").read_text()
    with pytest.raises(runs.RunError, match="decoupled second stage starts from a linear classifier"):
        decoupled_stage.save_features(causal_run)


def test_the_zoo_entry_keeps_the_mean_and_the_classifier(tiny_root, causal_run, tmp_path):  # noqa: F811
    entry = zoo_entries.add_run(causal_run, tmp_path / "zoo", data_root=tiny_root)
    assert entry["model"]["classifier"] == "causal_norm" and entry["loss"] == "causal_norm"
    loaded = zoo.load(entry["name"], tmp_path / "zoo")
    with np.load(tmp_path / "zoo" / entry["name"] / zoo.WEIGHTS) as w:
        assert "fc.feature_mean" in w.files and "fc.bias" not in w.files
    with np.load(causal_run / runs.CHECKPOINT) as ck:
        assert np.array_equal(loaded.model.buffers, ck["buffers"])
    assert loaded.model.causal_norm == CIFAR
    # `lade evaluate zoo:NAME` recomputes the TDE logits from the weights and the stored mean
    run_dir, _ = zoo_entries.materialize(entry["name"], tmp_path / "again", data_root=tiny_root,
                                         zoo_root=tmp_path / "zoo")
    assert np.array_equal(np.load(run_dir / "test_logits.npy"), np.load(causal_run / "test_logits.npy"))


# ------------------------------------------------------------------------------------------- MPI

def test_two_mpi_ranks_with_sync_bn_hold_the_whole_batches_mean(tmp_path):
    """Synchronised BN over 2 ranks: the running feature mean of both ranks is that of one process
    training the global batch (the reducer sums the features too), with no epoch-end averaging. One
    step: tau 16 on unit-norm features and a batch of 8 noise images amplify float32 rounding from step
    to step (the gradients agree to 1e-6 at the first step, 1e-3 at the second, 5e-2 at the third)."""
    from test_distributed import WORKER, mpirun, worker
    lade.set_num_threads(1)
    out = tmp_path / "sync.npz"
    res = mpirun([sys.executable, WORKER, "sync_steps", out, "causal_norm", 1])
    assert res.returncode == 0, res.stderr[-3000:]
    got = np.load(out)
    images, labels, net, opt, loss = worker.problem("causal_norm")
    order = worker.base_sampler().epoch_indices(0)
    idx = order[:worker.GLOBAL_BATCH]
    lade.train_step(net, opt, np.ascontiguousarray(images[idx]), np.ascontiguousarray(labels[idx]), loss)
    np.testing.assert_allclose(got["params"], net.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got["buffers"][0], got["buffers"][1])
    mean = net.running_stats()["fc.feature_mean"]
    assert mean.any()
    np.testing.assert_allclose(got["buffers"][0], net.buffers, rtol=1e-4, atol=1e-6)


def test_lade_train_over_mpi_averages_the_mean_into_the_checkpoint(tiny_root, tmp_path):  # noqa: F811
    from test_distributed import mpirun
    out = tmp_path / "mpi"
    res = mpirun([sys.executable, "-m", "lade", "train", "--config", "cifar10_lt_10_ce", "--out", out, "--data-root",
                  tiny_root, "--quiet", "--no-report", *TINY, *CAUSAL, "optim.epochs=1", "run.distributed=mpi"])
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = config.load(out / "config.yaml")
    net = training.build_model(cfg, 10)
    runs.load_checkpoint(out, net, lade.SGD(net, 0.1), cfg, ranks=2)
    assert net.running_stats()["fc.feature_mean"].any()
