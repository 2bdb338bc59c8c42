"""Datasets as device-resident tensors, their subsets, and the randomisations of the claims.

Images stay uint8 (N, C, H, W) on the device until a claim converts them with `to_float`;
small sets never go through a DataLoader.

Where the data comes from:
- `$DLCLAIMS_DATA/<name>.npz` (keys x_train, y_train, x_test, y_test) when that variable
  is set: an offline folder, as CI uses;
- otherwise a torchvision download into `$DLCLAIMS_CACHE` (default ~/.cache/dlclaims),
  converted once to the same npz layout, under a file lock so parallel workers on a cold
  cache download once.

Missing data raises `DataUnavailable` (the pytest plugin turns it into a skip, or an error
with --require-data); a damaged file raises `DataCorrupt` naming the file. Neither is ever
answered with a silently smaller set.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "DLCLAIMS_DATA"
CACHE_ENV = "DLCLAIMS_CACHE"
NUM_CLASSES = 10
PACKED_KEY = "packed"  # JSON metadata of a packed subset (`python -m dlclaims.data pack`)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    image_shape: tuple[int, int, int]  # (C, H, W) as stored in the tensors
    train_sizes: tuple[int, ...]  # sizes a valid file may hold (CIFAR: the offline prefix or all)
    test_size: int
    torchvision_class: str
    class_names: tuple[str, ...]


SPECS = {
    "mnist": DatasetSpec("mnist", (1, 28, 28), (60000,), 10000, "MNIST", tuple(str(i) for i in range(10))),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", (1, 28, 28), (60000,), 10000, "FashionMNIST",
        ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"),
    ),
    "cifar10": DatasetSpec(
        "cifar10", (3, 32, 32), (20000, 50000), 10000, "CIFAR10",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}


class DataUnavailable(RuntimeError):
    """The data cannot be had here; the message says how to provide it."""


class InsufficientData(DataUnavailable):
    """The data exists but holds fewer samples than the protocol asks for."""


def skip_reason(exc: DataUnavailable, require_data: bool) -> str | None:
    """The skip reason for a test that met `exc`, or None when it must be an error.

    Missing data skips (an error under --require-data, which says the data must be here).
    Insufficient data — the file is there and intact but holds fewer images than a protocol asks
    for, e.g. all 50,000 CIFAR-10 images from the 20,000-image offline file — is a property of the
    protocol, not a broken setup: it skips with its reason even under --require-data.
    """
    if isinstance(exc, InsufficientData):
        return f"insufficient data: {exc}"
    if require_data:
        return None
    return f"data unavailable: {exc}"


class DataCorrupt(RuntimeError):
    """A data file exists but is unreadable or inconsistent."""


@dataclass(frozen=True)
class ImageData:
    """A dataset's train and test split as tensors on one device (uint8 images, int64 labels)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    source: str

    @property
    def device(self) -> torch.device:
        return self.x_train.device


def _how_to_fix(name: str) -> str:
    return (
        f"Set {DATA_ENV} to a folder holding {name}.npz (keys x_train, y_train, x_test, y_test), "
        f"or leave {DATA_ENV} unset so that torchvision downloads {name} into "
        f"${CACHE_ENV} (default ~/.cache/dlclaims) where the internet is reachable."
    )


def data_dir() -> Path | None:
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "dlclaims")).expanduser()


def locate(name: str) -> Path:
    """The npz file for `name`, downloading it into the cache if no data folder is set."""
    if name not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(SPECS)}")
    folder = data_dir()
    if folder is not None:
        path = folder / f"{name}.npz"
        if not folder.is_dir():
            raise DataUnavailable(f"{DATA_ENV}={folder} is not a directory. {_how_to_fix(name)}")
        if not path.is_file():
            raise DataUnavailable(f"{path} does not exist ({DATA_ENV}={folder}). {_how_to_fix(name)}")
        return path
    return _download_to_cache(SPECS[name])


