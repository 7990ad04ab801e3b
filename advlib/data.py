"""Datasets as float tensors in [0,1] shaped (N,C,H,W) with int64 labels, and loaders over them.

Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) is the default dataset of the course; MNIST (LeCun et al.
1998) and CIFAR-10 (Krizhevsky 2009) load too. The files live in the data folder
(:func:`advlib.config.data_dir`) in torchvision's on-disk layout, and torchvision's dataset classes
read them. When they are missing, :func:`fetch` looks, in order, for

1. the files of Debian's package ``dataset-fashion-mnist`` (installed, or fetched without root with
   ``apt-get download`` and unpacked with ``dpkg -x``), for Fashion-MNIST;
2. torchvision's download, when its servers can be reached (checked with a short timeout first).

Every file is verified and moved into place atomically, so an interrupted fetch never leaves a file
that is later taken for a good one. Loading verifies the IDX files of Fashion-MNIST and MNIST again (size
and header every time, the SHA-256 once per file, see :func:`verify`): a damaged file is an error that
names it and the command that fetches it again, never a silently wrong dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch.utils.data import DataLoader, TensorDataset

from . import config

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("usr/share/datasets/fashion-mnist")

# SHA-256 of the decompressed IDX files of Fashion-MNIST (as shipped by Debian's package, which holds
# the authors' files); checked before a file staged from that package is moved into place.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# The known SHA-256 of each dataset's IDX files. MNIST's files are checked by size and header only.
SHA256 = {"fashion-mnist": FASHION_MNIST_SHA256}

# The IDX files of Fashion-MNIST and MNIST (same names, same layout): the magic number (0x08, unsigned
# bytes, then the number of dimensions) and the dimensions their header must hold; these fix the size too.
IDX_DATASETS = ("fashion-mnist", "mnist")
IDX_FILES = {
    "train-images-idx3-ubyte": (0x803, (60_000, 28, 28)),
    "train-labels-idx1-ubyte": (0x801, (60_000,)),
    "t10k-images-idx3-ubyte": (0x803, (10_000, 28, 28)),
    "t10k-labels-idx1-ubyte": (0x801, (10_000,)),
}
IDX_PREFIX = {"train": "train", "test": "t10k"}
STAMP = ".verified.json"  # in a dataset's folder: path, size, mtime and SHA-256 of each file hashed


@dataclass(frozen=True)
class DatasetInfo:
    """What advlib knows of a dataset: torchvision's class, the folder it reads, shape and classes."""

    title: str
    torchvision_class: str
    folder: str  # relative to the data folder: the one torchvision reads and a fetch moves into place
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per-channel mean and standard deviation of the training images,
    std: tuple[float, ...]  # used by the normalisation layer that opens each model


