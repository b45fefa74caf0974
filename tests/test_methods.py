"""Every method on the digits long-tailed forget set (10%, gamma = 1), on the CPU."""
import numpy as np
import pytest
import torch

from falw_ray.baselines import model_from
from falw_ray.data.registry import load_dataset
from falw_ray.experiment import Experiment
from falw_ray.unlearn import METHODS, get_method, preset_options, resolve

# Learning rates that make each method act on digits within its reference epoch budget
# (the reference defaults are tuned for CIFAR and barely move a model this small).
DIGITS_HP = {
    "ft": {"lr": 0.05},
    "ga": {"lr": 0.006},
    "neggrad_plus": {"lr": 0.01, "alpha": 0.9},
    "rl": {"lr": 0.01},
    "salun": {"lr": 0.013},
    "l1_sparse": {"lr": 0.05, "alpha": 3e-4},
    "scrub": {"lr": 0.03, "msteps": 3},
    "boundary_shrink": {"lr": 0.001},
    "boundary_expanding": {"lr": 3e-4},
}
RA_FLOOR = 90.0
PUSHES_FORGET_AWAY = {"ga", "neggrad_plus", "scrub", "boundary_shrink"}
"""Methods whose loss drives forget samples off their label. On digits the retrained model itself keeps
every forget sample (FA 100), so FT, RL, SalUn, l1-sparse and Boundary Expanding at these rates move
0 to 3 of the 129, and which ones depends on the CPU: only these four are asked to lower FA. Measured
(FA / RA, natively on an AVX2 CPU, then with ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41):
GA 91.5 / 98.0 and 92.2 / 95.5, NegGrad+ 72.1 / 94.2 and 74.4 / 95.8, SCRUB 93.0 / 97.7 and 93.0 / 94.9,
Boundary Shrink 85.3 / 94.2 and 85.3 / 95.7; the others' RA 98.9 to 100 on both. The arithmetic of
every method is pinned in test_method_values.py."""


@pytest.fixture(scope="module")
def exp(digits_baselines):
    return Experiment(baselines=digits_baselines, device="cpu")


def test_registry_covers_the_spec():
    assert set(METHODS) == set(DIGITS_HP) | {"retrain"}
    for m in METHODS.values():
        assert "lr" in m.params and m.params["lr"].log
        if m.forget_term:
            tau = m.space(falw=True)["tau"]
            assert (tau.low, tau.default, tau.high) == (0.0, 0.2, 0.5) and "tau" not in m.space()
    assert get_method("salun").space()["mask_ratio"].default == 0.5
    assert "msteps" in get_method("scrub").space()
    assert get_method("neggrad_plus").params["alpha"].default == 0.9999, "SCRUB's code's default"
    assert "alpha" not in get_method("neggrad_plus").space(), "fixed as in the reference; a study's space may search it"


def test_paper_configuration_by_name():
    method, falw = resolve("falw")
    assert method.name == "salun" and falw is True
    assert preset_options("falw") == {"schedule": "mixed"}
    assert method.resolve_options(preset_options("falw"), "cifar10") == {"schedule": "mixed", "mask_mode": "grad"}
    assert resolve("salun", True) == (method, True) and resolve("salun") == (method, False)


@pytest.mark.parametrize("name", sorted(DIGITS_HP))
def test_method_acts_and_keeps_retain_accuracy(exp, digits_baselines, name):
    r = exp.run(name, False, hp=DIGITS_HP[name])
    start = model_from(digits_baselines.scenario, load_dataset("digits"), digits_baselines.original,
                       torch.device("cpu")).state_dict()
    after = r.model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in start.items() if after[k].shape == v.shape), "no weight moved"
    if name in PUSHES_FORGET_AWAY:
        assert r.metrics["fa"] < digits_baselines.original_metrics["fa"], r.metrics
    assert r.metrics["ra"] >= RA_FLOOR, r.metrics
    assert len(r.history) == get_method(name).params["epochs"].default
    widened = name == "boundary_expanding"  # judged with its shadow class, as the reference code
    assert r.model(torch.zeros(1, 1, 8, 8)).shape == (1, 11 if widened else 10)


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if m.forget_term))
def test_falw_changes_the_trajectory(exp, name):
    off = exp.run(name, False, hp=DIGITS_HP[name], epochs=2)
    on = exp.run(name, True, hp=DIGITS_HP[name], epochs=2)
    assert on.hp["tau"] == 0.2 and "tau" not in off.hp
    w_off, w_on = off.model.state_dict(), on.model.state_dict()
    assert any(not torch.equal(w_off[k], w_on[k]) for k in w_off if w_off[k].is_floating_point())


