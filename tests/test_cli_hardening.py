"""Hostile input to the application (issue 11), one test per class of failure: nothing is ever
lost (overwrite safety, validation before the disk is touched), nothing silently wrong (concurrent
writers, bit flips, torn JSONL, missing checkpoint) and every error is one line naming the file,
line or key, with exit status 2 (traceback only with --debug). Tiny runs on the 10-class data set
of test_cli.py take a few seconds each."""
import errno
import fcntl
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid

import numpy as np
import pytest
import yaml

import lade
from lade import data
from lade.app import datasets, runs
from test_cli import ENV, TINY, run_main, tiny_root, train_args  # noqa: F401  (tiny_root is a fixture)


def _one_error_line(err):
    informational = ("lade: override", "lade: data root", "lade: resuming")
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(informational)]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def stopped_run(tiny_root, tmp_path_factory):  # noqa: F811
    """A run folder stopped after epoch 1 of 3 (resumable): copy it before changing it."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert experiment_main(train_args(tiny_root, out, "optim.epochs=3", "--stop-after", "1", "--no-report")) == 0
    return out


def experiment_main(args):
    from lade.app.cli import main
    return main([str(a) for a in args])


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def _epochs(run):
    return [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]


# ------------------------------------------------------------------------- data loss

def test_overwrite_never_deletes_a_folder_lade_did_not_make(tiny_root, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "thesis"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "main.c").write_text("int main;")
    (folder / "thesis.tex").write_text("\\begin{document}")
    (folder / "config.yaml").write_text("title: my thesis\n")  # not a lade config, and no marker
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    code, _, err = run_main(train_args(tiny_root, folder, "optim.epochs=1", "--overwrite"), capsys)
    assert code == 2 and ".lade-run" in _one_error_line(err)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_overwrite_deletes_only_lades_own_files(tiny_root, stopped_run, tmp_path, capsys):  # noqa: F811
    run = _copy(stopped_run, tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=1", "--overwrite", "--no-report"), capsys)
    assert code == 0, err
    assert (run / "notes.txt").read_text() == "mine" and "notes.txt" in err
    assert _epochs(run) == [1] and runs.run_status(run) == "finished"


@pytest.mark.parametrize("bad", ["run.threads=300", "run.num_workers=1000", "model.seed=-1", "optim.epochs=10000000"])
def test_an_invalid_value_touches_nothing_on_disk(tiny_root, stopped_run, tmp_path, capsys, bad):  # noqa: F811
    run = _copy(stopped_run, tmp_path / "run")
    snapshot = {p.name: p.read_bytes() for p in run.iterdir()}
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", bad, "--overwrite"), capsys)
    assert code == 2 and bad.split("=")[0] in _one_error_line(err)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == snapshot
    fresh = tmp_path / "fresh" / "run"
    code, _, _ = run_main(train_args(tiny_root, fresh, bad), capsys)
    assert code == 2 and not (tmp_path / "fresh").exists()


def test_a_run_name_cannot_leave_the_runs_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["train", "--config", "cifar10_lt_10_lade", "name=../../x"], capsys)
    assert code == 2 and "'name'" in _one_error_line(err)
    assert not any(tmp_path.parent.parent.glob("x"))


# -------------------------------------------------------------- concurrent writers

def test_a_locked_run_folder_is_refused(tiny_root, stopped_run, tmp_path, capsys):  # noqa: F811
    run = _copy(stopped_run, tmp_path / "run")
    fd = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `lade train` holds it
        code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume"), capsys)
        assert code == 2 and "in use by another lade process" in _one_error_line(err)
    finally:
        os.close(fd)
    assert _epochs(run) == [1]
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume", "--no-report"), capsys)
    assert code == 0, err  # the lock died with its holder
    assert _epochs(run) == [1, 2, 3]


def test_two_processes_training_into_one_folder_cannot_both_run(tiny_root, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lade"] + [str(a) for a in train_args(tiny_root, run, "optim.epochs=3",
                                                                       "--no-report")]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "in use by another lade process" in loser or "already holds a run" in loser
    assert _epochs(run) == [1, 2, 3]


def test_a_sweep_cannot_give_two_runs_one_folder(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": "cifar10_lt_10_lade", "out": str(tmp_path / "sw"),
                                    "grid": {"optim.lr": [0.1, 0.10]}}).replace("0.1\n", "0.10\n", 1))
    code, _, err = run_main(["sweep", str(grid), "--dry-run"], capsys)
    assert code == 2 and "same folder" in _one_error_line(err)
    assert not (tmp_path / "sw").exists()


def test_a_sweep_with_a_failed_run_exits_non_zero(tiny_root, tmp_path, capsys):  # noqa: F811
    grid = tmp_path / "grid.yaml"
    fixed = dict(item.split("=") for item in TINY)
    fixed = {k: yaml.safe_load(v) for k, v in fixed.items()}
    fixed["optim.epochs"] = 1
    # batch 1000 passes the config check but exceeds the 81 training images: that run fails
    grid.write_text(yaml.safe_dump({"base": "cifar10_lt_10_lade", "out": str(tmp_path / "sw"), "fixed": fixed,
                                    "grid": {"optim.batch_size": [1000]}}))
    code, _, err = run_main(["sweep", str(grid), "--data-root", str(tiny_root)], capsys)
    assert code == 1 and "failed" in err


# ---------------------------------------------------------------- resume and its files

def test_a_torn_last_metrics_line_is_dropped_on_resume(tiny_root, stopped_run, tmp_path, capsys):  # noqa: F811
    run = _copy(stopped_run, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lr": 0.0')  # killed mid-write: no closing brace, no newline
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume", "--no-report"), capsys)
    assert code == 0, err
    assert "line 2 is incomplete" in err and "dropped" in err
    assert _epochs(run) == [1, 2, 3]


def test_a_damaged_metrics_line_in_the_middle_is_named(tiny_root, stopped_run, tmp_path, capsys):  # noqa: F811
    run = _copy(stopped_run, tmp_path / "run")
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "lo\n' + text)
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume"), capsys)
    line = _one_error_line(err)
    assert code == 2 and "metrics.jsonl' line 1" in line


def test_resume_without_a_checkpoint_refuses_and_says_how_to_restart(tiny_root, stopped_run, tmp_path,  # noqa: F811
                                                                       capsys):
    run = _copy(stopped_run, tmp_path / "run")
    (run / "checkpoint.npz").unlink()
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume"), capsys)
    line = _one_error_line(err)
    assert code == 2 and "checkpoint.npz" in line and "--overwrite" in line
    assert _epochs(run) == [1]  # the logged metrics are kept


def test_resume_accepts_changes_to_the_resume_safe_keys(tiny_root, stopped_run, tmp_path, capsys):  # noqa: F811
    run = _copy(stopped_run, tmp_path / "run")
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume", "run.num_workers=2",
                                       "run.threads=2", "run.eval_every=1", "run.eval_batch_size=7", "--no-report"),
                            capsys)
    assert code == 0, err
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and "test_top1" in rows[1] and rows[1]["eval_seconds"] > 0
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    assert [s["threads"] for s in sessions] == [1, 2]  # each session's thread count is on record
    for s in sessions:  # and what else decides the bits: the source, the CPU and the kernel variant
        assert s["commit"] == runs.source_commit() and s["kernel_variant"] == lade.cpu_info()["variant"]
        assert s["cpu"] == lade.cpu_info()["model"] and s["lade_version"] == lade.__version__
    code, _, err = run_main(train_args(tiny_root, tmp_path / "run", "optim.epochs=3", "--resume", "optim.lr=0.5"),
                            capsys)
    assert code == 2 and "optim.lr" in err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "nan"])
def test_a_damaged_checkpoint_is_one_line_naming_it(tiny_root, stopped_run, tmp_path, capsys, damage):  # noqa: F811
    run = _copy(stopped_run, tmp_path / "run")
    ck = run / "checkpoint.npz"
    if damage == "garbage":
        ck.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        ck.write_bytes(ck.read_bytes()[:1000])
    else:
        with np.load(ck) as z:
            arrays = dict(z)
        arrays["params"][3] = np.nan
        np.savez(ck, **arrays)
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume"), capsys)
    assert code == 2 and "checkpoint.npz" in _one_error_line(err)
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume", "--debug"), capsys)
    assert code == 2 and "Traceback" in err


@pytest.fixture(scope="module")
def finished_run(tiny_root, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("finished") / "run"
    assert experiment_main(train_args(tiny_root, out, "optim.epochs=1", "--no-report")) == 0
    return out


@pytest.mark.parametrize("name, damage", [("test_logits.npy", b"\x93NUMPY garbage"), ("test_labels.npy", b""),
                                          ("test_labels.npy", "float"), ("test_logits.npy", "short"),
                                          ("final.json", b"{\"finished\": ")])
def test_evaluate_names_a_damaged_file(finished_run, tmp_path, capsys, name, damage):
    run = _copy(finished_run, tmp_path / "run")
    if damage == "float":
        np.save(run / name, np.zeros(100, np.float32))
    elif damage == "short":
        np.save(run / name, np.zeros((3, 10), np.float32))
    else:
        (run / name).write_bytes(damage)
    code, _, err = run_main(["evaluate", run], capsys)
    assert code == 2 and name.split(".")[0] in _one_error_line(err)


def test_stop_after_must_be_positive(tiny_root, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as e:
        experiment_main(train_args(tiny_root, tmp_path / "run", "--stop-after", "-1"))
    assert e.value.code == 2 and "--stop-after" in capsys.readouterr().err


def test_numbers_without_a_dot_are_numbers(tiny_root, tmp_path, capsys):  # noqa: F811
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: wd\noptim:\n  weight_decay: 5e-4\n  lr: 1E-1\n")
    from lade.app import config
    cfg = config.load(cfg_file)
    assert cfg["optim"]["weight_decay"] == 5e-4 and cfg["optim"]["lr"] == 0.1
    new, _ = config.apply_overrides(cfg, ["optim.weight_decay=2e-4"])
    assert new["optim"]["weight_decay"] == 2e-4


# ------------------------------------------------------------------------ full disk

def _full_disk_at(monkeypatch, fails):
    """ENOSPC from os.fsync of every open file whose path `fails(path)` accepts: a full disk where no tmpfs
    can be mounted. Returns the real os.fsync."""
    real_fsync = os.fsync

    def full_disk(fd):
        if fails(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", full_disk)
    return real_fsync


def _mount_tmpfs(path, size):
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_a_full_disk_is_one_line_and_loses_nothing(tiny_root, stopped_run, tmp_path, capsys, monkeypatch):  # noqa: F811
    """On a tmpfs with room for the run plus half a checkpoint when mounting is permitted, else with
    ENOSPC injected into the checkpoint write."""
    disk = tmp_path / "disk"
    ck_size = (stopped_run / "checkpoint.npz").stat().st_size
    used = sum(p.stat().st_size + 4096 for p in stopped_run.iterdir())
    mounted = _mount_tmpfs(disk, used + ck_size // 2)
    try:
        run = _copy(stopped_run, disk / "run")
        if not mounted:
            _full_disk_at(monkeypatch, lambda path: path.endswith("checkpoint.npz.tmp"))
        before = (run / "checkpoint.npz").read_bytes()
        code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=3", "--resume", "--no-report"), capsys)
        line = _one_error_line(err)
        assert code == 2 and "No space left on device" in line and str(run) in line, (mounted, line)
        assert (run / "checkpoint.npz").read_bytes() == before  # the previous checkpoint is intact
        assert not list(run.glob("*.tmp"))
        assert _epochs(run) in ([1], [1, 2])  # a row past the checkpoint is cut on resume
        if mounted:
            subprocess.run(["umount", str(disk)], capture_output=True)
            mounted = False
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], capture_output=True)


# ------------------------------------------------------------- a step that fails

@pytest.mark.parametrize("broken", ["loss", "gradient"])
def test_a_non_finite_step_mid_run_changes_nothing(tiny_root, tmp_path, capsys, monkeypatch, broken):  # noqa: F811
    """The CLI's loop is lade.train_step: a non-finite loss (refused before backward) or a non-finite
    gradient (refused by the optimiser) in the middle of epoch 2 leaves the weights, the optimiser
    state and the BN running statistics as they were before that step, and the epoch-1 checkpoint
    stays on disk."""
    from lade import nn
    from lade.app import training
    made = {}

    class RecordedNet(nn.ResNet32):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made["net"] = self

    class RecordedSGD(nn.SGD):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made["opt"] = self

    real_build_loss = training.build_loss
    fail_at = 7  # 78 images in batches of 16: 4 steps per epoch, so this is the 3rd step of epoch 2

    def build_loss(cfg, counts):
        loss, calls = real_build_loss(cfg, counts), [0]

        def failing(logits, labels, grad=None):
            calls[0] += 1
            value, grad = loss(logits, labels, grad)
            if calls[0] == fail_at:  # the state before this step
                net, opt = made["net"], made["opt"]
                made["before"] = (net.params.copy(), net.buffers.copy(), opt.velocity.copy(), opt.steps, opt.lr)
                if broken == "loss":
                    value = float("nan")
                else:
                    grad[0, 0] = np.inf  # a finite loss, a non-finite gradient: SGD refuses the step
            return value, grad
        return failing

    monkeypatch.setattr(nn, "ResNet32", RecordedNet)
    monkeypatch.setattr(nn, "SGD", RecordedSGD)
    monkeypatch.setattr(training, "build_loss", build_loss)
    run = tmp_path / "run"
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=2", "--no-report"), capsys)
    line = _one_error_line(err)
    assert code == 2 and line.startswith("lade.train_step: the loss is nan" if broken == "loss" else "lade.SGD.step: gradient"), line
    net, opt = made["net"], made["opt"]
    params, buffers, velocity, steps, lr = made["before"]
    assert steps == fail_at - 1 and opt.steps == steps and opt.lr == lr
    np.testing.assert_array_equal(net.params, params)
    np.testing.assert_array_equal(net.buffers, buffers)
    np.testing.assert_array_equal(opt.velocity, velocity)
    assert _epochs(run) == [1]
    with np.load(run / runs.CHECKPOINT) as ck:
        assert int(ck["epoch"]) == 1 and int(ck["steps"]) == 4


# --------------------------------------------------------------------- archives

def _cifar10_tar_gz(tmp_path, tiny_root):  # noqa: F811
    """The tiny CIFAR-10 binary folder as a .tar.gz archive."""
    path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tiny_root / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return path


def test_a_flipped_bit_in_a_tar_gz_raises_naming_it(tiny_root, tmp_path):  # noqa: F811
    path = _cifar10_tar_gz(tmp_path, tiny_root)
    good = path.read_bytes()
    images, _ = data.load_cifar(path, "test")
    rng = np.random.default_rng(0)
    for trial in range(12):  # bits anywhere in the deflate stream or the gzip trailer
        blob = bytearray(good)
        bit = int(rng.integers(8 * 20, 8 * len(blob)))
        blob[bit // 8] ^= 1 << (bit % 8)
        bad = tmp_path / f"flip{trial}.tar.gz"
        bad.write_bytes(bytes(blob))
        with pytest.raises(data.DecodeError, match=f"flip{trial}.tar.gz"):
            data.load_cifar(bad, "test")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good[:len(good) // 2])
    with pytest.raises(data.DecodeError, match="cut.tar.gz.*truncated"):
        data.load_cifar(cut, "train")
    assert images.shape == (100, 3, 32, 32)


def test_a_damaged_tar_header_raises_naming_it(tiny_root, tmp_path):  # noqa: F811
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(tiny_root / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    blob = bytearray(raw.getvalue())
    second = 512 + 512  # the folder's header, then the first file's header
    blob[second + 10] ^= 0x01  # inside the name field: the header checksum no longer matches
    path = tmp_path / "damaged.tar.gz"
    path.write_bytes(gzip.compress(bytes(blob)))  # a valid gzip of a damaged tar
    with pytest.raises(data.DecodeError, match="damaged.tar.gz.*checksum"):
        data.load_cifar(path, "train")


def _jpeg_bytes(value=128):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _jpeg_tar(tmp_path, train_txt, members, test_txt=b"test/a.jpg 1\n"):
    path = tmp_path / f"cifar10-jpeg-{uuid.uuid4().hex[:6]}.tar.gz"
    lists = [("cifar10/train.txt", train_txt)] + ([("cifar10/test.txt", test_txt)] if test_txt is not None else [])
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in lists + members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_the_jpeg_archive_reader_names_the_list_line_and_member(tmp_path):
    good = [("cifar10/train/a.jpg", _jpeg_bytes()), ("cifar10/test/a.jpg", _jpeg_bytes())]
    splits = datasets.read_cifar10_jpeg(_jpeg_tar(tmp_path, b"\xef\xbb\xbftrain/a.jpg 3\rtrain/a.jpg 4\r", good))
    assert splits["train"][1].tolist() == [3, 4]  # BOM skipped, CR-only line ends
    with pytest.raises(data.DecodeError, match=r"\.tar\.gz:cifar10/train.txt line 2: label 'x'"):
        datasets.read_cifar10_jpeg(_jpeg_tar(tmp_path, b"train/a.jpg 3\ntrain/a.jpg x\n", good))
    with pytest.raises(ValueError, match=r"train.txt line 1: label 12 .* outside \[0, 10\)"):
        datasets.read_cifar10_jpeg(_jpeg_tar(tmp_path, b"train/a.jpg 12\n", good))
    with pytest.raises(OSError, match=r"train.txt line 2: cannot open '.*\.tar\.gz:cifar10/train/b.jpg'"):
        datasets.read_cifar10_jpeg(_jpeg_tar(tmp_path, b"train/a.jpg 1\ntrain/b.jpg 1\n", good))
    broken = [("cifar10/train/a.jpg", _jpeg_bytes()[:100])] + good[1:]
    with pytest.raises(data.DecodeError, match=r"cifar10/train.txt line 1: '.*\.tar\.gz:cifar10/train/a.jpg': trunc"):
        datasets.read_cifar10_jpeg(_jpeg_tar(tmp_path, b"train/a.jpg 1\n", broken))
    with pytest.raises(FileNotFoundError, match=r"has no test.txt list file"):
        datasets.read_cifar10_jpeg(_jpeg_tar(tmp_path, b"train/a.jpg 1\n", good, test_txt=None))


def test_jpeg_paths_with_spaces_go_through_the_list_file_and_the_loader(tmp_path):
    """The list file's label is its last field: a folder and file names with spaces work, in a folder
    and in an archive, and every pixel comes through the loader unchanged (same as read_jpeg)."""
    from PIL import Image
    folder = tmp_path / "cifar10 jpeg"
    rng = np.random.default_rng(3)
    lines = []
    for split, names in (("train", ["my cat.jpg", "a  dog .jpg"]), ("test", ["the end.jpg"])):
        (folder / split / "class one").mkdir(parents=True)
        for k, name in enumerate(names):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / split / "class one" / name)
        (folder / f"{split}.txt").write_text("".join(f"{split}/class one/{n} {k + 5}\n" for k, n in enumerate(names)))
        lines.append(names)
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar10 jpeg")
    for source in (folder, archive):
        splits = datasets.read_cifar10_jpeg(source)
        assert splits["train"][1].tolist() == [5, 6] and splits["test"][1].tolist() == [5]
        for split, names in (("train", lines[0]), ("test", lines[1])):
            expected = np.stack([data.read_jpeg(folder / split / "class one" / n).transpose(2, 0, 1) for n in names])
            assert splits[split][0].dtype == np.uint8 and np.array_equal(splits[split][0], expected)


def test_corrupt_data_is_one_line_naming_the_archive(tiny_root, tmp_path, capsys):  # noqa: F811
    archive = _cifar10_tar_gz(tmp_path, tiny_root)
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0x10
    root = tmp_path / "corrupt_root"
    root.mkdir()
    (root / "cifar-10-binary.tar.gz").write_bytes(bytes(blob))
    out = tmp_path / "run"
    code, _, err = run_main(train_args(root, out, "optim.epochs=1"), capsys)
    line = _one_error_line(err)
    assert code == 2 and "cifar-10-binary.tar.gz" in line and "damaged or truncated gzip" in line
    assert not out.exists()  # nothing was created


# ------------------------------------------------------------- issue 28: silent wrong results

@pytest.mark.parametrize("text, key, lines", [
    ("name: dup\noptim:\n  lr: 0.1\nrun:\n  seed: 1\noptim:\n  epochs: 3\n", "'optim'", "lines 2 and 6"),
    ("name: dup\noptim:\n  lr: 0.1\n  epochs: 3\n  lr: 0.5\n", "'lr'", "lines 3 and 5"),
    ("name: dup\nrun: {seed: 1, seed: 2}\n", "'seed'", "lines 2 and 2"),
])
def test_a_config_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path, capsys, text, key, lines):
    cfg_file = tmp_path / "dup.yaml"
    cfg_file.write_text(text)
    code, _, err = run_main(["train", "--config", cfg_file, "--out", tmp_path / "run", "--data-root", tmp_path], capsys)
    line = _one_error_line(err)
    assert code == 2 and "dup.yaml" in line and f"key {key} appears twice ({lines})" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("grid, expected", [
    ("  optim.lr: [1, 1.0]\n", "same config twice ({'optim.lr': 1} and {'optim.lr': 1.0})"),
    ("  optim.lr: [1, 2]\n  optim.lr: [3]\n", "key 'optim.lr' appears twice (lines 4 and 5)"),
])
def test_a_sweep_grid_cannot_list_one_config_twice(tmp_path, capsys, grid, expected):
    path = tmp_path / "grid.yaml"
    path.write_text(f"base: cifar10_lt_10_lade\nout: {tmp_path / 'sw'}\ngrid:\n{grid}")
    code, _, err = run_main(["sweep", path, "--dry-run"], capsys)
    line = _one_error_line(err)
    assert code == 2 and line.startswith("lade sweep") and expected in line, line
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_a_binary_sweep_or_config_file_is_named(tmp_path, capsys, command):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"base: \x8a\xff\x00\x01")
    args = ["sweep", path, "--dry-run"] if command == "sweep" else ["train", "--config", path, "--out", tmp_path / "r",
                                                                     "--data-root", tmp_path]
    code, _, err = run_main(args, capsys)
    line = _one_error_line(err)
    assert code == 2 and "binary.yaml' is not a UTF-8 text file (byte 6 is 0x8a)" in line, line


def _logit_files(folder, logits, labels, counts):
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in (("logits", logits), ("labels", labels), ("counts", counts)):
        np.save(folder / f"{name}.npy", a)
    return ["evaluate", "--logits", folder / "logits.npy", "--labels", folder / "labels.npy", "--train-counts",
            folder / "counts.npy"]


def test_evaluate_logits_sums_huge_train_counts_without_wrapping(tmp_path, capsys):
    rng = np.random.default_rng(0)
    args = _logit_files(tmp_path, rng.normal(size=(40, 4)).astype(np.float32), np.arange(40) % 4,
                        np.full(4, 2 ** 62, np.int64))
    code, _, err = run_main(args + ["--out", tmp_path / "out", "--estimated-prior", "none"], capsys)
    assert code == 0, err
    setup = json.loads((tmp_path / "out" / "results.json").read_text())["setup"]
    assert setup["train_images"] == 2 ** 64  # an int64 sum wraps to 0


def test_an_infinite_zero_count_floor_is_named_as_the_option(tmp_path, capsys):
    args = _logit_files(tmp_path, np.zeros((8, 4), np.float32), np.arange(8) % 4, np.array([5, 0, 3, 2]))
    code, _, err = run_main(args + ["--out", tmp_path / "out", "--zero-count-floor", "inf"], capsys)
    line = _one_error_line(err)
    assert code == 2 and line.startswith("lade.evaluate: zero_count_floor (--zero-count-floor)") and "inf" in line


def test_evaluate_of_100000_classes_needs_no_class_by_class_matrix(tmp_path, capsys):
    """The per-class accuracy of 100,000 classes came from a 100,000 x 100,000 confusion matrix (80 GB,
    'internal error'); it needs only the (4, 100000) logits now."""
    classes = 100_000
    logits = np.random.default_rng(0).normal(size=(4, classes)).astype(np.float32)
    logits[np.arange(4), [0, 1, 2, 5]] = 10  # right, right, right, wrong
    args = _logit_files(tmp_path, logits, np.arange(4), np.arange(1, classes + 1))
    code, _, err = run_main(args + ["--out", tmp_path / "out", "--estimated-prior", "none"], capsys)
    assert code == 0, err
    per_class = json.loads((tmp_path / "out" / "results.json").read_text())["methods"][1]["per_class"]
    assert len(per_class) == classes and per_class[:4] == [1.0, 1.0, 1.0, 0.0]
    assert all(v != v for v in per_class[4:])  # NaN: no test image


def test_a_npy_header_claiming_10_14_floats_is_refused_before_loading(tmp_path, capsys):
    from numpy.lib import format as npy_format
    args = _logit_files(tmp_path, np.zeros((8, 4), np.float32), np.arange(8) % 4, np.full(4, 5))
    with open(tmp_path / "logits.npy", "wb") as f:  # 400 TB claimed, 64 bytes held: nothing may be allocated
        npy_format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 7, 10 ** 7)})
        f.write(bytes(64))
    code, _, err = run_main(args + ["--out", tmp_path / "out"], capsys)
    line = _one_error_line(err)
    assert code == 2 and "logits file" in line and "logits.npy" in line and "(10000000, 10000000)" in line, line
    assert "the file holds 64" in line


def test_an_npz_that_unpacks_past_memory_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    """A 4 MB array that compresses to a few KB stands in for a 4 GB zip bomb: the limit is set to 1 MB, so
    the test needs no memory; the member's size comes from the zip directory."""
    args = _logit_files(tmp_path, np.zeros((8, 4), np.float32), np.arange(8) % 4, np.full(4, 5))
    np.savez_compressed(tmp_path / "logits.npz", logits=np.zeros((1024, 1024), np.float32))
    assert (tmp_path / "logits.npz").stat().st_size < 100_000
    args[2] = tmp_path / "logits.npz"
    loaded = []
    monkeypatch.setattr(runs, "memory_bytes", lambda: 1 << 20, raising=False)
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: loaded.append(key), raising=True)
    code, _, err = run_main(args + ["--out", tmp_path / "out"], capsys)
    line = _one_error_line(err)
    assert code == 2 and "logits.npz" in line and "4,194,304 bytes" in line and "1,048,576" in line, line
    assert not loaded


