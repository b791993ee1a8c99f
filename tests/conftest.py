"""Shared pytest fixtures: repository and data paths, seeding, thread counts, the kernel variant.

The data folder is `../shared/data` relative to the repository root (in CI the
repository is cloned next to `shared/`), never an absolute path.
"""
import contextlib
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
TEST_THREADS = 2  # the machine the tests are sized for has two cores

CIFAR100_ARCHIVE = "cifar-100-binary.tar.gz"
CIFAR_RECORD_BYTES = 2 + 3 * 32 * 32  # coarse label, fine label, CHW pixels


def pytest_configure(config):
    # Tests compare against PyTorch; keep it from oversubscribing the cores
    # it shares with lade's own threads and other test processes.
    import torch

    torch.set_num_threads(TEST_THREADS)


@contextlib.contextmanager
def kernel_variant(name):
    """lade's kernel variant switched to `name` for the block, and back to the one in use before."""
    import lade

    before = lade.cpu_info()["variant"]
    lade.set_isa(name)
    try:
        yield name
    finally:
        lade.set_isa(before)


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def data_dir():
    assert DATA_DIR.is_dir(), f"data folder {DATA_DIR} (../shared/data from the repo root) is missing"
    return DATA_DIR


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same global RNG states."""
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def read_cifar100(archive_path):
    """Parses the official CIFAR-100 binary archive straight from the tar.gz.

    Returns {"train": (images uint8 (N,3,32,32), fine int64, coarse int64),
    "test": (...)}; nothing is extracted to disk."""
    splits = {}
    with tarfile.open(archive_path, "r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if name not in ("train.bin", "test.bin"):
                continue
            raw = np.frombuffer(tar.extractfile(member).read(), dtype=np.uint8)
            assert raw.size % CIFAR_RECORD_BYTES == 0, f"{member.name}: size {raw.size} is not whole records"
            records = raw.reshape(-1, CIFAR_RECORD_BYTES)
            images = records[:, 2:].reshape(-1, 3, 32, 32)
            splits[name[:-4]] = (images, records[:, 1].astype(np.int64), records[:, 0].astype(np.int64))
    assert set(splits) == {"train", "test"}, f"{archive_path}: found only {sorted(splits)}"
    return splits


@pytest.fixture(scope="session")
def cifar100(data_dir):
    return read_cifar100(data_dir / CIFAR100_ARCHIVE)
