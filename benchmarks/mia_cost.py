"""Benchmark 5: the cost of MIA-Efficacy (SVC on the true-class confidence) on CIFAR-sized inputs.

    python benchmarks/mia_cost.py                 # 5,000 and 10,000 shadow points per side, 3 pairs
    python benchmarks/mia_cost.py --sizes 10000 --repeats 5 --dedup-draws 40

Inputs are made here, CIFAR-sized and realistic in form: true-class softmax probabilities computed
in float32 from logits whose true-class margin is drawn per sample (members: the retain subset of a
model that fits its training data, so ~30% of them saturate at exactly 1.0; non-members: the test
set; targets: a 10% forget set of CIFAR-10's 45,000-image pool, 4,500 points).

Sides, timed in pairs with the order alternating:
  plain    the straightforward scikit-learn computation (what tests/test_metrics.py compares with):
           SVC(C=3, gamma="auto").fit(members + non-members); 100 * (1 - mean(predict(targets)))
  falw_ray falw_ray.metrics.mia_efficacy, checked equal to `plain` to 1e-6 on every input
Also measured, not adopted (see BENCHMARKS.md): libsvm cache_size 2000 MB, and fitting on the
distinct (confidence, label) pairs with sample_weight = counts (the same dual problem on paper).

The share of a trial's time: a CIFAR-10 trial epoch (RL over the 45,000-image pool, then FA/RA/TA
over forget + retain + test = 55,000 forward passes, then the MIA) with ResNet-18 at batch 512 on
this machine, from per-image rates measured here on CIFAR-shaped data with falw_ray's own loop.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def confidences(n: int, margin_mu: float, margin_sd: float, rng: np.random.Generator, classes: int = 10) -> np.ndarray:
    """True-class softmax probabilities as falw_ray.metrics.predict makes them (float32 softmax)."""
    import torch

    logits = rng.normal(0.0, 1.0, (n, classes)).astype(np.float32)
    margin = rng.normal(margin_mu, margin_sd, n).astype(np.float32)
    logits[:, 0] = logits[:, 1:].max(1) + margin
    return torch.from_numpy(logits).float().softmax(1)[:, 0].numpy().astype(np.float64)


def inputs(per_side: int, targets: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (confidences(per_side, 14.0, 5.0, rng), confidences(per_side, 8.0, 6.0, rng),
            confidences(targets, 10.0, 6.0, rng))


def plain(member, nonmember, target, **svc) -> float:
    from sklearn.svm import SVC

    x = np.concatenate([member, nonmember]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    clf = SVC(C=3, gamma="auto", kernel="rbf", **svc).fit(x, y)
    return float(100.0 * (1.0 - clf.predict(np.asarray(target).reshape(-1, 1)).mean()))


def merged(member, nonmember, target) -> float:
    """Distinct (confidence, label) pairs weighted by their counts: the same dual problem on paper,
    but libsvm walks a different path to its tolerance, so the boundary can move (not adopted)."""
    from sklearn.svm import SVC

    x = np.concatenate([member, nonmember])
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    pairs, counts = np.unique(np.stack([x, y], 1), axis=0, return_counts=True)
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(pairs[:, :1], pairs[:, 1], sample_weight=counts.astype(np.float64))
    values, tc = np.unique(target, return_counts=True)
    pred = clf.predict(values.reshape(-1, 1))
    return float(100.0 * (1.0 - tc[pred == 1].sum() / len(target)))


def resnet_rates(threads: int, batch: int, steps: int) -> dict:
    """Seconds per image of a ResNet-18 training step and of an evaluation forward pass on
    CIFAR-shaped data, with falw_ray's loop (train_epoch) and evaluator (metrics.predict)."""
    import torch

    from falw_ray.metrics import predict
    from falw_ray.models import build_model
    from falw_ray.train import prepare_model, sgd, train_epoch

    torch.set_num_threads(threads)
    dev = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    n = batch * steps
    x = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    model = prepare_model(build_model("resnet18", 10, (3, 32, 32)), dev)
    opt = sgd(model.parameters(), 0.01)
    model.train()
    train_epoch(model, opt, x[:batch], y[:batch], batch, gen)  # warm-up step
    t0 = time.perf_counter()
    train_epoch(model, opt, x, y, batch, gen)
    train = (time.perf_counter() - t0) / n
    predict(model, x[:batch], y[:batch], 10, batch_size=batch)
    t0 = time.perf_counter()
    predict(model, x, y, 10, batch_size=batch)
    evaluate = (time.perf_counter() - t0) / n
    return {"train_s_per_image": train, "eval_s_per_image": evaluate, "threads": threads, "batch": batch}


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000], help="shadow points per side")
    p.add_argument("--targets", type=int, default=4500, help="forget-set points (CIFAR-10, 10%% of 45,000)")
    p.add_argument("--repeats", type=int, default=3, help="pairs per size")
    p.add_argument("--dedup-draws", type=int, default=30, help="inputs on which the merged variant is checked")
    p.add_argument("--dedup-size", type=int, default=3000, help="points per side for those draws")
    p.add_argument("--trial-threads", type=int, default=1, help="torch threads of the trial (falw_ray uses 1 per CPU)")
    args = p.parse_args()
    info = common.header("benchmark 5: MIA-Efficacy cost")
    from falw_ray.metrics import mia_efficacy

    rows, figures = [], {"machine": info, "sizes": {}}
    for size in args.sizes:
        member, nonmember, target = inputs(size, args.targets, seed=size)
        values = {}

        def side(name, fn):
            def run(i):
                secs, v = common.timed(lambda: fn(member, nonmember, target))
                values.setdefault(name, []).append(v)
                return secs
            return run

        print(f"{size} points per side, {args.targets} targets; "
              f"{np.mean(member == 1.0):.0%} of members and {np.mean(nonmember == 1.0):.0%} of non-members at exactly 1.0; "
              f"distinct targets {len(np.unique(target))}", flush=True)
        res = common.paired({"plain": side("plain", plain), "falw_ray": side("falw_ray", mia_efficacy)}, args.repeats)
        big_cache = [common.timed(lambda: plain(member, nonmember, target, cache_size=2000))[0] for _ in range(1)]
        s = common.ratio_summary(res["plain"], res["falw_ray"])
        diff = max(abs(a - b) for a, b in zip(values["plain"], values["falw_ray"]))
        figures["sizes"][size] = {**s, "max_abs_diff": diff, "value": values["plain"][0], "cache2000_s": big_cache[0]}
        rows.append({"per side": size, "plain s": s["median_slow"], "falw_ray s": s["median_fast"],
                     "ratio": s["ratio_of_medians"], "pair ratios": s["pair_ratios"],
                     "cache_size=2000 s": big_cache[0], "MIA": values["plain"][0], "|diff|": diff})

    print("\ncheck: the merged (sample_weight) variant against plain on "
          f"{args.dedup_draws} inputs of {args.dedup_size} per side", flush=True)
    rng = np.random.default_rng(123)
    mismatches, t_plain, t_merged, worst = 0, 0.0, 0.0, 0.0
    for d in range(args.dedup_draws):
        mm, ms = rng.uniform(8, 20), rng.uniform(2, 7)
        nm_, ns = rng.uniform(3, 12), rng.uniform(3, 8)
        m = confidences(args.dedup_size, mm, ms, rng)
        nm = confidences(args.dedup_size, nm_, ns, rng)
        tg = confidences(args.dedup_size // 2, rng.uniform(3, 15), rng.uniform(2, 8), rng)
        a_s, a = common.timed(lambda: plain(m, nm, tg))
        b_s, b = common.timed(lambda: merged(m, nm, tg))
        t_plain, t_merged = t_plain + a_s, t_merged + b_s
        worst = max(worst, abs(a - b))
        if abs(a - b) > 1e-6:
            mismatches += 1
            print(f"  input {d}: plain {a:.4f} vs merged {b:.4f} (of {len(tg)} targets)", flush=True)
    figures["merged"] = {"draws": args.dedup_draws, "mismatches": mismatches, "worst_abs_diff": worst,
                         "speedup": t_plain / t_merged if t_merged else float("nan")}
    print(f"  merged variant: {mismatches} of {args.dedup_draws} inputs differ by more than 1e-6 "
          f"(worst {worst:.4f} points); {t_plain / t_merged:.1f}x faster in total", flush=True)

    print("\nResNet-18 rates on CIFAR-shaped data (falw_ray loop, this machine) ...", flush=True)
    rates = resnet_rates(args.trial_threads, batch=128, steps=2)
    figures["resnet_rates"] = rates
    epoch_train = 45000 * rates["train_s_per_image"]
    epoch_eval = 55000 * rates["eval_s_per_image"]
    share_rows = []
    for size in args.sizes:
        mia = figures["sizes"][size]["median_fast"]
        mia_plain = figures["sizes"][size]["median_slow"]
        total = epoch_train + epoch_eval + mia
        share_rows.append({"per side": size, "epoch train s": epoch_train, "eval fwd s": epoch_eval, "MIA s": mia,
                           "MIA share": mia / total,
                           "share if epoch+eval were 5 s (assumed GPU)": mia / (5.0 + mia),
                           "plain share, same assumption": mia_plain / (5.0 + mia_plain)})
        figures["sizes"][size]["share_cpu"] = mia / total

    print("\n" + common.table(rows, floatfmt="{:.3f}"))
    print("\nshare of a CIFAR-10 / ResNet-18 trial epoch (per-image rates measured here, "
          f"{rates['threads']} thread(s), batch {rates['batch']}):")
    print(common.table(share_rows, floatfmt="{:.4f}"))
    ok = all(v["max_abs_diff"] <= 1e-6 for v in figures["sizes"].values())
    print(f"\nvalue unchanged (|falw_ray - plain| <= 1e-6 on every run): {ok}")
    common.save_json(args.json, figures)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
