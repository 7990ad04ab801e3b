"""advlib.data: Fashion-MNIST as [0,1] tensors, MNIST and CIFAR-10 on files in torchvision's layout,
offline behaviour, atomic staging of Debian's files, verification of the files on load (and the repair
by fetch), seeded subsets and loaders."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import re
import shutil
import socket
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from advlib import data

FASHION_STEMS = tuple(data.FASHION_MNIST_SHA256)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- Fashion-MNIST, the course's dataset ---------------------------------------------------------

@pytest.mark.parametrize("split, n", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_tensors(request, split, n):
    x, y = request.getfixturevalue(f"fashion_{split}")
    assert x.shape == (n, 1, 28, 28)
    assert x.dtype == torch.float32
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert y.shape == (n,) and y.dtype == torch.int64
    assert y.min().item() == 0 and y.max().item() == 9
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), n // 10))


def test_fashion_mnist_pixels_are_the_idx_bytes_over_255(fashion_test, fashion_raw):
    x, y = fashion_test
    images = np.frombuffer((fashion_raw / "t10k-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    labels = np.frombuffer((fashion_raw / "t10k-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    assert torch.equal(x, torch.from_numpy(images.copy()).float().div(255).view(10_000, 1, 28, 28))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


def test_fashion_mnist_normalisation_constants_match_training_set(fashion_train):
    x, _ = fashion_train
    meta = data.info("fashion-mnist")
    assert x.mean().item() == pytest.approx(meta.mean[0], abs=5e-4)
    assert x.std().item() == pytest.approx(meta.std[0], abs=5e-4)


def test_fashion_mnist_sha256_of_staged_files(fashion_raw):
    for stem, expected in data.FASHION_MNIST_SHA256.items():
        assert sha256(fashion_raw / stem) == expected, stem


def test_classes_and_info():
    assert len(data.classes()) == 10 and data.classes()[9] == "Ankle boot"
    assert data.classes("cifar10")[0] == "airplane"
    assert data.info("cifar10").shape == (3, 32, 32)
    with pytest.raises(ValueError, match="fashion-mnist"):
        data.info("imagenet")


def test_unknown_dataset_and_split_raise(tmp_path):
    with pytest.raises(ValueError, match="imagenet"):
        data.load("imagenet", "train", root=tmp_path)
    with pytest.raises(ValueError, match="validation") as error:
        data.load("fashion-mnist", "validation", root=tmp_path)
    assert "train" in str(error.value) and "test" in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing fetched for a bad request


def test_cli_reports_unknown_dataset(capsys):
    assert data.main(["fetch", "imagenet"]) == 1
    assert "imagenet" in capsys.readouterr().err


# --- MNIST on IDX files the test writes ----------------------------------------------------------

def write_idx(path, array: np.ndarray, magic: int) -> None:
    """An IDX file: big-endian magic (0x08 = unsigned bytes, then the number of dimensions) and sizes."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", size) for size in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def small_idx(monkeypatch):
    """The IDX files of the tests' small MNIST (7 training and 5 test images): what verification expects."""
    for stem, (magic, dims) in data.IDX_FILES.items():
        monkeypatch.setitem(data.IDX_FILES, stem, (magic, (7 if stem.startswith("train") else 5, *dims[1:])))


def write_mnist(root, n_train=7, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        arrays[prefix] = images, labels
    return arrays


@pytest.mark.parametrize("split, prefix", [("train", "train"), ("test", "t10k")])
def test_mnist_loads_idx_files(tmp_path, small_idx, split, prefix):
    arrays = write_mnist(tmp_path)
    images, labels = arrays[prefix]
    x, y = data.load("mnist", split, root=tmp_path, fetch_missing=False)
    assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(images).float().div(255).unsqueeze(1))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert x[0, 0, 0, 0].item() == 0.0 and x[0, 0, 0, 1].item() == 1.0


# --- CIFAR-10 on pickled batches the test writes -------------------------------------------------

