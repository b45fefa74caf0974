"""The worked example of docs/plugins.md: its data script writes an npz file falw_ray reads, and its
study (a plugin method beside it, two built-in baselines, FaLW on and off) validates as written."""
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def test_the_example_data_and_study(tmp_path, monkeypatch):
    made = subprocess.run([sys.executable, str(EXAMPLES / "make_data.py"), "examples/data/digits_medmnist.npz"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    with np.load(tmp_path / "examples" / "data" / "digits_medmnist.npz") as npz:
        assert sorted(npz.files) == ["test_images", "test_labels", "train_images", "train_labels", "val_images",
                                     "val_labels"]
        assert npz["train_images"].shape == (1200, 8, 8) and npz["train_labels"].shape == (1200, 1)

    # Validated from elsewhere than the repository: the plugin is found beside the study file,
    # the data file where the command runs.
    checked = subprocess.run([sys.executable, "-m", "falw_ray.cli", "validate", str(EXAMPLES / "ga_clip_study.yaml")],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{EXAMPLES / 'ga_clip_study.yaml'}: valid study 'ga_clip_example' (6 cells")

    from falw_ray.study.runner import Study

    monkeypatch.chdir(tmp_path)
    study = Study.from_yaml(EXAMPLES / "ga_clip_study.yaml")
    assert [c.label for c in study.cells] == ["ga_clip", "ga_clip+falw", "ga", "ga+falw", "rl", "rl+falw"]
    assert set(study.cells[1].space) == {"lr", "clip", "tau"}
    assert study.spec.compare == [("ga", "ga_clip"), ("ga+falw", "ga_clip+falw")]
