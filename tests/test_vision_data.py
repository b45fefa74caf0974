"""Vision loaders against small data sets written in the real on-disk formats (no mocks)."""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from falw_ray.data.vision import TINY_CACHE, load_cifar10, load_cifar100, load_tinyimagenet


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` opcodes, as the original CIFAR pickles do, so
    ``pickle.load(encoding="latin1")`` turns keys like b"data" into "data" exactly as for the real files."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _batch(rng: np.random.Generator, n: int, num_classes: int) -> tuple[np.ndarray, list[int]]:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, num_classes, n).tolist()


def write_cifar10(root: Path, per_file: int = 20) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = [_batch(rng, per_file, 10) for _ in range(5)]
    train[0][0][0] = 0
    train[0][0][0, 1 * 1024 + 2 * 32 + 3] = 200  # image 0: channel 1 (green), row 2, column 3
    for i, (data, labels) in enumerate(train, 1):
        _dump(folder / f"data_batch_{i}", {b"batch_label": b"training batch %d of 5" % i, b"labels": labels,
                                           b"data": data, b"filenames": [b"x.png"] * per_file})
    test_x, test_y = _batch(rng, per_file, 10)
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": test_y, b"data": test_x})
    _dump(folder / "batches.meta", {b"label_names": [b"class%d" % c for c in range(10)], b"num_vis": 3072})
    return np.vstack([d for d, _ in train]), sum((l for _, l in train), []), test_x, test_y


def write_cifar100(root: Path, n_train: int = 60, n_test: int = 30) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = []
    for name, n in (("train", n_train), ("test", n_test)):
        data, fine = _batch(rng, n, 100)
        _dump(folder / name, {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine,
                              b"coarse_labels": [f // 5 for f in fine], b"data": data})
        out += [data, fine]
    _dump(folder / "meta", {b"fine_label_names": [b"f%d" % c for c in range(100)],
                            b"coarse_label_names": [b"c%d" % c for c in range(20)]})
    return tuple(out)  # type: ignore[return-value]


def test_cifar10_round_trip(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path)
    data = load_cifar10(tmp_path)
    assert data.name == "cifar10" and data.num_classes == 10
    assert data.train_x.shape == (100, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    assert data.train_x.dtype == np.uint8 and data.train_y.dtype == np.int64
    assert data.train_x[0, 1, 2, 3] == 200 and data.train_x[0].sum() == 200
    np.testing.assert_array_equal(data.train_x, train_x.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(data.test_x, test_x.reshape(-1, 3, 32, 32))
    assert data.train_y.tolist() == train_y and data.test_y.tolist() == test_y
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2470, 0.2435, 0.2616)
    assert (data.scale, data.crop_pad, data.flip) == (255.0, 4, True)
    again = load_cifar10(tmp_path, download=True)  # files present: no network, the same arrays
    np.testing.assert_array_equal(again.train_x, data.train_x)
    np.testing.assert_array_equal(again.test_x, data.test_x)
    assert again.train_y.tolist() == train_y and again.test_y.tolist() == test_y


def test_cifar10_partial_folder_names_missing_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path)


def test_cifar100_round_trip(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = write_cifar100(tmp_path)
    data = load_cifar100(str(tmp_path))
    assert data.name == "cifar100" and data.num_classes == 100
    assert data.train_x.shape == (60, 3, 32, 32) and data.test_x.shape == (30, 3, 32, 32)
    assert data.train_x.dtype == np.uint8 and data.train_y.dtype == np.int64 and data.test_y.dtype == np.int64
    np.testing.assert_array_equal(data.train_x, train_x.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(data.test_x, test_x.reshape(-1, 3, 32, 32))
    assert data.train_y.tolist() == train_y and data.test_y.tolist() == test_y, "fine labels, not coarse ones"
    assert data.mean == (0.5071, 0.4865, 0.4409) and data.std == (0.2673, 0.2564, 0.2762)
    assert (data.scale, data.crop_pad, data.flip) == (255.0, 4, True)


@pytest.mark.parametrize("loader, folder", [(load_cifar10, "cifar-10-batches-py"), (load_cifar100, "cifar-100-python")])
def test_cifar_missing_files(tmp_path: Path, loader, folder: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        loader(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / folder) in message and "download: true" in message
    assert "\n" not in message and info.value.__cause__ is None and info.value.__suppress_context__


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def write_tinyimagenet(root: Path, train_per_class: int = 4, val_per_class: int = 2) -> Path:
    """A 3-class tree; each class is one solid colour so labels survive JPEG loss."""
    base = root / "tiny-imagenet-200"
    wnids = [f"n0000000{c}" for c in range(len(COLOURS))]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for c, (wnid, colour) in enumerate(zip(wnids, COLOURS)):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(train_per_class):
            Image.new("RGB", (64, 64), colour).save(images / f"{wnid}_{i}.JPEG")
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            Image.new("RGB", (64, 64), colour).save(base / "val" / "images" / name)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def _decoded(paths: list[Path]) -> np.ndarray:
    """What the loader must return for these JPEGs: PIL's RGB decoding, channels first."""
    out = []
    for path in paths:
        with Image.open(path) as img:
            out.append(np.asarray(img.convert("RGB")).transpose(2, 0, 1))
    return np.stack(out)


def _train_files(base: Path) -> list[Path]:
    return sorted((base / "train").glob("*/images/*.JPEG"))  # wnids sort as their classes: class, then file


def _colour_labels(x: np.ndarray) -> list[int]:
    return x.reshape(len(x), 3, -1).mean(axis=2).argmax(axis=1).tolist()


def test_tinyimagenet_load_and_cache(tmp_path: Path) -> None:
    base = write_tinyimagenet(tmp_path)
    data = load_tinyimagenet(tmp_path)
    assert data.name == "tinyimagenet" and data.num_classes == 3
    assert data.train_x.shape == (12, 3, 64, 64) and data.test_x.shape == (6, 3, 64, 64)
    assert data.train_x.dtype == np.uint8 and data.train_y.dtype == np.int64
    assert data.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert _colour_labels(data.train_x) == data.train_y.tolist()
    assert _colour_labels(data.test_x) == data.test_y.tolist()
    np.testing.assert_array_equal(data.train_x, _decoded(_train_files(base)))
    np.testing.assert_array_equal(data.test_x, _decoded([base / "val" / "images" / f"val_{i}.JPEG" for i in range(6)]))
    assert data.mean == (0.4802, 0.4481, 0.3975) and data.std == (0.2302, 0.2265, 0.2262)
    assert (data.scale, data.crop_pad, data.flip) == (255.0, 4, True)
    assert (base / TINY_CACHE).is_file() and not list(base.glob("*.tmp"))

    files = _train_files(base)
    gone = files.index(base / "train" / "n00000001" / "images" / "n00000001_2.JPEG")
    files[gone].unlink()
    again = load_tinyimagenet(base)  # pointing at the folder itself also works
    assert again.train_x.shape == (12, 3, 64, 64), "second load should come from the cache"
    np.testing.assert_array_equal(again.train_x, data.train_x)
    np.testing.assert_array_equal(again.test_x, data.test_x)
    assert again.train_y.tolist() == data.train_y.tolist() and again.test_y.tolist() == data.test_y.tolist()

    later = (base / TINY_CACHE).stat().st_mtime + 10
    os.utime(base / "wnids.txt", (later, later))  # wnids.txt newer than the cache: decode afresh
    fresh = load_tinyimagenet(tmp_path)
    assert fresh.train_y.tolist() == [0] * 4 + [1] * 3 + [2] * 4
    np.testing.assert_array_equal(fresh.train_x, np.delete(data.train_x, gone, axis=0))
    np.testing.assert_array_equal(fresh.test_x, data.test_x)


def test_tinyimagenet_bad_annotation(tmp_path: Path) -> None:
    base = write_tinyimagenet(tmp_path)
    with open(base / "val" / "val_annotations.txt", "a") as f:
        f.write("val_99.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(ValueError, match="val_annotations.txt.*n99999999"):
        load_tinyimagenet(tmp_path)
    assert not (base / TINY_CACHE).exists()


def test_tinyimagenet_wrong_image_size(tmp_path: Path) -> None:
    base = write_tinyimagenet(tmp_path)
    bad = base / "train" / "n00000001" / "images" / "n00000001_0.JPEG"
    Image.new("RGB", (32, 64), COLOURS[1]).save(bad)
    with pytest.raises(ValueError, match="n00000001_0.JPEG: expected a 64x64 image, got 32x64"):
        load_tinyimagenet(tmp_path)
    assert not (base / TINY_CACHE).exists()


def test_tinyimagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200.*wnids.txt"):
        load_tinyimagenet(tmp_path)