def test_a_full_disk_in_evaluate_names_the_file_and_leaves_no_tmp(finished_run, tmp_path, capsys,  # noqa: F811
                                                                   monkeypatch):
    """On a 16 KB tmpfs when mounting is permitted, else with ENOSPC injected into every write's fsync."""
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "16k")
    try:
        if not mounted:
            _full_disk_at(monkeypatch, lambda path: path.endswith(".tmp"))
        args = ["evaluate", "--logits", finished_run / "test_logits.npy", "--labels", finished_run / "test_labels.npy",
                "--train-counts", finished_run / "train_counts.npy", "--out", disk / "out", "--estimated-prior", "none"]
        code, _, err = run_main(args, capsys)
        line = _one_error_line(err)
        assert code == 2 and "No space left on device" in line and str(disk / "out") in line, (mounted, line)
        assert not list((disk / "out").glob("*.tmp"))
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], capture_output=True)


def test_features_names_a_garbage_test_logits_file_before_the_slow_part(finished_run, tmp_path, capsys):  # noqa: F811
    run = _copy(finished_run, tmp_path / "run")
    (run / "test_logits.npy").write_bytes(b"\x93NUMPY garbage")
    code, _, err = run_main(["features", run], capsys)
    line = _one_error_line(err)
    assert code == 2 and "test_logits.npy" in line, line


