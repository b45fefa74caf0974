"""GPU check: one command, under 5 minutes on one GPU, for the first machine with an accelerator.

    python benchmarks/gpu_check.py                 # on a CUDA machine
    python benchmarks/gpu_check.py --compile       # also time the torch.compile'd loop (adds ~1 min)
    python benchmarks/gpu_check.py --smoke         # tiny sizes on the CPU: checks the code paths run

Prints:
1. ResNet-18 (CIFAR stem) epoch time on CIFAR-shaped data made here (--images, default 25,000, and
   the same scaled to CIFAR-10's 45,000-image pool): falw_ray's loop (falw_ray.train.train_epoch:
   data resident on the GPU, batches by index, crop + flip on the GPU, fp32 as falw_ray trains, channels_last)
   vs a DataLoader reference (per-sample Dataset on the CPU, --workers processes, pin_memory, the same
   model, precision and batch size). Medians of --repeats epochs after a warm-up epoch each.
2. Achieved TFLOP/s of falw_ray's loop (FLOPs of one training step counted by
   torch.utils.flop_counter, x steps per epoch / epoch time) against the GPU's bf16 dense peak
   (a table of known GPUs; --peak-tflops for others).
3. Trials per GPU-hour with 1, 2 and 4 trials packed on the GPU: the same small study (CIFAR-10
   files in the real format, random images, RL, --pack-trials trials per level, ResNet-18) run
   through Study.run with resources {cpu: --trial-cpus, gpu: 1/k}; trials per hour from the
   search stage's wall time, measured inside the trial workers (benchmarks/instrument.py).
4. The MIA (10,000 shadow points per side, 4,500 targets) against the measured GPU epoch time.
Without a CUDA device it says so and runs the CPU-safe parts at tiny sizes (a fake GPU for the
packing part, trials on the CPU), then exits with status 2: not a GPU measurement.
"""
from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PEAK_BF16_TFLOPS = {  # dense (no sparsity), vendor figures
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "H100": 756.0, "GH200": 989.4, "A100": 312.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0, "A10G": 70.0,
    "A10": 125.0, "RTX 4090": 165.2, "RTX 6000 Ada": 364.2, "B200": 2250.0,
}
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def peak_for(name: str) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def epoch_part(dev, images: int, batch: int, workers: int, repeats: int, compile_too: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torch.utils.flop_counter import FlopCounterMode

    import reference
    from falw_ray.data.arrays import DatasetArrays
    from falw_ray.data.device import Augment, to_device
    from falw_ray.models import build_model
    from falw_ray.train import autocast, prepare_model, sgd, train_epoch

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8)
    y = (np.arange(images) % 10).astype(np.int64)
    arrays = DatasetArrays(name="cifar-shaped", train_x=x, train_y=y, test_x=x[:1], test_y=y[:1], num_classes=10,
                           mean=CIFAR_MEAN, std=CIFAR_STD, crop_pad=4, flip=True)
    torch.manual_seed(0)
    base = build_model("resnet18", 10, (3, 32, 32))
    aug = Augment(4, True)
    x_dev, y_dev = to_device(arrays, x, dev), torch.from_numpy(y).to(dev)
    ds = reference.PerSample(x, y, CIFAR_MEAN, CIFAR_STD, 255.0, 4, True)

    def falw_side(compile_: bool):
        model = prepare_model(copy.deepcopy(base), dev, compile=compile_)
        opt = sgd(model.parameters(), 0.01)
        gen = torch.Generator().manual_seed(0)

        def epoch():
            model.train()
            train_epoch(model, opt, x_dev, y_dev, batch, gen, aug)
            sync(dev)
        return epoch, model

    def loader_side():
        model = prepare_model(copy.deepcopy(base), dev)
        opt = sgd(model.parameters(), 0.01)
        dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=dev.type == "cuda",
                        generator=torch.Generator().manual_seed(0))

        def epoch():
            model.train()
            for xb, yb in dl:
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
                with autocast(dev):
                    loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync(dev)
        return epoch

    sides = {"falw_ray": falw_side(False)[0], "dataloader": loader_side()}
    if compile_too:
        sides["falw_ray+compile"] = falw_side(True)[0]
    warm = {}
    for name, fn in sides.items():
        warm[name] = common.timed(fn)[0]
        print(f"  warm-up epoch {name}: {warm[name]:.2f}s", flush=True)
    res = common.paired({k: (lambda i, f=f: common.timed(f)[0]) for k, f in sides.items()}, repeats)
    # FLOPs of one training step (forward + backward), counted on a batch
    model = prepare_model(copy.deepcopy(base), dev)
    xb, yb = x_dev[:batch], y_dev[:batch]
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(dev):
            loss = F.cross_entropy(model(xb), yb)
        loss.backward()
    step_flops = counter.get_total_flops()
    steps = -(-images // batch)
    out = {"images": images, "batch": batch, "workers": workers, "warmup_s": warm,
           "epoch_s": {k: common.median(v) for k, v in res.items()}, "pairs": res,
           "step_flops": step_flops, "epoch_flops": step_flops * steps}
    out["tflops"] = out["epoch_flops"] / out["epoch_s"]["falw_ray"] / 1e12
    return out


def pack_part(dev, workdir: Path, levels: list[int], trials: int, trial_cpus: float, n_train: int, n_test: int,
              epochs: int, deadline: float) -> list[dict]:
    import yaml

    import instrument
    from memory import write_cifar10
    from study_throughput import run_falw

    data_dir = write_cifar10(workdir / "cifar_data", n_train, n_test)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    store = None
    rows = []
    for k in levels:
        if time.time() > deadline:
            print(f"  {k} per GPU: skipped, out of the time budget", flush=True)
            rows.append({"trials per GPU": k, "skipped": "time budget"})
            continue
        spec = {
            "name": f"gpu_pack_{k}",
            "scenarios": [{"dataset": "cifar10", "model": "resnet18", "data_dir": str(data_dir),
                           "forget": {"kind": "longtail", "ratio": 0.1, "gamma": 1.0}, "seed": 0,
                           "recipe": {"epochs": 2, "batch_size": 256, "lr": 0.05, "schedule": "constant"}}],
            "methods": [{"name": "rl", "falw": "off", "epochs": epochs, "batch_size": 512}],
            "search": {"trials": trials, "sampler_seed": 0, "max_concurrent": k},
            "early_stopping": {"enabled": False},
            "resources": {"cpu": trial_cpus, "gpu": round(1.0 / k, 4)},
            "final": {"seeds": [0]},
        }
        path = workdir / f"pack_{k}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        run = run_falw(path, workdir, store, uri, f"pack{k}", None, None)
        store = run["root"] / "baselines"  # later levels start warm
        ids = set(run["result"].trials["trial_id"].dropna())
        recs = [r for r in run["trace"] if r["trial"] in ids]
        begin = min(r["wall_at"] - r["trial_seconds"] for r in recs)
        end = max(r["wall_at"] for r in recs)
        t = run["result"].trials
        rows.append({"trials per GPU": k, "trials": len(t), "search wall s": end - begin,
                     "trials per GPU-hour": len(t) / (end - begin) * 3600,
                     "median trial s": common.median([r["trial_seconds"] for r in recs]),
                     "gpu_share": float(t["gpu_share"].iloc[0]) if "gpu_share" in t else float("nan"),
                     "study s": run["seconds"]})
        print(f"  {k} per GPU: {rows[-1]['trials per GPU-hour']:.0f} trials/GPU-hour "
              f"({len(t)} trials in {end - begin:.1f}s)", flush=True)
    _ = instrument
    return rows


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes; runs on the CPU (fake GPU for packing)")
    p.add_argument("--images", type=int, default=25000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: min(8, cores))")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time falw_ray's loop under torch.compile")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--pack-trials", type=int, default=8, help="search trials per packing level")
    p.add_argument("--trial-cpus", type=float, default=2.0)
    p.add_argument("--pack-train", type=int, default=10000, help="CIFAR-shaped training images (5,000 go to validation)")
    p.add_argument("--pack-test", type=int, default=2000)
    p.add_argument("--pack-epochs", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=280.0, help="skip remaining parts past this many seconds")
    args = p.parse_args()
    started = time.time()
    info = common.header("GPU check")
    import os

    import torch

    has_cuda = torch.cuda.is_available()
    if not has_cuda:
        print("\nNO CUDA DEVICE: torch.cuda.is_available() is False on this machine. This check measures a GPU;"
              " running its CPU-safe parts at tiny sizes instead (a fake GPU for the packing part), to show the"
              " code paths run. Exit status 2 = not a GPU measurement.\n", flush=True)
        args.smoke = True
    if args.smoke:
        args.images, args.batch, args.repeats = 256, 64, 1
        args.pack_trials, args.pack_train, args.pack_test, args.pack_epochs = 2, 5200, 200, 1
        args.trial_cpus = 0.5
    dev = torch.device("cuda" if has_cuda else "cpu")
    cores = os.cpu_count() or 2
    workers = args.workers if args.workers is not None else min(8, cores)
    if args.smoke:
        workers = min(workers, 2)
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(0) if has_cuda else "cpu"
    peak = args.peak_tflops or (peak_for(name) if has_cuda else None)

    print(f"1-2. ResNet-18 epoch, {args.images} CIFAR-shaped images, batch {args.batch}, on {name} ...", flush=True)
    ep = epoch_part(dev, args.images, args.batch, workers, args.repeats, args.compile)
    scale = 45000 / args.images
    rows = [{"loop": k, "epoch s": v, "epoch s @45k": v * scale,
             "images/s": args.images / v,
             "x falw_ray": v / ep["epoch_s"]["falw_ray"]} for k, v in ep["epoch_s"].items()]
    print(common.table(rows, floatfmt="{:.3f}"))
    dl_ratio = ep["epoch_s"]["dataloader"] / ep["epoch_s"]["falw_ray"]
    print(f"DataLoader ({workers} workers) / falw_ray epoch time: {dl_ratio:.2f}x")
    print(f"achieved {ep['tflops']:.1f} TFLOP/s ({ep['step_flops'] / 1e9:.0f} GFLOP per step of {args.batch})"
          + (f" = {ep['tflops'] / peak:.1%} of the {peak:.0f} TFLOP/s bf16 dense peak" if peak else
             " (peak unknown for this device: pass --peak-tflops)"))

    print("\n4. MIA (10,000 per side, 4,500 targets) vs the measured epoch ...", flush=True)
    from mia_cost import inputs

    from falw_ray.metrics import mia_efficacy

    member, nonmember, target = inputs(200 if args.smoke else 10000, 100 if args.smoke else 4500, seed=10000)
    mia_s = common.timed(lambda: mia_efficacy(member, nonmember, target))[0]
    epoch45 = ep["epoch_s"]["falw_ray"] * scale
    print(f"MIA {mia_s:.2f}s per evaluation; a 45k-image epoch {epoch45:.2f}s: MIA share of (epoch + MIA) "
          f"{mia_s / (epoch45 + mia_s):.1%} (evaluation forward passes not counted)")

    print(f"\n3. trials per GPU-hour at {args.levels} packed trials ...", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="falw_gpu_check_"))
    import study_throughput

    orig_init = study_throughput.init_ray

    def init_ray(trace, **kw):  # run_falw starts a local Ray per level; num_gpus=1 fakes a GPU without CUDA
        orig_init(trace, num_gpus=None if has_cuda else 1, **kw)

    study_throughput.init_ray = init_ray
    pack = pack_part(dev, workdir, args.levels, args.pack_trials, args.trial_cpus, args.pack_train, args.pack_test,
                     args.pack_epochs, started + args.budget_s)
    print(common.table(pack, floatfmt="{:.1f}"))
    done = [r for r in pack if "trials per GPU-hour" in r]
    if done and done[0]["trials per GPU"] == 1:
        for r in done[1:]:
            print(f"  {r['trials per GPU']} per GPU: {r['trials per GPU-hour'] / done[0]['trials per GPU-hour']:.2f}x "
                  f"the trials per GPU-hour of 1 per GPU")
    total = time.time() - started
    print(f"\ntotal {total:.0f}s" + ("" if total < 300 else " (over the 5-minute aim)"))
    common.save_json(args.json, {"machine": info, "device": name, "peak_tflops": peak, "epoch": ep, "mia_s": mia_s,
                                 "pack": pack, "total_s": total, "smoke": args.smoke})
    return 0 if has_cuda else 2


if __name__ == "__main__":
    sys.exit(main())
