"""MNIST-1D (Greydanus 2020): 40-sample 1-D digit signals generated procedurally, offline, in a second.

Generated with more noise than the package's default (both noise scales doubled), so a small
Conv1d memorises its training set while generalising to ~80%: the regime of the unlearning papers,
in which a model retrained without a forget set is visibly worse on it than the original model.
(On digits both models are ~100% on it, so unlearning cannot be seen.)
"""
from __future__ import annotations

import random

import numpy as np
from pydantic import Field

from .arrays import DatasetArrays
from .options import DataOptions

TEMPLATE_LEN = 12
PADDING = (36, 60)
"""Fixed generator settings (the package's defaults), passed explicitly so a package update cannot change the data."""


class Mnist1dOptions(DataOptions):
    """The generator's settings that a study may change; every one changes the arrays."""

    num_samples: int = Field(5000, ge=100, description="train + test signals, split evenly over the 10 classes")
    train_split: float = Field(0.8, gt=0, lt=1)
    corr_noise_scale: float = Field(0.5, ge=0, description="correlated background noise (package default 0.25)")
    iid_noise_scale: float = Field(0.04, ge=0, description="per-sample noise (package default 0.02)")
    shear_scale: float = Field(0.75, ge=0)
    scale_coeff: float = Field(0.4, ge=0, lt=2)
    max_translation: int = Field(48, ge=1)
    final_seq_length: int = Field(40, ge=8)
    seed: int = Field(42, ge=0, description="the generator's seed; the scenario's seed picks splits and training")


def generate(options: Mnist1dOptions) -> dict[str, np.ndarray]:
    """The generator's raw output. It seeds numpy's and Python's global RNGs, so both are restored after."""
    from mnist1d.data import get_dataset_args, make_dataset  # here: the package imports matplotlib

    args = get_dataset_args()
    for name, value in options.model_dump().items():
        setattr(args, name, value)
    args.template_len, args.padding, args.shuffle_seq = TEMPLATE_LEN, list(PADDING), False
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def load_mnist1d(data_dir: object = None, download: bool = False, **options: object) -> DatasetArrays:
    opts = Mnist1dOptions(**options)
    raw = generate(opts)
    xs = [np.ascontiguousarray(raw[k], dtype=np.float32)[:, None, :] for k in ("x", "x_test")]
    ys = [np.asarray(raw[k], dtype=np.int64) for k in ("y", "y_test")]
    return DatasetArrays(name="mnist1d", train_x=xs[0], train_y=ys[0], test_x=xs[1], test_y=ys[1],
                         num_classes=10, mean=(0.0,), std=(1.0,), scale=1.0, crop_pad=0, flip=False)