# ------------------------------------------------------------- issue 28: runs that can be resumed

def test_a_full_disk_at_the_first_epochs_checkpoint_leaves_a_resumable_run(tiny_root, tmp_path, capsys,  # noqa: F811
                                                                             monkeypatch):
    """ENOSPC while writing the checkpoint of epoch 1 (a kill -9 there leaves the same folder: the metrics row of
    epoch 1 and no checkpoint of it). --resume redoes epoch 1 and ends with the weights of an uninterrupted run."""
    reference = tmp_path / "reference"
    assert run_main(train_args(tiny_root, reference, "optim.epochs=2", "--no-report"), capsys)[0] == 0
    run = tmp_path / "run"
    real_fsync = _full_disk_at(monkeypatch, lambda path: path.endswith("checkpoint.npz.tmp") and (
        run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text())
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=2", "--no-report"), capsys)
    assert code == 2 and "No space left on device" in _one_error_line(err)
    assert _epochs(run) == [1]
    monkeypatch.setattr(os, "fsync", real_fsync)
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=2", "--resume", "--no-report"), capsys)
    assert code == 0, err
    assert _epochs(run) == [1, 2]
    with np.load(run / runs.CHECKPOINT) as a, np.load(reference / runs.CHECKPOINT) as b:
        for key in ("params", "buffers", "velocity", "steps", "epoch"):
            assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_a_kill_while_writing_the_marker_leaves_a_usable_folder(tiny_root, tmp_path, capsys, flag):  # noqa: F811
    run = tmp_path / "run"
    run.mkdir()
    (run / (runs.RUN_MARKER + ".tmp")).write_bytes(b"a lade run fol")  # killed mid-write: only the .tmp exists
    code, _, err = run_main(train_args(tiny_root, run, "optim.epochs=1", flag, "--no-report"), capsys)
    assert code == 0, err
    assert runs.run_status(run) == "finished" and (run / runs.RUN_MARKER).is_file()
    assert not list(run.glob("*.tmp"))


# ------------------------------------------------------------- issue 28: output folders

def _users_folder(path):
    path.mkdir()
    (path / "report.md").write_text("my own report")
    (path / "results.json").write_text("{\"mine\": 1}")
    return {p.name: p.read_bytes() for p in path.iterdir()}


@pytest.mark.parametrize("command", ["evaluate --logits", "evaluate RUN --out", "decoupled", "compare"])
def test_an_output_folder_lade_did_not_make_is_refused_and_one_it_made_is_reused(finished_run, tmp_path,  # noqa: F811
                                                                                 capsys, command):
    run = _copy(finished_run, tmp_path / "run")

    def args(out):
        if command == "evaluate --logits":
            return ["evaluate", "--logits", run / "test_logits.npy", "--labels", run / "test_labels.npy",
                    "--train-counts", run / "train_counts.npy", "--estimated-prior", "none", "--out", out]
        if command == "evaluate RUN --out":
            return ["evaluate", run, "--out", out]
        if command == "decoupled":
            return ["decoupled", run, "--out", out, "--epochs", 1]
        return ["compare", "--quick", "--out", out, "--data-root", tmp_path / "nowhere", "--quiet"]
    mine = tmp_path / "mine"
    before = _users_folder(mine)
    (tmp_path / "nowhere").mkdir()
    code, _, err = run_main(args(mine), capsys)
    line = _one_error_line(err)
    assert code == 2 and f"output folder '{mine}' is not empty" in line and runs.OUTPUT_MARKER in line, line
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    if command.startswith("evaluate"):  # a folder lade made is reused: the command runs twice
        for _ in range(2):
            code, _, err = run_main(args(tmp_path / "ours"), capsys)
            assert code == 0, err
        assert (tmp_path / "ours" / runs.OUTPUT_MARKER).is_file()


def test_features_refuses_to_replace_a_file_it_did_not_write(finished_run, tmp_path, capsys):  # noqa: F811
    run = _copy(finished_run, tmp_path / "run")
    mine = tmp_path / "mine.npz"
    np.savez(mine, weights=np.arange(3))
    code, _, err = run_main(["features", run, "--out", mine], capsys)
    line = _one_error_line(err)
    assert code == 2 and f"--out '{mine}' exists and is not a features file" in line, line
    with np.load(mine) as z:
        assert z.files == ["weights"]
    ours = tmp_path / "features.npz"
    for _ in range(2):  # its own file is replaced
        code, _, err = run_main(["features", run, "--out", ours], capsys)
        assert code == 0, err


# ------------------------------------------------------------- issue 28: ray sweeps

def _ray_grid(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": "cifar10_lt_10_lade", "out": str(tmp_path / "sw"),
                                    "fixed": {"optim.epochs": 1}, "grid": {"optim.lr": [0.005]}}))
    return grid


