"""Write the example's data set: scikit-learn's 8x8 digits as an .npz file in the MedMNIST layout
(train/val/test images as uint8 N x H x W, labels N x 1), the format falw_ray reads with
``dataset: npz``.

    python examples/make_data.py            # writes examples/data/digits_medmnist.npz
    python examples/make_data.py OUT.npz
"""
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

DEFAULT = Path(__file__).resolve().parent / "data" / "digits_medmnist.npz"


def main(out: Path = DEFAULT) -> Path:
    digits = load_digits()
    images = (digits.images * 15).astype(np.uint8)  # 17 grey levels (0..16) spread over 0..240
    labels = digits.target.astype(np.int64)[:, None]
    rows = np.random.default_rng(0).permutation(len(labels))
    train, val, test = np.split(rows, [1200, 1400])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, train_images=images[train], train_labels=labels[train],
                        val_images=images[val], val_labels=labels[val],
                        test_images=images[test], test_labels=labels[test])
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
