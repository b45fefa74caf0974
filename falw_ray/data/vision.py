"""CIFAR-10/100 and Tiny-ImageNet read from their standard on-disk layouts into ``DatasetArrays``."""
from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import download_and_extract_archive

from .arrays import DatasetArrays

TINY_CACHE = "falw_ray_cache.npz"
"""Decoded Tiny-ImageNet arrays, kept next to the JPEGs: decoding 110k files takes minutes, loading this seconds."""


def _presence_only(cls: type[CIFAR10]) -> type[CIFAR10]:
    """A copy of ``cls`` that checks its files exist rather than their md5, so re-packed or test-sized copies load."""
    return type(f"Local{cls.__name__}", (cls,), {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


_LocalCIFAR10 = _presence_only(CIFAR10)
_LocalCIFAR100 = _presence_only(CIFAR100)


def _load_cifar(cls: type[CIFAR10], name: str, data_dir: str | os.PathLike, download: bool,
                num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> DatasetArrays:
    root = Path(data_dir)
    folder = root / cls.base_folder
    files = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    reason = "download is off"
    if download and not all((folder / f).is_file() for f in files):
        try:  # the real archive checksum still guards what is downloaded
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except (OSError, RuntimeError, tarfile.TarError) as exc:
            reason = "download failed: " + " ".join(str(exc).split())
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        what = f"{folder}{os.sep} not found" if not folder.is_dir() else f"{missing} missing from {folder}{os.sep}"
        raise FileNotFoundError(
            f"{name}: {what} ({reason}); set download: true on a machine "
            f"with network, or extract {cls.filename} (the python version) into {root}{os.sep}"
        ) from None
    splits = [cls(str(root), train=train) for train in (True, False)]
    xs = [np.ascontiguousarray(s.data.transpose(0, 3, 1, 2), dtype=np.uint8) for s in splits]
    ys = [np.asarray(s.targets, dtype=np.int64) for s in splits]
    return DatasetArrays(name=name, train_x=xs[0], train_y=ys[0], test_x=xs[1], test_y=ys[1],
                         num_classes=num_classes, mean=mean, std=std, scale=255.0, crop_pad=4, flip=True)


def load_cifar10(data_dir: str | os.PathLike, download: bool = False) -> DatasetArrays:
    return _load_cifar(_LocalCIFAR10, "cifar10", data_dir, download, 10,
                       (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def load_cifar100(data_dir: str | os.PathLike, download: bool = False) -> DatasetArrays:
    return _load_cifar(_LocalCIFAR100, "cifar100", data_dir, download, 100,
                       (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def _read_images(paths: list[Path], size: int = 64) -> np.ndarray:
    """Decode JPEGs into uint8 (N, 3, size, size); grey images in the real set become RGB."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
        if pixels.shape != (size, size, 3):
            raise ValueError(f"{path}: expected a {size}x{size} image, got {pixels.shape[1]}x{pixels.shape[0]}")
        out[i] = pixels.transpose(2, 0, 1)
    return out


def _decode_tinyimagenet(root: Path, wnids: list[str]) -> dict[str, np.ndarray]:
    label = {w: i for i, w in enumerate(wnids)}
    train_paths: list[Path] = []
    train_y: list[int] = []
    for wnid in wnids:
        paths = sorted((root / "train" / wnid / "images").glob("*.JPEG"))
        if not paths:
            raise FileNotFoundError(f"tinyimagenet: no .JPEG images in {root / 'train' / wnid / 'images'}")
        train_paths += paths
        train_y += [label[wnid]] * len(paths)
    annotations = root / "val" / "val_annotations.txt"
    test_paths: list[Path] = []
    test_y: list[int] = []
    for lineno, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        filename, wnid = line.split("\t")[:2]
        if wnid not in label:
            raise ValueError(f"{annotations}:{lineno}: wnid {wnid!r} is not in wnids.txt")
        test_paths.append(root / "val" / "images" / filename)
        test_y.append(label[wnid])
    return {"train_x": _read_images(train_paths), "train_y": np.asarray(train_y, dtype=np.int64),
            "test_x": _read_images(test_paths), "test_y": np.asarray(test_y, dtype=np.int64)}


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write via a temp file and rename, so a crash or a parallel loader never sees half a cache."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_tinyimagenet(data_dir: str | os.PathLike, download: bool = False) -> DatasetArrays:
    """Tiny-ImageNet-200 from its unzipped folder (``download`` is not supported); official val images are the test set."""
    given = Path(data_dir)
    root = given if (given / "wnids.txt").is_file() else given / "tiny-imagenet-200"
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise FileNotFoundError(
            f"tinyimagenet: {wnids_file} not found (download is not supported); unzip tiny-imagenet-200.zip so "
            f"that {root}{os.sep} holds wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
            f"val/val_annotations.txt"
        )
    wnids = [w.strip() for w in wnids_file.read_text().splitlines() if w.strip()]
    cache = root / TINY_CACHE
    if cache.is_file() and cache.stat().st_mtime_ns >= wnids_file.stat().st_mtime_ns:
        with np.load(cache) as npz:
            arrays = {k: npz[k] for k in npz.files}
    else:
        arrays = _decode_tinyimagenet(root, wnids)
        try:
            _save_atomically(cache, arrays)
        except OSError:
            pass  # a read-only copy of the data still loads, just without the cache
    return DatasetArrays(name="tinyimagenet", **arrays, num_classes=len(wnids),
                         mean=(0.4802, 0.4481, 0.3975), std=(0.2302, 0.2265, 0.2262),
                         scale=255.0, crop_pad=4, flip=True)
