"""Benchmark 6: memory. Peak resident memory of a trial worker, and each baseline held once in
Ray's object store however many trials read it.

    python benchmarks/memory.py                          # digits + CIFAR-shaped ResNet-18 (reduced) + full-size probe
    python benchmarks/memory.py --cifar-train 12000 --cifar-test 2000 --trials 4

1. digits: the quickstart cut to 2 trials per cell (45 trials, 3 scenarios) through Study.run.
2. CIFAR-shaped ResNet-18 through Study.run: CIFAR-10 files in the real on-disk format, written
   here with random images (--cifar-train / --cifar-test images; 500 per class go to the validation
   split as on CIFAR-10, so the pool is what is left), baselines trained by the study with a one-epoch
   recipe, RL trials at batch 512 (the reference unlearning batch), FaLW off.
   For both: peak RSS of each trial worker (measured in the worker at every report, by
   benchmarks/instrument.py), the object store's usage sampled every 0.5 s while the study runs,
   the size of each baseline object, and, per trial, whether the baseline arrays it read are
   read-only views of the object store (zero-copy) rather than private copies.
3. A full-size probe (a child process, no Ray): CIFAR-10's real sizes (50,000 + 10,000 images),
   the scenario's resident tensors, ResNet-18, one training step at batch 512 and one evaluation
   batch of 1,024 (falw_ray.train.train_epoch, falw_ray.metrics.predict): the peak RSS a full-size
   CIFAR trial worker reaches on top of Ray's own footprint. Training a full epoch on this CPU
   would take most of an hour, which is why the Study run above is reduced.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """CIFAR-10's python-version files (5 training batches, a test batch, the meta file), random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = -(-n_train // 5)
    for i in range(5):
        n = min(per, n_train - i * per)
        labels = (np.arange(i * per, i * per + n) % 10).tolist()  # balanced classes
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i + 1} of 5", "labels": labels,
                         "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": ["x.png"] * n}, f, 2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": (np.arange(n_test) % 10).tolist(),
                     "data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)}, f, 2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072}, f, 2)
    return root


def cifar_study(root: Path, data_dir: Path, trials: int) -> Path:
    import yaml

    spec = {
        "name": "memory_cifar",
        "scenarios": [{"dataset": "cifar10", "model": "resnet18", "data_dir": str(data_dir),
                       "forget": {"kind": "longtail", "ratio": 0.1, "gamma": 1.0}, "seed": 0,
                       "recipe": {"epochs": 1, "batch_size": 256, "lr": 0.05, "schedule": "constant"}}],
        "methods": [{"name": "rl", "falw": "off", "epochs": 1, "batch_size": 512}],
        "search": {"trials": trials, "sampler_seed": 0},
        "early_stopping": {"enabled": False},
        "resources": {"cpu": 1, "gpu": 0},
        "final": {"seeds": [0]},
    }
    path = root / "memory_cifar.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def summarise(name: str, run: dict) -> dict:
    recs = run["trace"]
    by_pid: dict = {}
    for r in recs:
        by_pid[r["pid"]] = max(by_pid.get(r["pid"], 0.0), r["maxrss_mib"])
    keys: dict = {}
    for r in recs:
        keys.setdefault(r["baseline_key"], set()).add(r["trial"])
    samples = run["object_store"]
    mib = [s[1] for s in samples if s[1] == s[1]]
    objs = [s[2] for s in samples if s[2] >= 0]
    bytes_ = {r["baseline_key"]: r.get("baseline_mib") for r in recs}
    return {
        "case": name, "trials": len(recs), "worker processes": len(by_pid),
        "peak worker RSS MiB (max)": max(by_pid.values(), default=float("nan")),
        "peak worker RSS MiB (median)": common.median(list(by_pid.values())),
        "baseline objects": len(keys), "trials per baseline (max)": max((len(v) for v in keys.values()), default=0),
        "baseline object MiB": max((v for v in bytes_.values() if v), default=float("nan")),
        "all reads zero-copy": all(r.get("baseline_readonly") for r in recs),
        "object store MiB min/max": f"{min(mib, default=float('nan')):.0f}/{max(mib, default=float('nan')):.0f}",
        "object store objects min/max": f"{min(objs, default=-1)}/{max(objs, default=-1)}",
        "store samples": len(samples),
    }


