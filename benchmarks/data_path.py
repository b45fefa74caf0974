"""Benchmark 3: the data path. Device-resident batching (falw_ray) vs a torch DataLoader.

    python benchmarks/data_path.py                              # digits CNN + ResNet-18 (CIFAR-shaped)
    python benchmarks/data_path.py --repeats 7 --resnet-images 1024 --resnet-batch 256

One training epoch over the same data, same model, same optimiser (SGD, momentum 0.9, weight decay
5e-4), same batch size, same augmentation, one torch thread (as in a trial):
  falw_ray      falw_ray.train.train_epoch: the split normalised once into a resident tensor, a
                batch is one index gather, random crop / flip are batched tensor ops
  loader-0      DataLoader(per-sample Dataset, shuffle=True, num_workers=0): uint8 -> float,
                normalise, random crop / flip per sample (torchvision v2 transforms), default collate
  loader-2      the same with num_workers=2 (worker processes started per epoch, the default)
Data: the digits pool of the quickstart scenario (1,287 images, batch 64, the recipe's crop of 1)
with the small CNN, with and without augmentation (unlearning epochs use none); and CIFAR-shaped
random uint8 images made here (3x32x32, crop 4 + flip) with ResNet-18 (CIFAR stem).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def setup(x_uint8: np.ndarray, y: np.ndarray, mean, std, scale, crop_pad: int, flip: bool, model_name: str,
          num_classes: int, batch_size: int):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    import reference
    from falw_ray.data.arrays import DatasetArrays
    from falw_ray.data.device import Augment, to_device
    from falw_ray.models import build_model
    from falw_ray.train import autocast, prepare_model, sgd, train_epoch

    dev = torch.device("cpu")
    arrays = DatasetArrays(name="bench", train_x=x_uint8, train_y=y, test_x=x_uint8[:1], test_y=y[:1],
                           num_classes=num_classes, mean=tuple(mean), std=tuple(std), scale=scale)
    torch.manual_seed(0)
    base = prepare_model(build_model(model_name, num_classes, x_uint8.shape[1:]), dev)
    aug = Augment(crop_pad, flip)
    x_dev = to_device(arrays, x_uint8, dev)
    y_dev = torch.from_numpy(y).to(dev)
    ds = reference.PerSample(x_uint8, y, mean, std, scale, crop_pad, flip)

    def resident():
        model = copy.deepcopy(base)
        opt = sgd(model.parameters(), 0.01)
        gen = torch.Generator().manual_seed(0)

        def epoch():
            model.train()
            train_epoch(model, opt, x_dev, y_dev, batch_size, gen, aug)
        return epoch

    def loader(workers: int):
        model = copy.deepcopy(base)
        opt = sgd(model.parameters(), 0.01)
        dl = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))

        def epoch():
            model.train()
            for xb, yb in dl:
                xb, yb = xb.to(dev), yb.to(dev)
                with autocast(dev):
                    loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return epoch

    def batches_resident():
        gen = torch.Generator().manual_seed(0)
        from falw_ray.data.device import augment, index_batches

        def epoch():
            for idx in index_batches(len(x_dev), batch_size, gen):
                xb = x_dev[idx.to(dev)]
                if aug.active:
                    xb = augment(xb, aug, gen)
        return epoch

    def batches_loader(workers: int):
        dl = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))

        def epoch():
            for _ in dl:
                pass
        return epoch

    return ({"falw_ray": resident(), "loader-0": loader(0), "loader-2": loader(2)},
            {"falw_ray": batches_resident(), "loader-0": batches_loader(0), "loader-2": batches_loader(2)})


def measure(name: str, epochs: dict, repeats: int) -> dict:
    for fn in epochs.values():  # warm-up epoch each (first-call allocations, oneDNN primitives)
        fn()
    res = common.paired({k: (lambda i, f=f: common.timed(f)[0]) for k, f in epochs.items()}, repeats,
                        log=lambda m: print(f"  {name}: {m.strip()}", flush=True))
    out = {"case": name, "falw_ray s": common.median(res["falw_ray"])}
    for side in ("loader-0", "loader-2"):
        s = common.ratio_summary(res[side], res["falw_ray"])
        out[f"{side} s"] = s["median_slow"]
        out[f"{side} / falw_ray"] = s["ratio_of_medians"]
        out[f"{side} pair ratios"] = s["pair_ratios"]
    return out


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="pairs (rounds of the three sides) for digits")
    p.add_argument("--resnet-repeats", type=int, default=3)
    p.add_argument("--resnet-images", type=int, default=256)
    p.add_argument("--resnet-batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a trial uses 1 per CPU)")
    p.add_argument("--skip-resnet", action="store_true")
    args = p.parse_args()
    info = common.header("benchmark 3: data path")
    import torch

    torch.set_num_threads(args.threads)
    from falw_ray.data.registry import load_dataset, make_splits

    rows = []
    data = load_dataset("digits")
    splits = make_splits(data, "longtail", 0.1, 1.0, (), 0)
    x, y = data.train_x[splits.pool], data.train_y[splits.pool]
    batch_rows = []
    for crop in (data.crop_pad, 0):
        label = f"digits CNN, {len(x)} images, batch 64, " + (f"crop {crop}" if crop else "no augmentation")
        sides, batches = setup(x, y, data.mean, data.std, data.scale, crop, False, "cnn", 10, 64)
        rows.append(measure(label, sides, args.repeats))
        batch_rows.append(measure(label.replace("digits CNN", "digits, batches only"), batches, args.repeats))
    if not args.skip_resnet:
        rng = np.random.default_rng(0)
        n = args.resnet_images
        cx = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        cy = rng.integers(0, 10, n).astype(np.int64)
        label = f"ResNet-18, {n} CIFAR-shaped images, batch {args.resnet_batch}, crop 4 + flip"
        sides, batches = setup(cx, cy, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 255.0, 4, True,
                               "resnet18", 10, args.resnet_batch)
        rows.append(measure(label, sides, args.resnet_repeats))
        batch_rows.append(measure(label.replace("ResNet-18", "CIFAR-shaped, batches only"), batches, args.repeats))
    cols = ["case", "falw_ray s", "loader-0 s", "loader-2 s", "loader-0 / falw_ray", "loader-2 / falw_ray",
            "loader-0 pair ratios", "loader-2 pair ratios"]
    print("\nseconds per epoch (medians), ratios = DataLoader time / falw_ray time (>1: falw_ray faster)")
    print(common.table(rows, cols, floatfmt="{:.3f}"))
    print("\nthe data path alone (an epoch of batches, no model): the same sides without the training step")
    print(common.table(batch_rows, cols, floatfmt="{:.4f}"))
    digits_best = min(min(r["loader-0 / falw_ray"], r["loader-2 / falw_ray"]) for r in rows if r["case"].startswith("digits"))
    print(f"\ndigits CNN: falw_ray is {digits_best:.2f}x faster than the faster DataLoader setting in the "
          f"least favourable case (target >= 3x)")
    common.save_json(args.json, {"machine": info, "rows": rows, "batch_rows": batch_rows, "threads": args.threads})
    return 0


if __name__ == "__main__":
    sys.exit(main())
