import os
import pickle

import numpy as np
import pytest
import torch

from robustbench_mm.data.images import DeviceBatches, ImageSet, augment_batch, load_dataset
from robustbench_mm.errors import UsageError


def write_cifar10(root, n_per_batch=4, seed=0):
    """A miniature CIFAR-10 in its own on-disk format: pickled dicts of uint8 rows + label lists."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n_per_batch}, f, protocol=2)
        written[name] = (data, labels)
    return written


def write_cifar100(root, n=6):
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": [0] * n,
                         b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}, f)


def test_cifar10_archive_loads_through_real_reader(tmp_path):
    written = write_cifar10(tmp_path)
    train = load_dataset("cifar10", True, tmp_path, download=False)
    test = load_dataset("cifar10", False, tmp_path, download=False)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert len(test) == 4 and train.num_classes == 10
    data, labels = written["test_batch"]
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert torch.equal(test.images, torch.from_numpy(data.reshape(4, 3, 32, 32)))
    assert test.labels.tolist() == labels
    assert train.labels[:4].tolist() == written["data_batch_1"][1]


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    data = load_dataset("cifar100", False, tmp_path, download=False)
    assert data.num_classes == 100 and len(data) == 6


def test_missing_cifar_offline_says_how_to_get_it(tmp_path):
    with pytest.raises(UsageError, match="cifar10 not found.*download the python version"):
        load_dataset("cifar10", True, tmp_path, download=False)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UsageError, match="could not be downloaded.*Network is unreachable.*--dataset digits"):
        load_dataset("cifar10", True, tmp_path, download=True)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_planted_pickle_in_cifar_folder_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": _Payload(), b"labels": []}, f)
    with pytest.raises(UsageError, match="corrupted CIFAR file.*refusing to load posix.system"):
        load_dataset("cifar10", False, tmp_path, download=False)
    assert not (tmp_path / "pwned").exists()


def test_digits_offline_split_is_fixed_and_disjoint():
    train, test = load_dataset("digits", True), load_dataset("digits", False)
    assert (len(train), len(test)) == (1440, 357)
    assert train.images.shape[1:] == (3, 32, 32)
    assert torch.equal(test.labels, load_dataset("digits", False).labels)
    flat = {bytes(img.numpy()) for img in train.images}
    assert not any(bytes(img.numpy()) in flat for img in test.images[:50])
    assert torch.bincount(test.labels).min() > 20


def test_crop_is_a_shift_with_zero_fill_and_flip_mirrors():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4) + 1
    gen = torch.Generator().manual_seed(3)
    out = augment_batch(x, padding=1, flip=False, generator=gen)
    gen = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 3, (2, 2), generator=gen)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        r, c = offsets[0, i], offsets[1, i]
        assert torch.equal(out[i], padded[i, :, r:r + 4, c:c + 4])
    flipped = augment_batch(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))


def test_crop_and_flip_together_match_a_per_image_reference():
    x = torch.randint(0, 256, (6, 3, 5, 5), dtype=torch.uint8)
    out = augment_batch(x, padding=2, flip=True, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    offsets = torch.randint(0, 5, (2, 6), generator=gen)
    flips = torch.rand(6, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        r, c = offsets[0, i], offsets[1, i]
        expected = padded[i, :, r:r + 5, c:c + 5]
        assert torch.equal(out[i], expected.flip(2) if flips[i] else expected)
    assert flips.any() and not flips.all()  # the seed exercises both branches


def test_device_batches_are_float_in_the_asked_memory_format():
    data = ImageSet("t", torch.full((4, 3, 4, 4), 255, dtype=torch.uint8), torch.arange(4), 10)
    for channels_last, layout in ((False, torch.contiguous_format), (True, torch.channels_last)):
        x, _ = next(iter(DeviceBatches(data, 2, torch.Generator().manual_seed(0), 1, True, channels_last)))
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=layout)
        assert x.max() == 1.0 and x.min() == 0.0  # padding is black, the image white


def test_device_batches_are_seeded_and_cover_each_image_once():
    data = ImageSet("t", torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous(),
                    torch.arange(10), 10)
    first = [y.tolist() for _, y in DeviceBatches(data, 3, torch.Generator().manual_seed(5))]
    again = [y.tolist() for _, y in DeviceBatches(data, 3, torch.Generator().manual_seed(5))]
    assert first == again and len(first) == 3
    seen = sum(first, [])
    assert len(set(seen)) == 9
    with pytest.raises(UsageError, match="--batch-size 11 is larger than the 10 training images"):
        DeviceBatches(data, 11, torch.Generator())