@pytest.mark.parametrize("name,falw", [("salun", True), ("scrub", False), ("boundary_expanding", True)])
def test_same_seed_same_result(exp, name, falw):
    a = exp.run(name, falw, hp=DIGITS_HP[name], epochs=2)
    b = exp.run(name, falw, hp=DIGITS_HP[name], epochs=2)
    assert [h["avg_gap"] for h in a.history] == [h["avg_gap"] for h in b.history]
    assert a.metrics == b.metrics
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_falw_needs_a_forget_term(exp):
    with pytest.raises(ValueError, match="no forget term"):
        exp.run("ft", True)


def test_unknown_hyperparameter_is_named(exp):
    with pytest.raises(ValueError, match="no hyperparameter 'mask'"):
        exp.run("salun", hp={"mask": 0.3})


def test_retrain_method_lands_near_the_reference(exp, digits_baselines):
    r = exp.run("retrain", epochs=10)
    assert r.gaps["avg_gap"] < 5 and r.metrics["ta"] > 90
    assert r.rte == pytest.approx(r.seconds / digits_baselines.retrain_seconds)


def test_history_reports_gaps_every_epoch(exp, digits_baselines):
    seen = []
    r = exp.run("rl", hp={"lr": 0.01}, epochs=3, on_epoch=seen.append)
    assert [row["epoch"] for row in seen] == [1, 2, 3] and seen == r.history
    for key in ("fa", "ra", "ta", "mia", "fa_gap", "ra_gap", "ta_gap", "mia_gap", "avg_gap",
                "fa_gap_head", "fa_gap_mid", "fa_gap_tail", "elapsed"):
        assert np.isfinite(seen[-1][key]), key
    ref = digits_baselines.retrained_metrics
    assert seen[-1]["fa_gap"] == pytest.approx(abs(seen[-1]["fa"] - ref["fa"]))
    assert 0 < seen[0]["elapsed"] <= seen[-1]["elapsed"] == r.seconds


def test_evaluating_fewer_epochs_leaves_the_run_unchanged(exp):
    """A run judged only at chosen epochs (and always the last) trains exactly as one judged every epoch."""
    every = exp.run("rl", hp={"lr": 0.01}, epochs=4)
    seen = []
    sparse = exp.run("rl", hp={"lr": 0.01}, epochs=4, eval_epochs=[2], on_epoch=seen.append)
    assert [row["epoch"] for row in seen] == [2, 4] and seen == sparse.history
    assert sparse.metrics == every.metrics and sparse.gaps == every.gaps
    assert [h["avg_gap"] for h in sparse.history] == [every.history[1]["avg_gap"], every.history[3]["avg_gap"]]
    for k, v in sparse.model.state_dict().items():
        assert torch.equal(v, every.model.state_dict()[k]), k


def test_compiled_run_reaches_the_same_result(exp):
    """torch.compile behind the switch: the run completes and judges the model as the eager one."""
    eager = exp.run("ft", hp={"lr": 0.1}, epochs=1)
    compiled = exp.run("ft", hp={"lr": 0.1}, epochs=1, compile=True)
    assert compiled.metrics["ra"] == pytest.approx(eager.metrics["ra"], abs=1.0)
    assert compiled.gaps["avg_gap"] == pytest.approx(eager.gaps["avg_gap"], abs=2.0)


def test_a_preset_refuses_a_contradicting_falw_switch():
    assert resolve("falw", True)[1] is True and resolve("falw")[1] is True
    with pytest.raises(ValueError, match="method 'falw' fixes FaLW on; leave falw out or name the base method 'salun'"):
        resolve("falw", False)