def test_a_ray_address_nothing_answers_on_is_refused_within_seconds(tiny_root, tmp_path, capsys):  # noqa: F811
    import socket
    import time
    with socket.socket() as s:  # a free local port: nothing listens on it once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    code, _, err = run_main(["sweep", _ray_grid(tmp_path), "--backend", "ray", "--address", f"127.0.0.1:{port}",
                             "--data-root", tiny_root], capsys)
    line = _one_error_line(err)
    assert code == 2 and f"--address 127.0.0.1:{port}" in line and "no Ray cluster answers" in line, line
    assert time.monotonic() - started < 15


def test_a_ray_stopped_file_holding_a_list_is_named(tiny_root, tmp_path, capsys):  # noqa: F811
    grid = _ray_grid(tmp_path)
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "ray_stopped.json").write_text("[1, 2]")
    code, _, err = run_main(["sweep", grid, "--backend", "ray", "--data-root", tiny_root], capsys)
    line = _one_error_line(err)
    assert code == 2 and "ray_stopped.json': expected an object mapping run folder names to epochs" in line, line


# ------------------------------------------------------------- issue 28: list files and image folders

def _file_dataset(root, train=(12, 6, 3), test=(3, 3, 3)):
    """root/{train,test}/c<k>/<i>.jpg and root/{train,test}.txt listing them."""
    jpeg = _jpeg_bytes()
    for split, counts in (("train", train), ("test", test)):
        lines = []
        for c, n in enumerate(counts):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                (root / split / f"c{c}" / f"{i}.jpg").write_bytes(jpeg)
                lines.append(f"{split}/c{c}/{i}.jpg {c}\n")
        (root / f"{split}.txt").write_text("".join(lines))
    return root


