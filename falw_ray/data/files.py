"""A researcher's own data: an .npz file in the MedMNIST layout, an image folder in torchvision's
ImageFolder layout, or arrays a loader of their own returns, as ``DatasetArrays``.

Every problem is one line naming the file and what is wrong (``DataFileError``). Images become
uint8 (N, C, H, W): channels-last arrays are transposed, float images in [0, 1] (or [0, 255]) are
scaled to 0..255 and rounded. Labels are integers 0..C-1, C = the largest label + 1. No augmentation
(crop_pad 0, no flip): nothing is known of what suits the data. ``digest`` is the content hash that
goes into a scenario's store key, so a changed file never reuses a baseline trained on the old one.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..console import first_line
from .arrays import DatasetArrays

LAYOUT = ("train_images", "train_labels", "test_images", "test_labels")
OPTIONAL = ("val_images", "val_labels")
LAYOUT_HELP = "an npz data set holds train_images, train_labels, test_images, test_labels, and optionally val_images, val_labels"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""What torchvision's ImageFolder reads; other files in a class folder are ignored, as there."""


class DataFileError(ValueError):
    """A data file (or folder, or loader) that cannot be used; the message is one line naming it."""


def load_npz(data_file: str | os.PathLike, name: str = "npz") -> DatasetArrays:
    path = Path(data_file)
    if not path.is_file():
        raise DataFileError(f"{path}: data_file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataFileError(f"{path}: not a readable .npz file ({first_line(e)})") from None
    return from_layout(arrays, str(path), name)


def from_layout(arrays: Mapping[str, np.ndarray], source: str, name: str) -> DatasetArrays:
    """``DatasetArrays`` from arrays in the MedMNIST layout (train_images, train_labels, optional
    val_images / val_labels, test_images, test_labels); a given validation split becomes FaLW's
    unseen data (``val_rows``) instead of one carved out of the training images."""
    for key in LAYOUT:
        if key not in arrays:
            raise DataFileError(f"{source}: missing key {key!r} ({LAYOUT_HELP})")
    if ("val_images" in arrays) != ("val_labels" in arrays):
        given, missing = ("val_images", "val_labels") if "val_images" in arrays else ("val_labels", "val_images")
        raise DataFileError(f"{source}: {given} is given but {missing} is missing")
    splits = ["train", *(["val"] if "val_images" in arrays else []), "test"]
    x = {s: _images(np.asarray(arrays[f"{s}_images"]), source, f"{s}_images") for s in splits}
    y = {s: _labels(np.asarray(arrays[f"{s}_labels"]), source, f"{s}_labels") for s in splits}
    for s in splits:
        if len(x[s]) != len(y[s]):
            raise DataFileError(f"{source}: {s}_labels has {len(y[s])} labels but {s}_images has {len(x[s])} images")
        if x[s].shape[1:] != x["train"].shape[1:]:
            raise DataFileError(f"{source}: {s}_images are {_shape(x[s])}, train_images {_shape(x['train'])}: "
                                "every split needs the same image size and channels")
    return _assemble(name, x, y, source)


def load_image_folder(data_dir: str | os.PathLike, name: str = "image_folder") -> DatasetArrays:
    """``data_dir/train/<class>/*`` and ``data_dir/test/<class>/*``; classes are the train folder's
    subfolders in sorted order (ImageFolder's rule), and test may hold only some of them."""
    root = Path(data_dir)
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) if (root / "train").is_dir() else []
    if not classes:
        raise DataFileError(f"{root}: no class folders in {root / 'train'} (expected train/<class>/* and test/<class>/*)")
    if not (root / "test").is_dir():
        raise DataFileError(f"{root}: no {root / 'test'} folder (expected train/<class>/* and test/<class>/*)")
    unknown = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise DataFileError(f"{root / 'test' / unknown[0]}: class {unknown[0]!r} is not a class of {root / 'train'}")
    x, y = {}, {}
    for split in ("train", "test"):
        files = [(f, c) for c, cls in enumerate(classes) for f in _image_files(root / split / cls)]
        if not files:
            raise DataFileError(f"{root / split}: no images (expected {split}/<class>/*.png, .jpg, ...)")
        images = [_read_image(f) for f, _ in files]
        first = files[0][0]
        for (f, _), img in zip(files, images):
            if img.shape != images[0].shape:
                raise DataFileError(f"{f}: {_size(img)}, but {first} is {_size(images[0])}: every image needs the "
                                    "same size and channels")
        x[split] = _images(np.stack(images), str(root / split), "images")
        y[split] = np.array([c for _, c in files], dtype=np.int64)
    if x["test"].shape[1:] != x["train"].shape[1:]:
        raise DataFileError(f"{root / 'test'}: images are {_shape(x['test'])}, {root / 'train'} {_shape(x['train'])}")
    return _assemble(name, x, y, str(root), num_classes=len(classes))


