"""A researcher's own data and model: npz files in the MedMNIST layout (grey N x H x W with a val split,
and 3-channel float N x H x W x C), an image folder (torchvision's ImageFolder layout) and a
``module:load`` loader, with a ``module:build`` model, run as one short study on a real local Ray;
each bad file is one line naming it, before Ray starts; the store key follows the file's content."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image
from sklearn.datasets import load_digits

from falw_ray import Experiment, Recipe, Scenario, Study
from falw_ray.data.files import DataFileError
from falw_ray.study.spec import StudyError

LOADER_AND_MODEL = '''
import numpy as np
import torch.nn as nn
from sklearn.datasets import load_digits

from falw_ray import DatasetArrays


def load():
    """Digits as DatasetArrays: the first 150 images of each class for training, the next 20 for test."""
    b = load_digits()
    x, y = b.images.astype(np.uint8)[:, None], b.target.astype(np.int64)
    order = np.argsort(y, kind="stable")
    per = [order[y[order] == c] for c in range(10)]
    train = np.concatenate([p[:150] for p in per])
    test = np.concatenate([p[150:170] for p in per])
    return DatasetArrays(name="mine", train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                         num_classes=10, mean=(0.3,), std=(0.38,), scale=16.0)


class Tiny(nn.Module):
    head_path = "head"

    def __init__(self, num_classes, input_shape):
        super().__init__()
        c, h, w = input_shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def build(num_classes, input_shape):
    return Tiny(num_classes, input_shape)
'''


def digits(n_train: int = 600, n_val: int = 150, n_test: int = 300):
    """Digits in MedMNIST's form: uint8 0..240 (16 grey levels x 15), labels N x 1."""
    b = load_digits()
    x, y = (b.images * 15).astype(np.uint8), b.target.astype(np.int64)
    rows = np.random.default_rng(0).permutation(len(y))
    cut = np.cumsum([n_train, n_val, n_test])
    return {split: (x[r], y[r][:, None]) for split, r in zip(("train", "val", "test"), np.split(rows, cut)[:3])}


def write_npz(path: Path, colour: bool = False, drop: str | None = None, **changes) -> Path:
    parts = digits()
    arrays = {}
    for split, (x, y) in parts.items():
        if colour:
            if split == "val":
                continue
            x, y = np.repeat((x / 255.0).astype(np.float32)[..., None], 3, axis=-1), y[:, 0]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    arrays.update(changes)
    if drop:
        del arrays[drop]
    np.savez(path, **arrays)
    return path


def write_folder(root: Path, classes: int = 4, per_class: int = 40) -> Path:
    b = load_digits()
    for c in range(classes):
        images = b.images[b.target == c]
        for split, chunk in (("train", images[:per_class]), ("test", images[per_class:per_class + 10])):
            (root / split / f"digit{c}").mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(chunk):
                Image.fromarray((img * 15).astype(np.uint8), mode="L").save(root / split / f"digit{c}" / f"{i}.png")
    return root


STUDY = """\
name: own-data
scenarios:
  - {{dataset: npz, data_file: {grey}, recipe: {{epochs: 3}}}}
  - {{dataset: npz, data_file: {colour}, recipe: {{epochs: 3}}}}
  - {{dataset: image_folder, data_dir: {folder}, model: plug_data_a:build, recipe: {{epochs: 3}}}}
  - {{dataset: 'plug_data_a:load', model: 'plug_data_a:build', recipe: {{epochs: 3}}}}
methods:
  - {{name: ga, falw: off, epochs: 2, batch_size: 64}}
search: {{trials: 1}}
early_stopping: {{enabled: false}}
resources: {{cpu: 1}}
final: {{seeds: [1]}}
"""


@pytest.fixture
def own_ray():
    ray.shutdown()
    yield
    ray.shutdown()


