"""Datasets as float tensors in [0,1] shaped (N,C,H,W) with int64 labels, and loaders over them.

Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) is the default dataset of the course; MNIST (LeCun et al.
1998) and CIFAR-10 (Krizhevsky 2009) load too. The files live in the data folder
(:func:`advlib.config.data_dir`) in torchvision's on-disk layout, and torchvision's dataset classes
read them. When they are missing, :func:`fetch` looks, in order, for

1. the files of Debian's package ``dataset-fashion-mnist`` (installed, or fetched without root with
   ``apt-get download`` and unpacked with ``dpkg -x``), for Fashion-MNIST;
2. torchvision's download, when its servers can be reached (checked with a short timeout first).

Every file is verified and moved into place atomically, so an interrupted fetch never leaves a file
that is later taken for a good one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
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


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; a ``ValueError`` for a name advlib does not know."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def classes(name: str = "fashion-mnist") -> tuple[str, ...]:
    """The class names of dataset ``name``, indexed by label."""
    return info(name).classes


def fetch_command(name: str) -> str:
    """The shell command that fetches dataset ``name`` into the data folder."""
    return f"{Path(sys.executable).name} -m advlib.data fetch {name}"


def load(name: str = "fashion-mnist", split: str = "train", *, root: str | Path | None = None,
         fetch_missing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole split of a dataset as ``(x, y)``.

    ``x`` is float32 in [0,1] shaped (N,C,H,W); ``y`` is int64 shaped (N,). ``root`` defaults to
    :func:`advlib.config.data_dir`. With ``fetch_missing`` (the default) missing files are fetched
    first (see :func:`fetch`); otherwise, and when no fetch succeeds, a :class:`DatasetNotFoundError`
    names the dataset and the command that fetches it.
    """
    meta = info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root) if root is not None else config.data_dir()
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
    """Make dataset ``name`` present under ``root`` (default: the data folder); return its folder.

    Tries Debian's ``dataset-fashion-mnist`` files (Fashion-MNIST only), then torchvision's download
    when its server answers within seconds. Raises :class:`DatasetNotFoundError` naming what was tried.
    """
    info(name)
    root = Path(root) if root is not None else config.data_dir()
    root.mkdir(parents=True, exist_ok=True)
    tried: list[str] = []
    if _present(name, root):
        return root / info(name).folder
    if name == "fashion-mnist":
        for source in _debian_sources(root, tried):
            _stage_fashion_mnist(source, root)
            if _present(name, root):
                return root / info(name).folder
    _download_with_torchvision(name, root, tried)
    if _present(name, root):
        return root / info(name).folder
    raise DatasetNotFoundError(_missing_message(name, root, tried))


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
    """Decompress Debian's IDX files, check their SHA-256, and move each into place atomically."""
    raw = root / info("fashion-mnist").folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, expected in FASHION_MNIST_SHA256.items():
        target = raw / stem
        gz, plain = source / f"{stem}.gz", source / stem
        if target.exists() or not (gz.exists() or plain.exists()):
            continue
        opener = gzip.open if gz.exists() else open
        out = tempfile.NamedTemporaryFile(dir=raw, prefix=f".{stem}.", delete=False)
        try:  # the temporary file goes, whatever interrupts the copy; only a verified file is renamed
            with out:
                digest = hashlib.sha256()
                with opener(gz if gz.exists() else plain, "rb") as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != expected:
                raise RuntimeError(f"{source / stem} does not have the SHA-256 of Fashion-MNIST's {stem}; "
                                   "the Debian package files look corrupt")
            os.chmod(out.name, 0o644)  # temporary files are private; a data folder may be shared
            os.replace(out.name, target)
        except BaseException:
            Path(out.name).unlink(missing_ok=True)
            raise


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


def _missing_message(name: str, root: Path, tried: list[str]) -> str:
    lines = [f"{info(name).title} ({name!r}) was not found under {root}."]
    if tried:
        lines.append("Tried: " + "; ".join(tried) + ".")
    lines.append(f"Fetch it with `{fetch_command(name)}` (needs torchvision's servers"
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