DATASETS = {
    "fashion-mnist": DatasetInfo(
        "Fashion-MNIST", "FashionMNIST", "FashionMNIST", (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (0.2860,), (0.3530,)),
    "mnist": DatasetInfo(
        "MNIST", "MNIST", "MNIST", (1, 28, 28), tuple(str(d) for d in range(10)),
        (0.1307,), (0.3081,)),
    "cifar10": DatasetInfo(
        "CIFAR-10", "CIFAR10", "cifar-10-batches-py", (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
SPLITS = ("train", "test")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is in none of the places advlib looks, and it could not be fetched."""


class DatasetCorruptError(ValueError):
    """A dataset file is damaged: wrong size, wrong IDX header or wrong SHA-256. Fetching repairs it."""


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; a ``ValueError`` for a name advlib does not know."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def classes(name: str = "fashion-mnist") -> tuple[str, ...]:
    """The class names of dataset ``name``, indexed by label."""
    return info(name).classes


def fetch_command(name: str, root: Path | None = None) -> str:
    """The shell command that fetches dataset ``name`` into the data folder (or into ``root``)."""
    command = f"{Path(sys.executable).name} -m advlib.data fetch {name}"
    if root is not None and Path(root).resolve() != config.data_dir().resolve():
        command = f"{config.DATA_ENV}={shlex.quote(str(root))} {command}"
    return command


def load(name: str = "fashion-mnist", split: str = "train", *, root: str | Path | None = None,
         fetch_missing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole split of a dataset as ``(x, y)``.

    ``x`` is float32 in [0,1] shaped (N,C,H,W); ``y`` is int64 shaped (N,). ``root`` defaults to
    :func:`advlib.config.data_dir`. With ``fetch_missing`` (the default) missing files are fetched
    first (see :func:`fetch`); otherwise, and when no fetch succeeds, a :class:`DatasetNotFoundError`
    names the dataset and the command that fetches it. A damaged file raises :class:`DatasetCorruptError`
    (see :func:`verify`).
    """
    meta = info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root) if root is not None else config.data_dir()
    verify(name, root=root, splits=(split,))
    try:
        dataset = _torchvision_dataset(name, root, train=split == "train", download=False)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        if not fetch_missing:
            raise DatasetNotFoundError(_missing_message(name, root, [])) from None
        fetch(name, root=root)
        dataset = _torchvision_dataset(name, root, train=split == "train", download=False)
    images = torch.as_tensor(dataset.data)
    if images.ndim == 3:  # (N,H,W) grey images
        images = images.unsqueeze(1)
    else:  # CIFAR-10 keeps (N,H,W,C)
        images = images.permute(0, 3, 1, 2)
    x = images.contiguous().float().div_(255.0)
    y = torch.as_tensor(dataset.targets, dtype=torch.int64)
    if x.shape[1:] != meta.shape or len(x) != len(y):
        raise RuntimeError(f"{meta.title} files under {root} hold images of shape {tuple(x.shape)} and "
                           f"{len(y)} labels; expected (N, {meta.shape}) with N labels. Delete "
                           f"{root / meta.folder} and run `{fetch_command(name)}`.")
    return x, y


def fetch(name: str = "fashion-mnist", *, root: str | Path | None = None) -> Path:
    """Make dataset ``name`` present and intact under ``root`` (default: the data folder); return its folder.

    Files already there are verified (:func:`verify`); missing and damaged ones are fetched again, from
    Debian's ``dataset-fashion-mnist`` files (Fashion-MNIST only), then from torchvision's download when
    its server answers within seconds. Raises :class:`DatasetNotFoundError` naming what was tried, or
    :class:`DatasetCorruptError` when damaged files are left that no source could replace.
    """
    info(name)
    root = Path(root) if root is not None else config.data_dir()
    root.mkdir(parents=True, exist_ok=True)
    tried: list[str] = []
    damaged = _damaged(name, root, SPLITS)
    if not damaged and _present(name, root):
        return root / info(name).folder
    if name == "fashion-mnist":
        for source in _debian_sources(root, tried):
            _stage_fashion_mnist(source, root)  # replaces missing and damaged files
            if _intact(name, root):
                return root / info(name).folder
    _download_with_torchvision(name, root, tried)
    if _intact(name, root):
        return root / info(name).folder
    damaged = _damaged(name, root, SPLITS)
    if damaged:
        raise DatasetCorruptError(_damaged_message(name, root, damaged, tried))
    raise DatasetNotFoundError(_missing_message(name, root, tried))


def verify(name: str = "fashion-mnist", *, root: str | Path | None = None,
           splits: tuple[str, ...] = SPLITS) -> None:
    """Check the IDX files of ``name`` (Fashion-MNIST, MNIST) present under ``root`` for ``splits``.

    Every call checks each file's size and IDX header (magic number and dimensions), which costs a
    ``stat`` and a few bytes read. The SHA-256, where advlib knows it (Fashion-MNIST), costs a read of the
    whole file, so it is checked once: a stamp in the dataset's folder then records the file's path, size,
    modification time and hash, and later calls skip the hash until the file changes. Raises
    :class:`DatasetCorruptError` naming each damaged file, what is wrong and the command that repairs it.
    Missing files are left to the loader (which fetches them); CIFAR-10's batches are checked by
    torchvision (their MD5s).
    """
    root = Path(root) if root is not None else config.data_dir()
    damaged = _damaged(name, root, splits)
    if damaged:
        raise DatasetCorruptError(_damaged_message(name, root, damaged))


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``n`` examples of ``(x, y)`` (all of them when ``n`` is None)."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if n is None or n >= len(x):
        return x, y
    if n < 1:
        raise ValueError(f"subset size must be positive, got {n}")
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[index], y[index]


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, *, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    """A DataLoader over tensors ``(x, y)``; shuffling, if asked, is seeded so epochs repeat exactly."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)


def load_subsets(name: str = "fashion-mnist", train_size: int | None = None, test_size: int | None = None,
                 seed: int = 0):
    """``(x_train, y_train), (x_test, y_test)``, each a seeded subset of the given size (None: all)."""
    x, y = load(name, "train")
    xt, yt = load(name, "test")
    return subset(x, y, train_size, seed), subset(xt, yt, test_size, seed)


# --- verifying the files -------------------------------------------------------------------------

def _damaged(name: str, root: Path, splits: tuple[str, ...]) -> list[str]:
    """``"file: what is wrong"`` for every damaged IDX file of ``name`` present under ``root``."""
    if name not in IDX_DATASETS:
        return []
    raw = root / info(name).folder / "raw"
    files = [raw / stem for split in splits for stem in IDX_FILES if stem.startswith(IDX_PREFIX[split])]
    found = ((file, _problem(name, file)) for file in files if file.is_file())
    return [f"{file}: {problem}" for file, problem in found if problem]


def _problem(name: str, file: Path) -> str | None:
    """What is wrong with IDX file ``file`` of dataset ``name`` (its header, size or SHA-256); None if nothing."""
    magic, dims = IDX_FILES[file.name]
    expected = (magic, *dims)
    with open(file, "rb") as f:
        header = f.read(4 * len(expected))
    if len(header) < 4 * len(expected):
        return f"wrong IDX header: the file holds only {len(header)} bytes, expected {_idx_text(expected)}"
    found = struct.unpack(f">{len(expected)}I", header)
    if found != expected:
        return f"wrong IDX header: {_idx_text(found)}, expected {_idx_text(expected)}"
    size, expected_size = file.stat().st_size, len(header) + math.prod(dims)
    if size != expected_size:
        return f"wrong size: {size:,} bytes, expected {expected_size:,} (a truncated or overlong copy)"
    sha = SHA256.get(name, {}).get(file.name)
    if sha is not None and not _has_sha256(file, sha):
        return f"wrong SHA-256 checksum: its content is not {info(name).title}'s {file.name}"
    return None


def _idx_text(header: tuple[int, ...]) -> str:
    return f"magic {header[0]:#06x}, dimensions {' x '.join(str(d) for d in header[1:])}"


def _sha256(file: Path) -> str:
    """The SHA-256 of ``file``, read in chunks."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _has_sha256(file: Path, expected: str) -> bool:
    """Whether ``file`` hashes to ``expected``: hashed once, then taken from the stamp in the dataset's
    folder for as long as the file's path, size and modification time are those the stamp records."""
    stat = file.stat()  # before hashing: a file changed while it is hashed gets another stamp next time
    entry = {"path": str(file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}
    stamp = file.parent.parent / STAMP
    try:
        stamps = json.loads(stamp.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: hash again
        stamps = {}
    stamps = stamps if isinstance(stamps, dict) else {}
    if stamps.get(file.name) == entry:
        return True
    if _sha256(file) != expected:
        return False
    try:  # a stamp only saves time: a data folder we cannot write is verified by hashing every time
        with _atomic_file(stamp) as out:
            out.write(json.dumps({**stamps, file.name: entry}, indent=1).encode())
    except OSError:
        pass
    return True


def _intact(name: str, root: Path) -> bool:
    """Whether every file of ``name`` is present under ``root`` and none is damaged."""
    return not _damaged(name, root, SPLITS) and _present(name, root)


@contextmanager
def _atomic_file(target: Path):
    """A temporary file beside ``target`` to write into; when the block ends without an error it is
    fsynced, made readable to all and renamed over ``target``; on any error or interruption it goes."""
    out = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False)
    try:
        with out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(out.name, 0o644)  # temporary files are private; a data folder may be shared
        os.replace(out.name, target)
    except BaseException:
        Path(out.name).unlink(missing_ok=True)
        raise


# --- where the files come from ------------------------------------------------------------------

def _torchvision_dataset(name: str, root: Path, *, train: bool, download: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, info(name).torchvision_class)
    return cls(str(root), train=train, download=download)


def _present(name: str, root: Path) -> bool:
    """Whether torchvision's class finds the files of ``name`` (and, for CIFAR-10, their checksums)."""
    try:
        _torchvision_dataset(name, root, train=False, download=False)
        _torchvision_dataset(name, root, train=True, download=False)
    except RuntimeError:
        return False
    return True


def _debian_sources(root: Path, tried: list[str]):
    """Folders that may hold Debian's Fashion-MNIST files: installed, unpacked before, or fetched now."""
    installed = Path("/") / DEBIAN_DIR
    tried.append(f"Debian's package {DEBIAN_PACKAGE} installed ({installed})")
    if installed.is_dir():
        yield installed
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        tried.append("apt-get download (no apt-get or dpkg on this machine)")
        return
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        tried.append(f"`apt-get download {DEBIAN_PACKAGE}` and `dpkg -x`")
        deb = _apt_download(Path(tmp))
        if deb is None:
            return
        unpacked = Path(tmp) / "unpacked"
        result = subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], capture_output=True, text=True)
        if result.returncode == 0:
            yield unpacked / DEBIAN_DIR


def _apt_download(folder: Path) -> Path | None:
    """Download Debian's ``.deb`` into ``folder`` (refreshing apt's lists once if root); None on failure."""
    def attempt() -> Path | None:
        try:
            subprocess.run(["apt-get", "download", DEBIAN_PACKAGE], cwd=folder, capture_output=True,
                           timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return None
        debs = sorted(folder.glob(f"{DEBIAN_PACKAGE}_*.deb"))
        return debs[0] if debs else None

    deb = attempt()
    if deb is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300, check=False)
        deb = attempt()
    return deb


def _stage_fashion_mnist(source: Path, root: Path) -> None:
    """Decompress Debian's IDX files, check their SHA-256, and move each into place atomically,
    for every file that is missing or damaged (a good file is kept)."""
    raw = root / info("fashion-mnist").folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, expected in FASHION_MNIST_SHA256.items():
        target = raw / stem
        gz, plain = source / f"{stem}.gz", source / stem
        if (target.exists() and _problem("fashion-mnist", target) is None) or not (gz.exists() or plain.exists()):
            continue
        opener = gzip.open if gz.exists() else open
        # the temporary file goes, whatever interrupts the copy; only a verified file is renamed
        with _atomic_file(target) as out, opener(gz if gz.exists() else plain, "rb") as src:
            digest = hashlib.sha256()
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != expected:
                raise RuntimeError(f"{source / stem} does not have the SHA-256 of Fashion-MNIST's {stem}; "
                                   "the Debian package files look corrupt")


def _reachable(url: str, timeout: float = 5.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _download_urls(name: str) -> list[str]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, info(name).torchvision_class)
    return list(getattr(cls, "mirrors", [])) or [cls.url]


def _download_with_torchvision(name: str, root: Path, tried: list[str]) -> None:
    """torchvision's download (which checks its MD5s) into a temporary folder, then moved into place."""
    urls = _download_urls(name)
    tried.append(f"torchvision's download from {urlparse(urls[0]).hostname}")
    if not any(_reachable(url) for url in urls):
        tried[-1] += " (not reachable: offline?)"
        return
    folder = info(name).folder
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            try:
                _torchvision_dataset(name, Path(tmp), train=True, download=True)
                _torchvision_dataset(name, Path(tmp), train=False, download=True)
            except (OSError, RuntimeError) as error:
                tried[-1] += f" (failed: {error})"
                return
            target = root / folder
            if target.exists():  # an incomplete earlier copy; the complete one replaces it
                shutil.rmtree(target)
            os.replace(Path(tmp) / folder, target)
    finally:
        socket.setdefaulttimeout(previous)


def _damaged_message(name: str, root: Path, damaged: list[str], tried: list[str] | None = None) -> str:
    lines = [f"{info(name).title} ({name!r}) has damaged files under {root}:", *(f"  {d}" for d in damaged)]
    if tried:
        lines.append("Fetching them again failed. Tried: " + "; ".join(tried) + ".")
    lines.append(f"Repair with `{fetch_command(name, root)}` (it verifies every file and fetches the damaged "
                 "ones again).")
    return "\n".join(lines)


def _missing_message(name: str, root: Path, tried: list[str]) -> str:
    lines = [f"{info(name).title} ({name!r}) was not found under {root}."]
    if tried:
        lines.append("Tried: " + "; ".join(tried) + ".")
    lines.append(f"Fetch it with `{fetch_command(name, root)}` (needs torchvision's servers"
                 + (", or Debian's package registry: `apt-get download dataset-fashion-mnist` and "
                    "`dpkg -x` it" if name == "fashion-mnist" else "") + ").")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m advlib.data fetch NAME [NAME ...]``: fetch datasets into the data folder."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advlib.data", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("names", nargs="*", default=["fashion-mnist"], metavar="NAME",
                        help=f"datasets to fetch: {', '.join(DATASETS)}")
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            print(f"{name}: {fetch(name)}")
        except (DatasetNotFoundError, ValueError) as error:
            print(error, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
