"""Datasets as uint8 tensors, and a device-resident batch iterator with batched augmentation.

CIFAR-10/100 are read from the authors' python-format archives through a restricted unpickler
that only rebuilds numpy arrays, so a planted file cannot run code. Offline, scikit-learn's real
handwritten `digits` (1,797 images) stand in, resized to 32x32 and repeated to three channels.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_mm.errors import UsageError, check_choice

# The authors' normalization constants, applied inside the model (models/preact.py).
NORMALIZATION = {
    "cifar10": ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)),
    "cifar100": ((129.3 / 255, 124.1 / 255, 112.4 / 255), (68.2 / 255, 65.4 / 255, 70.4 / 255)),
    # Digits are grey, replicated to three channels; constants measured on its training split.
    "digits": ((0.3058, 0.3058, 0.3058), (0.3236, 0.3236, 0.3236)),
}

CIFAR_FOLDERS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# The archives torchvision downloads and their published MD5s (torchvision.datasets.CIFAR10/100).
CIFAR_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}
DIGITS_TEST_SIZE = 357  # a fixed 80/20 split of the 1,797 images
DIGITS_SPLIT_SEED = 20180613  # fixed forever: the split must not move with the training seed


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, 3, 32, 32) in [0, 255], labels as int64 (N,)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> "ImageSet":
        """The first n images: a fixed, reproducible subset (the order is already fixed on disk)."""
        if n is None or n >= len(self):
            return self
        return ImageSet(self.name, self.images[:n], self.labels[:n], self.num_classes)

    def to(self, device: torch.device) -> "ImageSet":
        return ImageSet(self.name, self.images.to(device), self.labels.to(device), self.num_classes)

    def as_float(self) -> torch.Tensor:
        return to_unit_float(self.images)


def to_unit_float(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float().div_(255.0)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes and numpy arrays; refuses every other global."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python-format batch file -> (uint8 N x 3 x 32 x 32, int64 labels)."""
    try:
        raw = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(raw[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(raw[label_key], dtype=np.int64).reshape(-1)
    except Exception as exc:  # whatever a damaged pickle raises (the unpickler rebuilds arrays only), it is damage
        raise UsageError(f"corrupted CIFAR file {str(path)!r} ({type(exc).__name__}: {exc}); "
                         "delete it and download again") from None
    if len(labels) != len(data):
        raise UsageError(f"corrupted CIFAR file {str(path)!r}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"corrupted CIFAR file {str(path)!r}: labels from {labels.min()} to {labels.max()}, "
                         f"outside 0..{num_classes - 1}; delete it and download again")
    return data, labels


def check_cifar_archive(name: str, data_dir: Path) -> None:
    """An archive already in `data_dir` must be the published one: a damaged or misnamed one is called corrupt."""
    file_name, md5 = CIFAR_ARCHIVES[name]
    archive = data_dir / file_name
    if not archive.exists():
        return
    try:
        with open(archive, "rb") as handle:
            digest = hashlib.file_digest(handle, "md5").hexdigest()
    except OSError as exc:
        raise UsageError(f"cannot read the {name} archive {str(archive)!r} ({exc.strerror})") from None
    if digest != md5:
        raise UsageError(f"corrupt {name} archive {str(archive)!r} (truncated, damaged or another file under this name: "
                         f"MD5 {digest}, expected {md5}); delete it and download again")


def _download_cifar(name: str, data_dir: Path) -> None:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        # torchvision checks the archive's MD5, so what we later unpickle is the genuine file.
        cls(str(data_dir), train=True, download=True)
    except Exception as exc:  # urllib, socket and checksum errors all mean "could not get it"
        raise UsageError(
            f"{name} is not in {str(data_dir)!r} and could not be downloaded ({type(exc).__name__}: {exc}); "
            f"download the python version from {CIFAR_URL} and extract it into {str(data_dir)!r}, "
            f"or run offline with --dataset digits"
        ) from None


def load_cifar(name: str, data_dir: str | Path, train: bool, download: bool) -> ImageSet:
    folder_name, train_files, test_files, label_key = CIFAR_FOLDERS[name]
    data_dir = Path(data_dir)
    folder = data_dir / folder_name
    files = [folder / f for f in (train_files if train else test_files)]
    num_classes = 100 if name == "cifar100" else 10
    if not all(f.is_file() for f in files):
        if folder.is_dir():
            absent = ", ".join(f.name for f in files if not f.is_file())
            raise UsageError(f"incomplete or corrupt {name} folder {str(folder)!r}: no {absent}; delete the folder "
                             "and download again")
        check_cifar_archive(name, data_dir)
        if not download:
            raise UsageError(
                f"{name} not found in {str(folder)!r} and --no-download was given; download the python version "
                f"from {CIFAR_URL} and extract it into {str(data_dir)!r}, or use --dataset digits"
            )
        _download_cifar(name, data_dir)
    parts = [read_cifar_batch(f, label_key, num_classes) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageSet(name, images, labels, num_classes)


def load_digits(train: bool) -> ImageSet:
    """scikit-learn's handwritten digits (shipped on disk), as 32x32 RGB uint8 with a fixed split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False).clamp_(0, 1)
    images = (images * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels)))
    chosen = order[DIGITS_TEST_SIZE:] if train else order[:DIGITS_TEST_SIZE]
    return ImageSet("digits", images[chosen], labels[chosen], 10)


def load_dataset(name: str, train: bool, data_dir: str | Path = "data", download: bool = True) -> ImageSet:
    check_choice("dataset", name, ("cifar10", "cifar100", "digits"))
    if name == "digits":
        return load_digits(train)
    return load_cifar(name, data_dir, train, download)


def augment_batch(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip for a whole batch at once, on its device.

    Both become one gather: each output pixel reads its source pixel of the padded image, with
    the source column mirrored for flipped images, so no flipped copy of the batch is made.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).expand(n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (2, n), device=x.device, generator=generator)
        rows = rows + offsets[0, :, None]
        cols = cols + offsets[1, :, None]
    if flip:
        flip_mask = torch.rand(n, device=x.device, generator=generator) < 0.5
        cols = torch.where(flip_mask[:, None], cols.flip(1), cols)
    source = (rows[:, :, None] * x.shape[3] + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return x.flatten(2).gather(2, source).view(n, c, h, w)


def check_batch_size(batch_size: int, n_train: int) -> None:
    if n_train < batch_size:
        raise UsageError(f"--batch-size {batch_size} is larger than the {n_train} training images; use at most {n_train}")


class DeviceBatches:
    """Shuffled, augmented mini-batches from a dataset that already lives on the device.

    Drops the last partial batch so every step has the same shape (mixup partners and BN
    statistics stay well-defined; the shuffle changes which images are dropped each epoch).
    """

    def __init__(self, data: ImageSet, batch_size: int, generator: torch.Generator,
                 padding: int = 0, flip: bool = False, channels_last: bool = False):
        check_batch_size(batch_size, len(data))
        self.data = data
        self.batch_size = batch_size
        self.generator = generator
        self.padding = padding
        self.flip = flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return len(self.data) // self.batch_size

    def __iter__(self):
        device = self.data.images.device
        order = torch.randperm(len(self.data), device=device, generator=self.generator)
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            # Augmenting the uint8 images moves a quarter of the bytes; the float copy then lands
            # straight in the model's memory format.
            x = augment_batch(self.data.images[index], self.padding, self.flip, self.generator)
            yield x.to(torch.float32, memory_format=self.memory_format).div_(255.0), self.data.labels[index]


def eval_batches(data: ImageSet, batch_size: int):
    """Fixed-order float batches for evaluation."""
    for start in range(0, len(data), batch_size):
        yield to_unit_float(data.images[start:start + batch_size]), data.labels[start:start + batch_size]