def _download_to_cache(spec: DatasetSpec) -> Path:
    from filelock import FileLock

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.npz"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return path
        try:
            import torchvision

            cls = getattr(torchvision.datasets, spec.torchvision_class)
            raw = folder / "torchvision"
            train = cls(str(raw), train=True, download=True)
            test = cls(str(raw), train=False, download=True)
        except Exception as exc:  # no network, no torchvision, a broken mirror ...
            raise DataUnavailable(
                f"{DATA_ENV} is not set and the torchvision download of {spec.name} failed "
                f"({type(exc).__name__}: {exc}). {_how_to_fix(spec.name)}"
            ) from None
        arrays = {}
        for split, ds in (("train", train), ("test", test)):
            arrays[f"x_{split}"] = np.asarray(ds.data, dtype=np.uint8)
            arrays[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def _read_npz(path: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataCorrupt(f"{path}: missing keys {missing} (expected {list(keys)})")
            arrays = {k: npz[k] for k in keys}
            if PACKED_KEY in npz.files:
                arrays[PACKED_KEY] = npz[PACKED_KEY]
    except DataCorrupt:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataCorrupt(
            f"{path} is unreadable ({type(exc).__name__}: {exc}); it is truncated or damaged. "
            f"Replace it with an intact copy. {_how_to_fix(spec.name)}"
        ) from None
    _validate(path, spec, arrays)
    return arrays


def _validate(path: Path, spec: DatasetSpec, arrays: dict[str, np.ndarray]) -> None:
    c, h, w = spec.image_shape
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        problems = []
        if x.dtype != np.uint8:
            problems.append(f"x_{split} dtype {x.dtype}, expected uint8")
        if x.shape[1:] not in ((h, w), (h, w, c)):
            problems.append(f"x_{split} shape {x.shape}, expected (N, {h}, {w}{', ' + str(c) if c > 1 else ''})")
        if y.ndim != 1 or len(y) != len(x):
            problems.append(f"y_{split} shape {y.shape} does not match x_{split} {x.shape}")
        elif y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
            problems.append(f"y_{split} labels outside 0..{NUM_CLASSES - 1}")
        expected = spec.train_sizes if split == "train" else (spec.test_size,)
        if PACKED_KEY in arrays:  # a packed subset (`python -m dlclaims.data pack`) states its own counts
            declared = json.loads(str(arrays[PACKED_KEY]))["counts"][split]
            if len(x) != declared or len(x) > max(expected):
                problems.append(f"{len(x)} {split} images, the pack declares {declared} (at most {max(expected)})")
        elif len(x) not in expected:
            problems.append(f"{len(x)} {split} images, expected one of {expected}")
        if problems:
            raise DataCorrupt(f"{path} is inconsistent: " + "; ".join(problems))


def load(name: str, *, device: str | torch.device = "cpu") -> ImageData:
    """Load `name` ("mnist", "fashion_mnist", "cifar10") as uint8 (N, C, H, W) tensors on `device`."""
    spec = SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(SPECS)}")
    path = locate(name)
    arrays = _read_npz(path, spec)

    def images(x: np.ndarray) -> torch.Tensor:
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # to (N, C, H, W)
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    source = str(path)
    if PACKED_KEY in arrays:
        info = json.loads(str(arrays[PACKED_KEY]))
        source += f" (packed subset: {info['counts']['train']} train / {info['counts']['test']} test images)"
    return ImageData(
        name=name,
        x_train=images(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"].astype(np.int64)).to(device),
        x_test=images(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)).to(device),
        class_names=spec.class_names,
        source=source,
    )


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


# A class may fall short of its balanced share by at most this fraction before a subset is refused:
# the 20,000-image offline CIFAR-10 file holds 1,925-2,042 images per class, so "all 20,000,
# balanced" takes every image (classes 3.75 % short at most) instead of refusing.
MAX_CLASS_SHORTFALL = 0.10


class UnbalancedSubset(UserWarning):
    """A class-balanced subset had to take fewer images of some classes than its balanced share."""


def balanced_counts(n: int, available: list[int], max_shortfall: float = MAX_CLASS_SHORTFALL) -> list[int]:
    """Images per class for a balanced subset of `n` from classes holding `available` images.

    The balanced share is n // C each, the first n % C classes one more. When a class holds fewer
    than that, the subset is as balanced as the data allows: short classes give every image they
    have and the rest is spread evenly over the others (water-filling), still n in all. Raises
    InsufficientData when n exceeds the split, or a class falls short of its share by more than
    `max_shortfall` (then the subset would no longer be balanced in any useful sense).
    """
    num_classes = len(available)
    if n > sum(available):
        raise InsufficientData(f"asked for {n} samples, the split has {sum(available)}")
    share = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    if all(k <= a for k, a in zip(share, available)):
        return share
    worst = min(range(num_classes), key=lambda c: available[c] / max(share[c], 1))
    if available[worst] < (1 - max_shortfall) * share[worst]:
        raise InsufficientData(
            f"asked for {share[worst]} samples of class {worst}, the split has {available[worst]} "
            f"(more than {100 * max_shortfall:g} % short of a balanced share)")
    lo, hi = 0, max(available)  # the largest level L with sum(min(a, L)) <= n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(a, mid) for a in available) <= n:
            lo = mid
        else:
            hi = mid - 1
    counts = [min(a, lo) for a in available]
    for c in range(num_classes):  # the remainder, one each, to classes with images to spare
        if sum(counts) == n:
            break
        if available[c] > counts[c]:
            counts[c] += 1
    return counts


def balanced_indices(labels: torch.Tensor, n: int, seed: int, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """`n` indices with classes as equal as possible (the first n % C classes get one more), by seed.

    Drawn on the CPU so the subset is the same whichever device holds the data. When some class
    holds fewer images than its share (all 20,000 images of the offline CIFAR-10 file, whose
    classes hold 1,925-2,042), the subset is as balanced as the data allows (`balanced_counts`)
    and an `UnbalancedSubset` warning states the deviation.
    """
    y = labels.cpu()
    if n > len(y):
        raise InsufficientData(f"asked for {n} samples, the split has {len(y)}")
    pools = [torch.nonzero(y == c).flatten() for c in range(num_classes)]
    per_class = balanced_counts(n, [len(p) for p in pools])
    balanced = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    if per_class != balanced:
        import warnings

        short = [c for c in range(num_classes) if per_class[c] < balanced[c]]
        warnings.warn(UnbalancedSubset(
            f"a balanced subset of {n} needs {n // num_classes} per class; class(es) "
            f"{', '.join(map(str, short))} hold only {', '.join(str(len(pools[c])) for c in short)}, so the subset "
            f"takes {min(per_class)}-{max(per_class)} per class (as balanced as the data allows)"), stacklevel=2)
    gen = _generator(seed)
    chosen = []
    for pool, k in zip(pools, per_class):
        chosen.append(pool[torch.randperm(len(pool), generator=gen)[:k]])
    idx = torch.cat(chosen)
    return idx[torch.randperm(len(idx), generator=gen)].to(labels.device)


def subset(data: ImageData, n_train: int, n_test: int, seed: int) -> ImageData:
    """A class-balanced subset of both splits, chosen by `seed`."""
    tr = balanced_indices(data.y_train, n_train, seed)
    te = balanced_indices(data.y_test, n_test, seed + 1)
    return ImageData(data.name, data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te],
                     data.class_names, data.source)


def require_train_size(data: ImageData, n: int) -> None:
    """Raise InsufficientData when the protocol needs more training images than the file has."""
    if len(data.x_train) < n:
        raise InsufficientData(
            f"the protocol needs {n} {data.name} training images but {data.source} has "
            f"{len(data.x_train)}; point {DATA_ENV} at the full set or let torchvision download it"
        )


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (compute on the training split)."""
    xf = x.float().div_(255)
    return xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3))


def to_float(x: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images to float32 in [0, 1], then standardised per channel when mean/std are given."""
    xf = x.float().div_(255)
    if mean is not None:
        xf = (xf - mean.view(1, -1, 1, 1).to(xf)) / std.view(1, -1, 1, 1).to(xf)
    return xf


def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average float images to size × size (e.g. MNIST 28 → 14)."""
    return torch.nn.functional.adaptive_avg_pool2d(x, size)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def prepare(
    name: str,
    *,
    device,
    seed: int,
    n_train: int | None = None,
    n_test: int | None = None,
    train_size_required: int | None = None,
    image_size: int | None = None,
    crop: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The usual claim input: (x_train, y_train, x_test, y_test) as float images standardised with
    the training split's channel statistics, optionally center-cropped then area-downsampled.

    `n_train`/`n_test` pick class-balanced subsets by `seed`; `n_train=None` takes every image,
    and `train_size_required` (e.g. all 50,000 CIFAR-10 images) raises InsufficientData when the
    file holds fewer.
    """
    split = _prepare_split(name, device=device, seed=seed, n_train=n_train, n_test=n_test,
                           train_size_required=train_size_required)
    mean, std = channel_stats(split.x_train)

    def images(x: torch.Tensor) -> torch.Tensor:
        x = to_float(x, mean, std)
        if crop:
            x = center_crop(x, crop)
        return downsample(x, image_size) if image_size and x.shape[-1] != image_size else x

    return images(split.x_train), split.y_train, images(split.x_test), split.y_test


def _prepare_split(name: str, *, device, seed: int, n_train: int | None, n_test: int | None,
                   train_size_required: int | None) -> ImageData:
    """The uint8 split `prepare` converts: every image (n_train=None) or a class-balanced subset."""
    full = load(name, device=device)
    if n_train is None:
        if train_size_required:
            require_train_size(full, train_size_required)
        return full
    return subset(full, n_train, n_test if n_test is not None else len(full.x_test), seed)


def prepare_stats(name: str, *, device="cpu", seed: int, n_train: int | None = None, n_test: int | None = None,
                  train_size_required: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std), in [0, 1] intensity units, that `prepare` standardises with for the same
    arguments: what maps a quantity in pixel units (the valid box [0, 1], a perturbation size) into the
    inputs `prepare` returns ((v − mean) / std; a size: v / std). Area downsampling and cropping do not
    change these units."""
    return channel_stats(_prepare_split(name, device=device, seed=seed, n_train=n_train, n_test=n_test,
                                        train_size_required=train_size_required).x_train)


def centred_unit_norm(x_train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Images flattened to rows, centred by the training rows' mean and scaled to unit L2 norm (the
    ‖x‖ = 1 inputs of NTK theory); `others` (test sets) are centred by the same training mean."""
    centre = x_train.flatten(1).mean(dim=0)

    def unit(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) - centre
        return x / x.norm(dim=1, keepdim=True)

    return (unit(x_train), *(unit(x) for x in others))


def corrupt_labels(
    labels: torch.Tensor, p: float, seed: int, num_classes: int = NUM_CLASSES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zhang et al.'s partially corrupted labels: each label, independently with probability p,
    is replaced by a uniformly random class (which may equal the true one).

    Returns (new labels, mask of labels that changed).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"corruption fraction must be in [0, 1], got {p}")
    gen = _generator(seed)
    n = len(labels)
    resample = torch.rand(n, generator=gen) < p
    random_classes = torch.randint(0, num_classes, (n,), generator=gen)
    new = torch.where(resample, random_classes, labels.cpu()).to(labels.device)
    return new, new != labels


def shuffled_pixels(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One fixed permutation of pixel positions applied to every image (train and test alike).

    Channels of a pixel move together. Call with the same seed on both splits.
    """
    n, c, h, w = x.shape
    perm = torch.randperm(h * w, generator=_generator(seed)).to(x.device)
    return x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)


def random_pixels(x: torch.Tensor, seed: int) -> torch.Tensor:
    """An independent random permutation of pixel positions for each image."""
    n, c, h, w = x.shape
    perms = torch.argsort(torch.rand(n, h * w, generator=_generator(seed)), dim=1).to(x.device)
    flat = x.reshape(n, c, h * w)
    return torch.gather(flat, 2, perms[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)


def gaussian_images(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Float images of i.i.d. Gaussian pixels with the per-channel mean and std of `x`."""
    xf = x.float()
    mean = xf.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    std = xf.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
    noise = torch.randn(x.shape, generator=_generator(seed)).to(x.device)
    return noise * std + mean


def flip_vertical(x: torch.Tensor) -> torch.Tensor:
    """Upside-down images (rows reversed)."""
    return x.flip(-2)


def flip_horizontal(x: torch.Tensor) -> torch.Tensor:
    """Mirror images (columns reversed)."""
    return x.flip(-1)


# ---------------------------------------------------------------- packing a subset for a GPU smoke run

# Images per dataset (train, test) in the GPU smoke's pack: enough for every smoke protocol to draw
# its subsets (largest: memorization's MLP 1,000 + 1,000 held out and random labels' 2,000 test
# MNIST images; vertical flip's 3,000 CIFAR-10 training images and curve subset; CNN-vs-CNTK's
# 550 + 1,000; Arora's 2K rows 2,000 per subset), class-balanced, in ≤ 40 MB. A claim on a pack
# draws its subsets from the packed images, so its numbers differ from a run on the full files
# (the pack is for exercising code paths and timing, not for baselines).
SMOKE_PACK = {"mnist": (10000, 10000), "fashion_mnist": (2000, 1000), "cifar10": (5000, 4000)}
SMOKE_PACK_MAX_MB = 40.0


def pack(out_dir: str | os.PathLike, sizes: dict[str, tuple[int, int]] | None = None, seed: int = 0,
         max_mb: float | None = SMOKE_PACK_MAX_MB) -> dict[str, int]:
    """Write class-balanced subsets of the datasets to `out_dir/<name>.npz` (the loader's layout plus
    a `packed` record of source, counts and seed); returns each file's size in bytes.

    The source is wherever `locate` finds each dataset (DLCLAIMS_DATA or the cache). Raises
    ValueError (and removes what it wrote) when the files together exceed `max_mb` megabytes.
    """
    sizes = dict(SMOKE_PACK if sizes is None else sizes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for name, (n_train, n_test) in sizes.items():
        spec = SPECS[name]
        source = locate(name)
        arrays = _read_npz(source, spec)
        packed = {}
        for split, n in (("train", n_train), ("test", n_test)):
            y = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
            if n >= len(y):  # the whole split, as it is (MNIST's test classes hold 892-1,135)
                idx = np.arange(len(y))
            else:
                idx = np.sort(balanced_indices(y, n, seed + (split == "test")).numpy())
            packed[f"x_{split}"] = arrays[f"x_{split}"][idx]
            packed[f"y_{split}"] = arrays[f"y_{split}"][idx].astype(np.int64)
        counts = {split: len(packed[f"y_{split}"]) for split in ("train", "test")}
        info = {"source": str(source), "seed": seed, "counts": counts,
                "note": "class-balanced subset for a GPU smoke run; numbers differ from the full files"}
        packed[PACKED_KEY] = np.array(json.dumps(info))
        path = out / f"{name}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **packed)
        tmp.replace(path)
        written[name] = path.stat().st_size
    total = sum(written.values())
    if max_mb is not None and total > max_mb * 1e6:
        for name in written:
            (out / f"{name}.npz").unlink()
        raise ValueError(f"the pack would be {total / 1e6:.1f} MB, over the {max_mb:g} MB limit; ask for fewer images")
    return written


def _sizes_arg(text: str) -> dict[str, tuple[int, int]]:
    """"mnist=10000:10000,cifar10=5000:4000" → {"mnist": (10000, 10000), "cifar10": (5000, 4000)}."""
    sizes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, counts = part.partition("=")
        if name not in SPECS or ":" not in counts:
            raise ValueError(f"expected NAME=TRAIN:TEST with NAME in {', '.join(SPECS)}, got {part!r}")
        n_train, n_test = counts.split(":")
        sizes[name] = (int(n_train), int(n_test))
    return sizes


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dlclaims.data",
                                     description="Dataset tools: pack a class-balanced subset for a GPU smoke run.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write <OUT>/<name>.npz subsets (default: what the smoke protocols need)")
    p.add_argument("out", help="output folder (point DLCLAIMS_DATA at it on the GPU machine)")
    p.add_argument("--sizes", type=_sizes_arg, default=None,
                   help="NAME=TRAIN:TEST,... (default: " + ",".join(f"{k}={a}:{b}" for k, (a, b) in SMOKE_PACK.items())
                        + ")")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-mb", type=float, default=SMOKE_PACK_MAX_MB, help="refuse a pack larger than this")
    args = parser.parse_args(argv)
    try:
        written = pack(args.out, args.sizes, seed=args.seed, max_mb=args.max_mb)
    except (ValueError, DataUnavailable, DataCorrupt) as exc:
        print(f"pack failed: {exc}", file=sys.stderr)
        return 1
    for name, size in written.items():
        print(f"{Path(args.out, name + '.npz')}: {size / 1e6:.1f} MB")
    print(f"total: {sum(written.values()) / 1e6:.1f} MB (limit {args.max_mb:g} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
