"""Decode + augment throughput: lade's C loader against Pillow + NumPy doing
the same transforms with the same number of threads, in one run.

    python benchmarks/decode.py [--threads 2] [--images 1500] [--large 400]

Sets:
  - CIFAR-10 JPEGs (32x32, from ../shared/data/cifar10-jpeg.tar.gz) with the
    CIFAR training transform (pad-4 crop, flip, normalise);
  - larger JPEGs of 224-500 px per side, made from CIFAR-10 JPEGs with Pillow
    at load time, with RandomResizedCrop 224 + flip + ColorJitter + normalise
    (ImageNet training, spec 3.4) and with resize 256 + centre crop 224.
Then how much a ResNet-32 training step slows down when the loader runs
alongside it. The last line is `decode ratio=R`, R = lade images/s / Pillow
images/s on the larger JPEGs with RandomResizedCrop 224.
"""
import argparse
import math
import os
import shutil
import sys
import tarfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run from a source checkout
import lade  # noqa: E402
from lade import data  # noqa: E402

JPEG_ARCHIVE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "cifar10-jpeg.tar.gz")
CACHE = os.path.join(REPO_ROOT, ".cache")  # git-ignored
BATCH = 64
CIFAR_MEAN, CIFAR_STD = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2023, 0.1994, 0.2010])
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def cifar10_jpeg():
    target = os.path.join(CACHE, "cifar10-jpeg")
    if not os.path.isfile(os.path.join(target, "train.txt")):
        tmp = os.path.join(CACHE, f"extract-{uuid.uuid4().hex}")
        os.makedirs(tmp)
        with tarfile.open(JPEG_ARCHIVE, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.rename(os.path.join(tmp, "cifar10-jpeg"), target)
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def make_large_set(root, lines, folder):
    """Upscales CIFAR JPEGs to random sizes of 224-500 px per side (bicubic)
    and saves them as quality-90 JPEGs; returns the list file."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i, line in enumerate(lines):
        path, label = line.split()
        w, h = rng.integers(224, 501, size=2)
        name = f"{i:05d}.jpg"
        Image.open(os.path.join(root, path)).convert("RGB").resize((int(w), int(h)), Image.BICUBIC).save(
            os.path.join(folder, name), quality=90)
        out.append(f"{name} {label}")
    list_file = os.path.join(folder, "list.txt")
    with open(list_file, "w") as f:
        f.write("\n".join(out) + "\n")
    return list_file


# ------------------------------------------------------ the Pillow + NumPy baseline

def pil_rrc_params(rng, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def grey(x):
    return 0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def pil_imagenet_train(path, rng, out):
    img = Image.open(path).convert("RGB")
    top, left, h, w = pil_rrc_params(rng, img.height, img.width)
    img = img.crop((left, top, left + w, top + h)).resize((224, 224), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    x = np.asarray(img, np.float32) / 255
    factors = rng.uniform(0.6, 1.4, size=3)
    for op in rng.permutation(3):
        if op == 0:
            x = np.clip(x * factors[0], 0, 1)
        elif op == 1:
            x = np.clip(factors[1] * x + (1 - factors[1]) * grey(x).mean(), 0, 1)
        else:
            x = np.clip(factors[2] * x + (1 - factors[2]) * grey(x)[..., None], 0, 1)
    out[...] = ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def pil_imagenet_eval(path, rng, out):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        size = (256, int(256 * h / w))
    else:
        size = (int(256 * w / h), 256)
    img = img.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - 224) / 2)), int(round((size[1] - 224) / 2))
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255
    out[...] = ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def pil_cifar_train(path, rng, out):
    x = np.zeros((40, 40, 3), np.uint8)
    x[4:36, 4:36] = np.asarray(Image.open(path).convert("RGB"))
    top, left = rng.integers(0, 9, size=2)
    x = x[top:top + 32, left:left + 32]
    if rng.random() < 0.5:
        x = x[:, ::-1]
    out[...] = ((x / np.float32(255) - CIFAR_MEAN) / CIFAR_STD).transpose(2, 0, 1)


def pillow_epoch(paths, fn, shape, threads, seed=0):
    """One pass in batches of BATCH, samples spread over a thread pool."""
    done = 0
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(paths) - BATCH + 1, BATCH):
            batch = np.empty((BATCH,) + shape, np.float32)
            jobs = [pool.submit(fn, paths[start + k], np.random.default_rng([seed, start + k]), batch[k])
                    for k in range(BATCH)]
            for j in jobs:
                j.result()
            done += BATCH
    return done


def lade_epoch(dataset, transform, threads):
    done = 0
    with data.Loader(dataset, BATCH, transform, seed=0, num_workers=threads, shuffle=False) as loader:
        for x, _ in loader:
            done += len(x)
    return done


def rates(lade_run, pillow_run, repeat=2):
    """Best images/s of each, the two runs alternating so that both see the
    same machine load."""
    best = [0.0, 0.0]
    for _ in range(repeat):
        for i, run in enumerate((lade_run, pillow_run)):
            t = time.perf_counter()
            n = run()
            best[i] = max(best[i], n / (time.perf_counter() - t))
    return best


def training_overhead(root, lines, workers, cifar_rate, threads, steps=3, rounds=2):
    """Seconds per ResNet-32 step fed from memory vs fed by the JPEG loader
    (CIFAR training transform) running alongside; the two alternate."""
    if not all(hasattr(lade, n) for n in ("ResNet32", "SGD", "train_step")):
        print("training overhead: lade.ResNet32/SGD/train_step not available, skipped")
        return
    net = lade.ResNet32(num_classes=10, variant="lade", seed=0)
    opt = lade.SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss = lade.losses.softmax_ce
    batch = 128
    sub = os.path.join(CACHE, "bench-train-list.txt")
    with open(sub, "w") as f:
        f.write("\n".join(lines[: batch * (steps + 1) * rounds]) + "\n")
    dataset = data.ListFile(sub, root=root, num_classes=10)
    with data.Loader(dataset, batch, data.CifarTrain(), seed=0, num_workers=workers, shuffle=False) as loader:
        batches = [(x.copy(), y.copy()) for x, y in loader]
    lade.train_step(net, opt, *batches[0], loss)  # warm-up
    alone, together = [], []
    with data.Loader(dataset, batch, data.CifarTrain(), seed=1, num_workers=workers, shuffle=False) as loader:
        it = iter(loader)
        for _ in range(rounds):
            for x, y in batches[1:steps + 1]:
                t = time.perf_counter()
                lade.train_step(net, opt, x, y, loss)
                alone.append(time.perf_counter() - t)
            for _ in range(steps):  # the loader works ahead while the step runs
                t = time.perf_counter()
                x, y = next(it)
                lade.train_step(net, opt, x, y, loss)
                together.append(time.perf_counter() - t)
    a, b = np.median(alone), np.median(together)
    print(f"ResNet-32 step (batch {batch}, {lade.get_num_threads()} lade threads): {a * 1e3:.0f} ms fed from memory, "
          f"{b * 1e3:.0f} ms fed by the JPEG loader ({workers} worker) alongside: loader adds {(b / a - 1) * 100:+.1f}%")
    work = batch * threads / cifar_rate  # CPU seconds the loader spends on one batch
    print(f"loader CPU per batch of {batch} CIFAR JPEGs: {work * 1e3:.1f} ms = {work / a * 100:.2f}% of a step")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=3200, help="CIFAR JPEGs per pass")
    ap.add_argument("--large", type=int, default=640, help="large JPEGs generated")
    args = ap.parse_args()
    root = cifar10_jpeg()
    lines = open(os.path.join(root, "train.txt")).read().splitlines()
    small_lines = lines[: args.images]
    small_list = os.path.join(CACHE, "bench-small-list.txt")
    with open(small_list, "w") as f:
        f.write("\n".join(small_lines) + "\n")
    small = data.ListFile(small_list, root=root, num_classes=10)
    small_paths = [os.path.join(root, ln.split()[0]) for ln in small_lines]

    large_dir = os.path.join(CACHE, f"bench-large-{args.large}")
    t = time.perf_counter()
    large_list = make_large_set(root, lines[::max(1, len(lines) // args.large)][: args.large], large_dir)
    large = data.ListFile(large_list, num_classes=10)
    large_paths = [os.path.join(large_dir, large[i][0]) for i in range(len(large))]
    print(f"generated {len(large)} JPEGs of 224-500 px in {time.perf_counter() - t:.1f} s; "
          f"{args.threads} threads for both; batch {BATCH}")

    cases = [
        ("CIFAR-10 JPEGs 32 px, CIFAR train", small, small_paths, data.CifarTrain(), pil_cifar_train, (3, 32, 32)),
        ("large JPEGs, resize 256 + centre crop 224", large, large_paths, data.ImageNetEval(), pil_imagenet_eval,
         (3, 224, 224)),
        ("large JPEGs, RandomResizedCrop 224 + flip + jitter", large, large_paths, data.ImageNetTrain(224),
         pil_imagenet_train, (3, 224, 224)),
    ]
    ratio = cifar_rate = None
    print(f"{'set / transform':52s} {'lade img/s':>11s} {'Pillow img/s':>13s} {'ratio':>6s}")
    for name, dataset, paths, transform, pil_fn, shape in cases:
        lade_rate, pil_rate = rates(lambda: lade_epoch(dataset, transform, args.threads),
                                    lambda: pillow_epoch(paths, pil_fn, shape, args.threads))
        ratio = lade_rate / pil_rate
        cifar_rate = cifar_rate or lade_rate
        print(f"{name:52s} {lade_rate:11.0f} {pil_rate:13.0f} {ratio:6.2f}")
    training_overhead(root, lines, 1, cifar_rate, args.threads)
    print(f"decode ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
