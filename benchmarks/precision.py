"""Benchmark 7: what bf16 autocast does to unlearning results (fp32 is the default, as the references).

    python benchmarks/precision.py                       # mnist1d, seeds 1 2 3, falw and rl+falw at lr 0.01
    python benchmarks/precision.py --device cuda         # on a GPU: bf16 there is the real thing

For each seed the same run (method, learning rate, seed, stored baselines) is made twice, with
``precision="fp32"`` and ``"bf16"``, and compared: the Avg. Gap to Retrain of each, and, on the
original model before any step, FaLW's weights of the forget samples computed from fp32 and from
bf16 logits (share whose sign differs, mean absolute difference). On a CPU, bf16 autocast emulates
the GPU's rounding of matrix products; its speed there says nothing about a GPU's.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist1d")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=["falw", "rl+falw"])
    p.add_argument("--lr", type=float, default=0.01, help="the reference recipe's unlearning lr, not tuned")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    info = common.header("benchmark 7: precision")
    import torch

    torch.set_num_threads(args.threads)
    from falw_ray.experiment import Experiment
    from falw_ray.scenario import ForgetSpec, Scenario
    from falw_ray.train import autocast
    from falw_ray.unlearn.falw import class_confidence_stats, falw_weights

    rows, weights = [], []
    for seed in args.seeds:
        exp = Experiment(Scenario(dataset=args.dataset, forget=ForgetSpec(kind="longtail", ratio=0.1, gamma=1.0),
                                  seed=seed), device=args.device)
        b, t = exp.baselines, None
        for method in args.methods:
            name, falw = (method[:-5], True) if method.endswith("+falw") else (method, None)
            out = {}
            for precision in ("fp32", "bf16"):
                r = exp.run(name, falw, hp={"lr": args.lr}, precision=precision)
                out[precision] = r
                t = exp._tensors
            rows.append({"seed": seed, "method": method, "fp32 Avg. Gap": out["fp32"].gaps["avg_gap"],
                         "bf16 Avg. Gap": out["bf16"].gaps["avg_gap"],
                         "bf16 - fp32": out["bf16"].gaps["avg_gap"] - out["fp32"].gaps["avg_gap"],
                         "fp32 s": out["fp32"].seconds, "bf16 s": out["bf16"].seconds})
            print(rows[-1], flush=True)
        from falw_ray.baselines import model_from
        from falw_ray.data.registry import load_dataset

        model = model_from(b.scenario, load_dataset(*b.scenario.data_args()), b.original, exp.device).eval()
        w = {}
        for precision in ("fp32", "bf16"):
            mu, sigma = class_confidence_stats(model, t.val_x, t.val_y, t.num_classes, precision=precision)
            with torch.no_grad(), autocast(exp.device, precision):
                logits = model(t.forget_x)
            p_true = logits.float().softmax(1).gather(1, t.forget_y[:, None]).squeeze(1)
            w[precision] = falw_weights(p_true, t.forget_y, mu, sigma, t.forget_counts, 0.2)
        flips = ((w["fp32"] > 1) != (w["bf16"] > 1)).float().mean().item() * 100
        weights.append({"seed": seed, "sign differs (%)": flips,
                        "mean |w_bf16 - w_fp32|": (w["bf16"] - w["fp32"]).abs().mean().item()})
        print(weights[-1], flush=True)
    print(common.table(rows, floatfmt="{:.2f}"))
    print(common.table(weights, floatfmt="{:.4f}"))
    common.save_json(args.json, {"machine": info, "runs": rows, "weights": weights})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