def test_npz_image_folder_and_loader_data_sets_with_a_model_of_ones_own_run_a_study(tmp_path, own_ray):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "plug_data_a.py").write_text(LOADER_AND_MODEL)
    grey, colour = write_npz(tmp_path / "grey.npz"), write_npz(tmp_path / "colour.npz", colour=True)
    folder = write_folder(tmp_path / "folder")
    (study_dir / "study.yaml").write_text(STUDY.format(grey=grey, colour=colour, folder=folder))
    study = Study.from_yaml(study_dir / "study.yaml")
    scenarios = [c.scenario for c in study.cells]
    assert [s.name for s in scenarios] == ["npz-grey-cnn-lt0.1-g1-s0", "npz-colour-cnn-lt0.1-g1-s0",
                                           "folder-folder-plug_data_a.build-lt0.1-g1-s0",
                                           "plug_data_a.load-plug_data_a.build-lt0.1-g1-s0"]
    result = study.run(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", storage=tmp_path / "store", progress=False)

    assert len(result.final) == 4 and (result.final["status"] == "finished").all(), result.final[["cell", "status"]]
    ga = result.table[result.table["method"] == "ga"]
    assert len(ga) == 4 and ga["avg_gap_mean"].notna().all()
    assert set(result.baselines["original"]) == {"trained"} and len(result.baselines) == 8

    from falw_ray.data.registry import load_dataset

    grey_data, colour_data = (load_dataset(*s.data_args()) for s in scenarios[:2])
    assert grey_data.train_x.shape == (750, 1, 8, 8) and grey_data.val_rows.tolist() == list(range(600, 750))
    assert colour_data.train_x.shape == (600, 3, 8, 8) and colour_data.val_rows is None
    np.testing.assert_array_equal(colour_data.train_x[:, 0], grey_data.train_x[:600, 0])  # x/255*255, rounded back
    folder_data = load_dataset(*scenarios[2].data_args())
    assert folder_data.num_classes == 4 and folder_data.train_x.shape == (160, 1, 8, 8)
    from falw_ray.data.registry import make_splits

    splits = make_splits(grey_data, "longtail", 0.1, 1.0, (), 0)
    assert set(splits.val) == set(range(600, 750)) and not set(splits.pool) & set(splits.val), \
        "the file's own val split is FaLW's unseen data, not part of the training pool"


@pytest.mark.parametrize("case, expected", [
    ("missing key", "{file}: missing key 'train_labels' (an npz data set holds train_images, train_labels, "
                    "test_images, test_labels, and optionally val_images, val_labels)"),
    ("label count", "{file}: test_labels has 299 labels but test_images has 300 images"),
    ("single class", "{file}: the training labels hold a single class (0); unlearning needs at least two"),
    ("not npz", "{file}: not a readable .npz file ("),
    ("missing file", "{file}: data_file not found"),
    ("bad shape", "{file}: train_images has shape (600, 64); expected N x H x W or N x H x W x C"),
    ("unreadable image", "{file}: unreadable image ("),
])
def test_a_bad_data_file_is_one_line_naming_it_before_ray_starts(tmp_path, case, expected):
    file = tmp_path / "data.npz"
    entry = f"{{dataset: npz, data_file: {file}}}"
    if case == "missing key":
        write_npz(file, drop="train_labels")
    elif case == "label count":
        write_npz(file, test_labels=digits()["test"][1][:-1])
    elif case == "single class":
        x, y = digits()["train"]
        write_npz(file, train_labels=np.zeros_like(y))
    elif case == "not npz":
        file.write_text("train_images,train_labels\n1,2\n")
    elif case == "bad shape":
        write_npz(file, train_images=digits()["train"][0].reshape(600, 64))
    elif case == "unreadable image":
        folder = write_folder(tmp_path / "folder", classes=2, per_class=5)
        file = folder / "train" / "digit1" / "3.png"
        file.write_bytes(b"not a png at all")
        entry = f"{{dataset: image_folder, data_dir: {folder}}}"
    study_file = tmp_path / "study.yaml"
    study_file.write_text(f"name: bad\nscenarios:\n  - {entry}\nmethods:\n  - {{name: ga}}\n")
    ray.shutdown()
    with pytest.raises(StudyError) as err:
        Study.from_yaml(study_file)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{study_file}: "), message
    assert expected.format(file=file) in message, message
    assert not ray.is_initialized()


def test_changing_one_pixel_of_the_file_misses_the_store(tmp_path):
    file = write_npz(tmp_path / "grey.npz")
    first = Scenario(dataset="npz", data_file=str(file), recipe=Recipe(epochs=1))
    exp = Experiment(first, store=tmp_path / "store", progress=False)
    exp.baselines
    assert exp.cache == {"original": "trained", "retrained": "trained"}
    again = Experiment(Scenario(dataset="npz", data_file=str(file), recipe=Recipe(epochs=1)), store=tmp_path / "store",
                       progress=False)
    again.baselines
    assert again.cache == {"original": "hit", "retrained": "hit"}

    x, y = digits()["train"]
    x = x.copy()
    x[17, 3, 4] ^= 1  # one byte of one image
    write_npz(file, train_images=x)
    changed = Scenario(dataset="npz", data_file=str(file), recipe=Recipe(epochs=1))
    assert changed.key() != first.key() and changed.original_key() != first.original_key()
    assert changed.name == first.name, "same file, same label: only the key follows the content"
    exp = Experiment(changed, store=tmp_path / "store", progress=False)
    exp.baselines
    assert exp.cache == {"original": "trained", "retrained": "trained"}
    from falw_ray.data.registry import load_dataset

    assert load_dataset(*changed.data_args()).train_x[17, 0, 3, 4] == x[17, 3, 4], "not the cached old arrays"


def test_a_loader_returning_something_else_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "plug_data_b.py").write_text("def load():\n    return [1, 2, 3]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DataFileError, match=r"^plug_data_b:load: returned a list; expected a falw_ray.DatasetArrays"):
        from falw_ray.data.registry import load_dataset

        load_dataset("plug_data_b:load")


def test_builtin_keys_are_unchanged_by_the_content_hash():
    """Built-in data sets carry no content hash, so their stored baselines keep their keys."""
    s = Scenario(dataset="digits")
    assert s.data_digest is None and "data_digest" not in s._identity()