def _file_args(root, out, dataset="listfile", *extra):
    names = ("train.txt", "test.txt") if dataset == "listfile" else ("train", "test")
    return ["train", "--config", "cifar10_lt_10_lade", "--out", out, "--data-root", root, "--quiet",
            f"data.dataset={dataset}", f"data.train={names[0]}", f"data.test={names[1]}", "data.lt_subset=false",
            "optim.batch_size=4", "optim.warmup_epochs=0", "optim.epochs=1", "run.threads=1", "run.num_workers=1",
            *extra]


def test_a_list_file_run_reports_the_imbalance_its_counts_have(tmp_path, capsys):
    root = _file_dataset(tmp_path / "data")
    out = tmp_path / "run"
    code, text, err = run_main(_file_args(root, out), capsys)
    assert code == 0, err
    setup = json.loads((out / "results.json").read_text())["setup"]
    assert setup["imbalance"] == 4.0  # 12 / 3; the config's data.imbalance (10) is not applied without lt_subset
    assert "| listfile | 4 |" in text


@pytest.mark.parametrize("split, text, expected", [
    ("train", "", "key 'data.train': '{root}/bad.txt' lists no images"),
    ("test", "", "key 'data.test': '{root}/bad.txt' has no image of the 3 training classes"),
    ("train", "train/c0/0.jpg 99999999999\n", "class 0 has no image in the training data '{root}/bad.txt' (labels "
                                               "must be 0..99999999999, each with an image; the largest label, "
                                               "99999999999, is on line 1)"),
])
def test_a_bad_list_file_is_named_before_training(tmp_path, capsys, split, text, expected):
    root = _file_dataset(tmp_path / "data")
    (root / "bad.txt").write_text(text)
    out = tmp_path / "run"
    code, _, err = run_main(_file_args(root, out, "listfile", f"data.{split}=bad.txt"), capsys)
    line = _one_error_line(err)
    assert code == 2 and expected.format(root=root) in line, line
    assert not out.exists()


def test_an_empty_last_class_folder_is_named(tmp_path, capsys):
    root = _file_dataset(tmp_path / "data")
    for p in (root / "train" / "c2").iterdir():
        p.unlink()
    code, _, err = run_main(_file_args(root, tmp_path / "run", "imagefolder"), capsys)
    line = _one_error_line(err)
    assert code == 2 and f"class 2 (c2) has no image in the training data '{root / 'train'}'" in line, line
    (root / "train" / "c2").rmdir()
    (root / "train" / "c2").symlink_to(root / "train")  # a loop back to its parent: no images of its own
    code, _, err = run_main(_file_args(root, tmp_path / "run", "imagefolder"), capsys)
    assert code == 2 and "class 2 (c2) has no image" in _one_error_line(err)


def test_class_folders_that_differ_are_named_where_they_differ(tmp_path, capsys):
    root = _file_dataset(tmp_path / "data", train=(3,) * 7, test=(1,) * 7)
    (root / "test" / "c5").rename(root / "test" / "c5x")
    code, _, err = run_main(_file_args(root, tmp_path / "run", "imagefolder"), capsys)
    line = _one_error_line(err)
    assert code == 2 and "class 5 is 'c5' in data.train and 'c5x' in data.test" in line, line