def probe_child(n_train: int, n_test: int, batch: int, eval_batch: int) -> None:
    """Run in a child process: full-size CIFAR-shaped tensors, ResNet-18, one step, one eval batch."""
    import torch

    from falw_ray.data.arrays import DatasetArrays
    from falw_ray.data.registry import make_splits
    from falw_ray.metrics import predict
    from falw_ray.models import build_model
    from falw_ray.tensors import scenario_tensors
    from falw_ray.train import prepare_model, sgd, train_epoch

    torch.set_num_threads(1)
    out = {"start": common.rss_mib()}
    rng = np.random.default_rng(0)
    data = DatasetArrays(name="cifar10", train_x=rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
                         train_y=(np.arange(n_train) % 10).astype(np.int64),
                         test_x=rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
                         test_y=(np.arange(n_test) % 10).astype(np.int64), num_classes=10,
                         mean=CIFAR_MEAN, std=CIFAR_STD, crop_pad=4, flip=True)
    out["dataset_arrays"] = common.rss_mib()
    splits = make_splits(data, "longtail", 0.1, 1.0, (), 0)
    t = scenario_tensors(data, splits, torch.device("cpu"))
    out["scenario_tensors"] = common.rss_mib()
    out["tensor_mib"] = sum(v.element_size() * v.nelement() for v in vars(t).values()
                            if isinstance(v, torch.Tensor)) / 2**20
    model = prepare_model(build_model("resnet18", 10, (3, 32, 32)), torch.device("cpu"))
    opt = sgd(model.parameters(), 0.01)
    gen = torch.Generator().manual_seed(0)
    train_epoch(model, opt, t.retain_x[:batch], t.retain_y[:batch], batch, gen)
    out["after_train_step"] = common.rss_mib()
    predict(model, t.retain_x[:eval_batch], t.retain_y[:eval_batch], 10, batch_size=eval_batch)
    out["peak"] = common.peak_rss_mib()
    print("PROBE " + json.dumps(out), flush=True)


def probe(n_train: int, n_test: int, batch: int, eval_batch: int) -> dict:
    cmd = [sys.executable, __file__, "--probe-child", str(n_train), str(n_test), str(batch), str(eval_batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if line is None:
        raise RuntimeError(f"probe failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(line[6:])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe-child":
        probe_child(*map(int, sys.argv[2:6]))
        return 0
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--cifar-train", type=int, default=6000)
    p.add_argument("--cifar-test", type=int, default=1000)
    p.add_argument("--trials", type=int, default=2, help="search trials of the CIFAR-shaped study")
    p.add_argument("--skip-digits", action="store_true")
    p.add_argument("--skip-cifar", action="store_true")
    p.add_argument("--skip-probe", action="store_true")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    info = common.header("benchmark 6: memory")
    from study_throughput import run_falw

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="falw_bench_memory_"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    rows, figures = [], {"machine": info}
    if not args.skip_digits:
        print("digits: the quickstart, 2 trials per cell ...", flush=True)
        run = run_falw(common.ROOT / "studies" / "quickstart.yaml", workdir, None, uri, "digits", 2, None, poll=0.5)
        rows.append(summarise("digits CNN (quickstart, 2 trials/cell)", run))
        figures["digits_store_samples"] = run["object_store"]
    if not args.skip_cifar:
        print(f"CIFAR-shaped: writing {args.cifar_train} + {args.cifar_test} images in CIFAR-10's format ...", flush=True)
        data_dir = write_cifar10(workdir / "cifar_data", args.cifar_train, args.cifar_test)
        study = cifar_study(workdir, data_dir, args.trials)
        run = run_falw(study, workdir, None, uri, "cifar", None, None, poll=0.5)
        rows.append(summarise(f"ResNet-18, CIFAR-shaped ({args.cifar_train}+{args.cifar_test} images)", run))
        figures["cifar_store_samples"] = run["object_store"]
    if rows:
        print("\n" + common.table(rows, floatfmt="{:.1f}"))
    if not args.skip_probe:
        print("\nfull-size probe (child process, no Ray): CIFAR-10 sizes, ResNet-18, batch 512 ...", flush=True)
        pr = probe(50000, 10000, 512, 1024)
        figures["probe"] = pr
        print(common.table([{"stage": k, "RSS MiB": v} for k, v in pr.items()], floatfmt="{:.0f}"))
    figures["rows"] = rows
    common.save_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