def write_cifar(root, per_batch=2, n_test=3, seed=0):
    """Batches in the layout of cifar-10-python.tar.gz; returns torchvision's lists with our MD5s."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(name, n, label):
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        entry = {"batch_label": label, "labels": labels, "data": images,
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        return [name, md5(folder / name)], images, labels

    train = [batch(f"data_batch_{i}", per_batch, f"training batch {i} of 5") for i in range(1, 6)]
    test = [batch("test_batch", n_test, "testing batch 1 of 1")]
    # a pure red, a pure green and a pure blue image make the channel order visible
    pure = np.zeros((3, 3072), dtype=np.uint8)
    for c in range(3):
        pure[c, c * 1024:(c + 1) * 1024] = 255
    test_images = np.concatenate([test[0][1], pure])
    entry = {"batch_label": "testing batch 1 of 1", "labels": test[0][2] + [0, 1, 2], "data": test_images,
             "filenames": [f"t{i}.png" for i in range(len(test_images))]}
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(entry, f, protocol=2)
    test = [(["test_batch", md5(folder / "test_batch")], test_images, entry["labels"])]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.classes("cifar10")), "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, f, protocol=2)
    meta = {"filename": "batches.meta", "key": "label_names", "md5": md5(folder / "batches.meta")}
    return train, test, meta


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    train, test, meta = write_cifar(tmp_path)
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [entry for entry, _, _ in train])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [entry for entry, _, _ in test])
    monkeypatch.setattr(tvd.CIFAR10, "meta", meta)
    return tmp_path, train, test


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_loads_pickled_batches(cifar_root, split):
    root, train, test = cifar_root
    batches = train if split == "train" else test
    images = np.concatenate([b[1] for b in batches])
    labels = sum((b[2] for b in batches), [])
    x, y = data.load("cifar10", split, root=root, fetch_missing=False)
    assert x.shape == (len(images), 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous()
    # each row is 1024 red, then 1024 green, then 1024 blue values, each a 32x32 image row by row
    assert torch.equal(x, torch.from_numpy(images).float().div(255).view(-1, 3, 32, 32))
    assert torch.equal(y, torch.tensor(labels, dtype=torch.int64))
    if split == "test":
        red, green, blue = x[-3:]
        for c, img in enumerate((red, green, blue)):
            assert torch.all(img[c] == 1.0) and img.sum().item() == 1024.0


def test_cifar10_corrupt_batch_is_not_trusted(cifar_root):
    root, _, _ = cifar_root
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])  # truncated: its MD5 no longer matches
    with pytest.raises(data.DatasetNotFoundError, match="CIFAR-10"):
        data.load("cifar10", "train", root=root, fetch_missing=False)


# --- missing datasets, offline -------------------------------------------------------------------

def _online(name: str) -> bool:
    return any(data._reachable(url, timeout=2) for url in data._download_urls(name))


@pytest.fixture(params=["network", "simulated"])
def offline(request, monkeypatch):
    """The network as it is here (skipped when torchvision's servers answer), or no network at all."""
    if request.param == "network":
        if _online("mnist") or _online("cifar10"):
            pytest.skip("torchvision's servers are reachable: not an offline machine")
    else:
        def refuse(*args, **kwargs):
            raise OSError("network disabled by the test")
        monkeypatch.setattr(socket, "create_connection", refuse)
        monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name, title", [("mnist", "MNIST"), ("cifar10", "CIFAR-10")])
@pytest.mark.parametrize("fetch_missing", [True, False])
def test_missing_dataset_offline_raises_quickly(tmp_path, offline, monkeypatch, name, title, fetch_missing):
    probes, downloads = [], []
    real_reachable, real_dataset = data._reachable, data._torchvision_dataset

    def probe(url, timeout=5.0):
        probes.append(timeout)
        return real_reachable(url, timeout)

    def dataset(name, root, *, train, download):
        downloads.append(download)
        return real_dataset(name, root, train=train, download=download)

    monkeypatch.setattr(data, "_reachable", probe)
    monkeypatch.setattr(data, "_torchvision_dataset", dataset)
    with pytest.raises(data.DatasetNotFoundError, match=re.escape(title)) as error:
        data.load(name, "train", root=tmp_path, fetch_missing=fetch_missing)
    # quick, counted rather than timed (a busy machine would flip a clock): at most one short probe per
    # mirror, and no download started, so the wait is bounded by the probes' timeouts
    assert len(probes) <= len(data._download_urls(name)) and all(t <= 5 for t in probes), probes
    assert bool(probes) == fetch_missing
    assert not any(downloads)
    message = str(error.value)
    assert title in message and repr(name) in message
    assert f"-m advlib.data fetch {name}" in message
    assert isinstance(error.value, FileNotFoundError)
    if fetch_missing:
        assert "torchvision" in message  # says what it tried
    # nothing that looks like a dataset is left behind
    assert not (tmp_path / data.info(name).folder).exists()
    assert not any(p.name.startswith(".fetch-") for p in tmp_path.iterdir())


# --- staging Debian's Fashion-MNIST files atomically ---------------------------------------------

@pytest.fixture
def debian_source(tmp_path, fashion_raw):
    """A folder shaped like Debian's: the test files gzipped, the training files plain (symlinks)."""
    source = tmp_path / "debian"
    source.mkdir()
    for stem in FASHION_STEMS:
        if stem.startswith("t10k"):
            with open(fashion_raw / stem, "rb") as src, gzip.open(source / f"{stem}.gz", "wb", compresslevel=1) as gz:
                shutil.copyfileobj(src, gz)
        else:
            (source / stem).symlink_to(fashion_raw / stem)
    return source


def raw_folder(root):
    return root / "FashionMNIST" / "raw"


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_only_verified_files(root):
    """Every file left in the raw folder has a final name and the right SHA-256 (no temporaries)."""
    for name in listing(raw_folder(root)):
        assert name in data.FASHION_MNIST_SHA256, f"leftover {name}"
        assert sha256(raw_folder(root) / name) == data.FASHION_MNIST_SHA256[name], name


def test_staging_interrupted_at_first_rename_leaves_nothing(tmp_path, debian_source, monkeypatch, fashion_test):
    root = tmp_path / "root"
    renames = []

    def interrupted(src, dst):
        renames.append(dst)
        raise KeyboardInterrupt("interrupted by the test")

    with monkeypatch.context() as m:
        m.setattr(data.os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt, match="interrupted by the test"):
            data._stage_fashion_mnist(debian_source, root)
    assert len(renames) == 1  # the interruption came when the first verified file was to be moved
    assert listing(raw_folder(root)) == []
    assert not data._present("fashion-mnist", root)
    with pytest.raises(data.DatasetNotFoundError, match="Fashion-MNIST"):
        data.load("fashion-mnist", "test", root=root, fetch_missing=False)

    # a later fetch from a good source completes
    monkeypatch.setattr(data, "_debian_sources", lambda root, tried: iter([debian_source]))
    monkeypatch.setattr(data, "_download_with_torchvision",
                        lambda *args: pytest.fail("Debian's files should have been enough"))
    assert data.fetch("fashion-mnist", root=root) == root / "FashionMNIST"
    assert listing(raw_folder(root)) == sorted(FASHION_STEMS)
    assert_only_verified_files(root)
    x, y = data.load("fashion-mnist", "test", root=root, fetch_missing=False)
    assert torch.equal(x, fashion_test[0]) and torch.equal(y, fashion_test[1])


def test_staging_interrupted_midway_keeps_only_verified_files(tmp_path, debian_source, monkeypatch):
    root = tmp_path / "root"
    real_replace = os.replace
    renames = []

    def third_interrupted(src, dst):
        renames.append(dst)
        if len(renames) == 3:
            raise KeyboardInterrupt("interrupted by the test")
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(data.os, "replace", third_interrupted)
        with pytest.raises(KeyboardInterrupt, match="interrupted by the test"):
            data._stage_fashion_mnist(debian_source, root)
    assert len(listing(raw_folder(root))) == 2
    assert_only_verified_files(root)
    data._stage_fashion_mnist(debian_source, root)  # resumes: the two files left are completed
    assert listing(raw_folder(root)) == sorted(FASHION_STEMS)
    assert_only_verified_files(root)


class _InterruptedReader:
    """A source file whose second read is interrupted (Ctrl-C in the middle of decompressing)."""

    def __init__(self, file):
        self.file, self.reads = file, 0

    def read(self, size=-1):
        self.reads += 1
        if self.reads > 1:
            raise KeyboardInterrupt("interrupted by the test")
        return self.file.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_staging_interrupted_while_copying_leaves_nothing(tmp_path, fashion_raw, monkeypatch):
    source = tmp_path / "debian"
    source.mkdir()
    stem = "t10k-images-idx3-ubyte"  # 7.8 MB: several chunks
    with open(fashion_raw / stem, "rb") as src, gzip.open(source / f"{stem}.gz", "wb", compresslevel=1) as gz:
        shutil.copyfileobj(src, gz)
    real_open = gzip.open
    monkeypatch.setattr(data.gzip, "open", lambda *a, **k: _InterruptedReader(real_open(*a, **k)))
    root = tmp_path / "root"
    with pytest.raises(KeyboardInterrupt, match="interrupted by the test"):
        data._stage_fashion_mnist(source, root)
    assert listing(raw_folder(root)) == []  # neither the target nor a partial temporary file


def test_staging_truncated_gzip_leaves_nothing(tmp_path, fashion_raw):
    source = tmp_path / "debian"
    source.mkdir()
    stem = "t10k-labels-idx1-ubyte"
    blob = gzip.compress((fashion_raw / stem).read_bytes())
    (source / f"{stem}.gz").write_bytes(blob[: len(blob) // 2])
    root = tmp_path / "root"
    with pytest.raises((EOFError, OSError, RuntimeError), match="ended before|truncated|corrupt|SHA-256"):
        data._stage_fashion_mnist(source, root)
    assert listing(raw_folder(root)) == []


@pytest.mark.parametrize("compressed", [False, True])
def test_staging_wrong_content_raises_and_leaves_nothing(tmp_path, fashion_raw, compressed):
    source = tmp_path / "debian"
    source.mkdir()
    stem = "t10k-labels-idx1-ubyte"
    content = bytearray((fashion_raw / stem).read_bytes())
    content[100] = (content[100] + 1) % 10  # one label changed: still a valid IDX file
    if compressed:
        (source / f"{stem}.gz").write_bytes(gzip.compress(bytes(content)))
    else:
        (source / stem).write_bytes(bytes(content))
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match="SHA-256"):
        data._stage_fashion_mnist(source, root)
    assert listing(raw_folder(root)) == []


# --- verification on load, and repair by fetch ---------------------------------------------------

@pytest.fixture
def fashion_copy(tmp_path, fashion_raw):
    """A data folder of our own: copies of the test split's files (these the tests damage) and links to
    the training files (only read), so that the real data folder is never written."""
    root = tmp_path / "copy"
    raw = raw_folder(root)
    raw.mkdir(parents=True)
    for stem in FASHION_STEMS:
        if stem.startswith("t10k"):
            shutil.copy2(fashion_raw / stem, raw / stem)  # keeps the original's modification time
        else:
            (raw / stem).symlink_to(fashion_raw / stem)
    return root


def damage(file, how: str) -> None:
    """Damage an IDX file as a bad disk or an interrupted copy would."""
    blob = bytearray(file.read_bytes())
    if how == "flip":  # one pixel or label byte: size and header intact, only the checksum tells
        blob[len(blob) // 2] ^= 0xFF
    elif how == "truncate":
        del blob[-3:]
    elif how == "header":  # the number of items
        blob[4:8] = struct.pack(">I", 9_999)
    file.write_bytes(bytes(blob))


COMPLAINT = {"flip": "wrong SHA-256 checksum", "truncate": "wrong size", "header": "wrong IDX header"}


@pytest.mark.parametrize("how", ["flip", "truncate", "header"])
@pytest.mark.parametrize("stem", ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
@pytest.mark.parametrize("fetch_missing", [True, False])
def test_damaged_fashion_mnist_file_raises_naming_it(fashion_copy, monkeypatch, stem, how, fetch_missing):
    monkeypatch.setattr(data, "fetch", lambda *a, **k: pytest.fail("a damaged file is reported, not fetched"))
    data.load("fashion-mnist", "test", root=fashion_copy)  # good, and now stamped
    file = raw_folder(fashion_copy) / stem
    damage(file, how)
    with pytest.raises(data.DatasetCorruptError, match=re.escape(f"{file}: {COMPLAINT[how]}")) as error:
        data.load("fashion-mnist", "test", root=fashion_copy, fetch_missing=fetch_missing)
    message = str(error.value)
    assert "Fashion-MNIST" in message and "-m advlib.data fetch fashion-mnist" in message
    assert f"{data.config.DATA_ENV}={fashion_copy}" in message  # the repair command points at this folder
    assert isinstance(error.value, ValueError)
    data.load("fashion-mnist", "train", root=fashion_copy)  # the other split's files are fine


@pytest.mark.parametrize("how", ["truncate", "header"])
@pytest.mark.parametrize("stem", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_damaged_mnist_file_raises_naming_it(tmp_path, small_idx, stem, how):
    write_mnist(tmp_path)
    file = tmp_path / "MNIST" / "raw" / stem
    damage(file, how)
    split = "train" if stem.startswith("train") else "test"
    with pytest.raises(data.DatasetCorruptError, match=re.escape(f"{file}: {COMPLAINT[how]}")) as error:
        data.load("mnist", split, root=tmp_path, fetch_missing=False)
    assert "-m advlib.data fetch mnist" in str(error.value)


def test_idx_header_and_size_are_checked_against_the_real_layout(tmp_path):
    """The expected dimensions are the datasets' own: 60,000 and 10,000 images of 28x28 (not the small
    files of the MNIST tests), so a small file in their place is damaged."""
    write_mnist(tmp_path)
    with pytest.raises(data.DatasetCorruptError, match="dimensions 7 x 28 x 28, expected .*60000 x 28 x 28"):
        data.load("mnist", "train", root=tmp_path, fetch_missing=False)


def test_fetch_repairs_a_damaged_file(fashion_copy, debian_source, monkeypatch, fashion_test, capsys):
    monkeypatch.setenv(data.config.DATA_ENV, str(fashion_copy))
    monkeypatch.setattr(data, "_debian_sources", lambda root, tried: iter([debian_source]))
    monkeypatch.setattr(data, "_download_with_torchvision",
                        lambda *args: pytest.fail("Debian's files should have been enough"))
    file = raw_folder(fashion_copy) / "t10k-images-idx3-ubyte"
    damage(file, "flip")
    with pytest.raises(data.DatasetCorruptError, match="t10k-images-idx3-ubyte"):
        data.load("fashion-mnist", "test")
    assert data.main(["fetch", "fashion-mnist"]) == 0  # the command the error names
    assert str(fashion_copy / "FashionMNIST") in capsys.readouterr().out
    assert sha256(file) == data.FASHION_MNIST_SHA256[file.name]
    assert listing(raw_folder(fashion_copy)) == sorted(FASHION_STEMS)  # no temporary file left
    x, y = data.load("fashion-mnist", "test")
    assert torch.equal(x, fashion_test[0]) and torch.equal(y, fashion_test[1])


def test_fetch_that_cannot_repair_says_so(fashion_copy, monkeypatch, capsys):
    monkeypatch.setattr(data, "_debian_sources", lambda root, tried: iter(()))
    monkeypatch.setattr(data, "_download_with_torchvision", lambda name, root, tried: tried.append("a mirror"))
    file = raw_folder(fashion_copy) / "t10k-labels-idx1-ubyte"
    damage(file, "truncate")
    with pytest.raises(data.DatasetCorruptError, match=re.escape(f"{file}: wrong size")) as error:
        data.fetch("fashion-mnist", root=fashion_copy)
    assert "Tried: a mirror" in str(error.value)
    monkeypatch.setenv(data.config.DATA_ENV, str(fashion_copy))
    assert data.main(["fetch", "fashion-mnist"]) == 1
    assert str(file) in capsys.readouterr().err


def test_stamp_makes_later_loads_skip_the_hash(fashion_copy, monkeypatch):
    hashed = []
    real_sha256 = data._sha256

    def counting(file):
        hashed.append(file.name)
        return real_sha256(file)

    monkeypatch.setattr(data, "_sha256", counting)
    data.load("fashion-mnist", "test", root=fashion_copy)
    assert sorted(hashed) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    stamp = json.loads((fashion_copy / "FashionMNIST" / data.STAMP).read_text())
    labels = raw_folder(fashion_copy) / "t10k-labels-idx1-ubyte"
    assert stamp[labels.name] == {"path": str(labels.resolve()), "size": 10_008,
                                  "mtime_ns": labels.stat().st_mtime_ns,
                                  "sha256": data.FASHION_MNIST_SHA256[labels.name]}
    data.load("fashion-mnist", "test", root=fashion_copy)
    data.verify("fashion-mnist", root=fashion_copy, splits=("test",))
    assert len(hashed) == 2  # the stamp stood for the hash
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 1_000_000_000))
    data.load("fashion-mnist", "test", root=fashion_copy)
    assert hashed[2:] == [labels.name]  # a file that changed is hashed again, and only that one


@pytest.mark.parametrize("problem", ["unwritable", "garbage"])
def test_a_stamp_that_cannot_be_written_or_read_does_not_break_loading(fashion_copy, monkeypatch, problem):
    hashed = []
    real_sha256 = data._sha256
    monkeypatch.setattr(data, "_sha256", lambda file: hashed.append(file.name) or real_sha256(file))
    stamp = fashion_copy / "FashionMNIST" / data.STAMP
    if problem == "unwritable":
        def refuse(src, dst):
            raise PermissionError(13, "read-only file system", str(dst))
        monkeypatch.setattr(data.os, "replace", refuse)
    else:
        stamp.write_text("{not json")
    for _ in range(2):
        x, y = data.load("fashion-mnist", "test", root=fashion_copy)
        assert x.shape == (10_000, 1, 28, 28) and len(y) == 10_000
    assert len(hashed) == (4 if problem == "unwritable" else 2)  # without a stamp every load hashes
    leftovers = [p.name for p in stamp.parent.iterdir() if p.name not in ("raw", data.STAMP)]
    assert leftovers == []  # a failed stamp write leaves no temporary file
    assert stamp.exists() == (problem == "garbage")


# --- subsets and loaders -------------------------------------------------------------------------

def indexed(n=100):
    """Images whose every pixel is their index, so pairs (x, y) can be checked after a subset."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).div(256).contiguous()
    return x, torch.arange(n)


def test_subset_is_seeded_and_keeps_pairs():
    x, y = indexed()
    xa, ya = data.subset(x, y, 30, seed=1)
    xb, yb = data.subset(x, y, 30, seed=1)
    xc, yc = data.subset(x, y, 30, seed=2)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(ya, yc)
    assert len(ya) == 30 and len(set(ya.tolist())) == 30  # without replacement
    assert torch.equal(xa[:, 0, 0, 0] * 256, ya.float())  # images stay with their labels
    assert not torch.equal(ya, torch.arange(30))  # random, not the first 30


def test_subset_all_and_bad_sizes():
    x, y = indexed(10)
    for n in (None, 10, 50):
        xs, ys = data.subset(x, y, n)
        assert torch.equal(xs, x) and torch.equal(ys, y)
    with pytest.raises(ValueError, match="positive"):
        data.subset(x, y, 0)
    with pytest.raises(ValueError, match="9"):
        data.subset(x, y[:9], 5)


def epochs_of(loader, epochs=2):
    return [torch.cat([yb for _, yb in loader]).tolist() for _ in range(epochs)]


def test_loader_shuffles_reproducibly():
    x, y = indexed(50)
    a = epochs_of(data.loader(x, y, batch_size=8, shuffle=True, seed=3))
    b = epochs_of(data.loader(x, y, batch_size=8, shuffle=True, seed=3))
    c = epochs_of(data.loader(x, y, batch_size=8, shuffle=True, seed=4))
    assert a == b
    assert a != c
    assert a[0] != a[1]  # each epoch its own order
    assert all(sorted(order) == list(range(50)) for order in a)  # every example once per epoch
    assert a[0] != list(range(50))
    plain = data.loader(x, y, batch_size=8)
    assert epochs_of(plain) == [list(range(50))] * 2
    assert [len(yb) for _, yb in plain] == [8] * 6 + [2]


def test_loader_rejects_mismatched_lengths():
    x, y = indexed(10)
    with pytest.raises(ValueError, match="10 examples but y has 5"):
        data.loader(x, y[:5])