def from_loader(result: object, ref: str) -> DatasetArrays:
    """What a ``module:load`` data set returned: ``DatasetArrays`` (named after the reference), or a
    mapping of arrays in the npz layout."""
    if isinstance(result, DatasetArrays):
        from dataclasses import replace

        return replace(result, name=ref)
    if isinstance(result, Mapping):
        return from_layout(result, ref, ref)
    raise DataFileError(f"{ref}: returned a {type(result).__name__}; expected a falw_ray.DatasetArrays or a mapping "
                        f"of arrays ({LAYOUT_HELP})")


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: data_file not found")
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise DataFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    return h.hexdigest()[:16]


def folder_digest(root: str | os.PathLike) -> str:
    """sha256 over every file under ``train/`` and ``test/``: its path there and its bytes."""
    root = Path(root)
    if not root.is_dir():
        raise DataFileError(f"{root}: data_dir not found (expected train/<class>/* and test/<class>/* in it)")
    h = hashlib.sha256()
    for split in ("train", "test"):
        for f in sorted(p for p in (root / split).rglob("*") if p.is_file()):
            h.update(str(f.relative_to(root)).encode() + b"\0" + file_digest(f).encode())
    return h.hexdigest()[:16]


def arrays_digest(data: DatasetArrays) -> str:
    """sha256 over the arrays and every field that changes what a model is trained on."""
    h = hashlib.sha256()
    for a in (data.train_x, data.train_y, data.test_x, data.test_y,
              *([data.val_rows] if data.val_rows is not None else [])):
        h.update(f"{a.dtype}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
    h.update(repr((data.num_classes, data.mean, data.std, data.scale, data.crop_pad, data.flip)).encode())
    return h.hexdigest()[:16]


def _assemble(name: str, x: dict, y: dict, source: str, num_classes: int | None = None) -> DatasetArrays:
    labels = np.concatenate(list(y.values()))
    present = np.unique(y["train"])
    if len(present) < 2:
        raise DataFileError(f"{source}: the training labels hold a single class ({present[0] if len(present) else '-'}); "
                            "unlearning needs at least two")
    c = num_classes or int(labels.max()) + 1
    counts = np.bincount(y["train"], minlength=c)
    if (counts < 2).any() and "val" not in x:
        k = int(np.flatnonzero(counts < 2)[0])
        raise DataFileError(f"{source}: class {k} has {counts[k]} training image(s); each class needs at least 2 "
                            "(one goes to the validation split FaLW compares with)")
    train_x, train_y, val_rows = x["train"], y["train"], None
    if "val" in x:
        val_rows = np.arange(len(train_y), len(train_y) + len(y["val"]), dtype=np.int64)
        train_x, train_y = np.concatenate([train_x, x["val"]]), np.concatenate([train_y, y["val"]])
    scaled = x["train"].astype(np.float64) / 255.0
    mean = tuple(float(v) for v in scaled.mean(axis=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in scaled.std(axis=(0, 2, 3)))
    return DatasetArrays(name=name, train_x=train_x, train_y=train_y, test_x=x["test"], test_y=y["test"], num_classes=c,
                         mean=mean, std=std, scale=255.0, crop_pad=0, flip=False, val_rows=val_rows)


def _images(a: np.ndarray, source: str, key: str) -> np.ndarray:
    """N x H x W or N x H x W x C (C <= 4), uint8 or float -> uint8 (N, C, H, W)."""
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] <= 4:
        a = a.transpose(0, 3, 1, 2)
    else:
        raise DataFileError(f"{source}: {key} has shape {a.shape}; expected N x H x W or N x H x W x C "
                            "(channels last, C <= 4)")
    if len(a) == 0:
        raise DataFileError(f"{source}: {key} holds no images")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind not in "uif":
        raise DataFileError(f"{source}: {key} are {a.dtype}; expected uint8 or float images")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataFileError(f"{source}: {key} hold NaN or infinite values")
    low, high = float(a.min()), float(a.max())
    if low < 0 or high > 255:
        raise DataFileError(f"{source}: {key} range over [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")
    if a.dtype.kind == "f" and high <= 1.0:
        a = a * 255.0
    return np.ascontiguousarray(np.rint(a).astype(np.uint8))


def _labels(a: np.ndarray, source: str, key: str) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise DataFileError(f"{source}: {key} has shape {a.shape}; expected N or N x 1 class labels")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise DataFileError(f"{source}: {key} are not whole numbers; expected class labels 0, 1, ...")
    elif a.dtype.kind not in "ui":
        raise DataFileError(f"{source}: {key} are {a.dtype}; expected integer class labels")
    if len(a) and a.min() < 0:
        raise DataFileError(f"{source}: {key} hold a negative label ({a.min():g}); expected 0, 1, ...")
    return a.astype(np.int64)


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path) -> np.ndarray:
    """H x W (grey) or H x W x C pixels; grey with alpha or palette images become RGB(A) as PIL converts them."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            return np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataFileError(f"{path}: unreadable image ({first_line(e)})") from None


def _shape(x: np.ndarray) -> str:
    return f"{x.shape[1]} x {x.shape[2]} x {x.shape[3]} (C x H x W)"


def _size(img: np.ndarray) -> str:
    return f"{img.shape[1]}x{img.shape[0]}" + (f" with {img.shape[2]} channels" if img.ndim == 3 else " grey")

