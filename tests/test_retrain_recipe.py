"""The Retrain method trains with the scenario's own recipe: with the recipe's epochs it is the stored
retrained baseline, bit for bit on the CPU (digits, a short recipe that differs from every default)."""
import numpy as np
import pytest
import torch

from falw_ray.baselines import model_from, scenario_data, store_baselines, stored_baselines, tensors_for
from falw_ray.columns import MEASURED
from falw_ray.metrics import evaluate
from falw_ray.models import build_model
from falw_ray.recipe import Recipe
from falw_ray.scenario import Scenario
from falw_ray.store import BaselineStore
from falw_ray.unlearn import get_method, unlearn
from falw_ray.unlearn.retrain import METHOD, for_scenario

# Every field away from the digits default: a multistep schedule with its own decay, batch size,
# momentum and weight decay, augmentation on (digits crops by one pixel).
RECIPE = Recipe(epochs=4, batch_size=48, lr=0.03, momentum=0.8, weight_decay=1e-3, schedule="multistep",
                milestones=(2, 3), lr_decay=0.5, augment=True)
SCENARIO = Scenario(dataset="digits", seed=3, recipe=RECIPE)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    store = BaselineStore(tmp_path_factory.mktemp("store"))
    store_baselines(SCENARIO, store, device="cpu")
    base, events = stored_baselines(SCENARIO, store, scenario_data(SCENARIO))
    assert (events["original"], events["retrained"]) == ("hit", "hit")
    return store, base


def retrain_with(method, base, **kwargs):
    data = scenario_data(SCENARIO)
    t = tensors_for(base, torch.device("cpu"), data)
    model = model_from(SCENARIO, data, base.original, torch.device("cpu"))
    unlearn(model, method, t, seed=SCENARIO.seed, batch_size=512, **kwargs)
    return model, evaluate(model, t)


def test_retrain_with_the_recipe_is_the_stored_retrained_baseline(stored):
    store, base = stored
    method = for_scenario(SCENARIO)
    resolved = method.resolve(None, False)
    assert resolved == {"lr": 0.03, "epochs": 4, "momentum": 0.8, "weight_decay": 1e-3}
    model, metrics = retrain_with(method, base)
    # batch_size=512 above is the unlearning default: Retrain takes the recipe's 48 regardless.
    weights = store.load("retrained", SCENARIO.key()).state
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), weights[k]), k
    for k in MEASURED:
        assert metrics[k] == base.retrained_metrics[k], k
    assert np.array_equal(np.asarray(metrics["fa_per_class"]), np.asarray(base.retrained_metrics["fa_per_class"]),
                          equal_nan=True)
    assert metrics["fa"] != base.original_metrics["fa"] or metrics["ra"] != base.original_metrics["ra"], \
        "the original model was really replaced"


def test_the_unbound_method_does_not_know_the_recipe(stored):
    """What run_method did before: the registry's Retrain with only lr and epochs from the recipe trains
    with the digits defaults (cosine, batch 64, momentum 0.9, wd 5e-4), so it is another model."""
    _, base = stored
    model, _ = retrain_with(METHOD, base, hp={"lr": RECIPE.lr, "epochs": RECIPE.epochs})
    weights = base.retrained
    assert any(not np.array_equal(v.numpy(), weights[k]) for k, v in model.state_dict().items()
               if v.is_floating_point())


@pytest.mark.parametrize("name, shape", [("cnn", (1, 8, 8)), ("conv1d", (1, 40))])
def test_the_unbound_reinitialisation_is_a_fresh_model(name, shape):
    """The registry's Retrain (no scenario) resets every layer in module order after seeding: for the
    small CNN and conv1d that is exactly the model a baseline run builds (conv1d's layers included)."""
    from falw_ray.train import seed_everything
    from falw_ray.unlearn.base import UnlearnState

    seed_everything(7)
    fresh = build_model(name, 10, shape).state_dict()
    torch.manual_seed(123)
    used = build_model(name, 10, shape)
    for p in used.parameters():
        p.data.add_(1.0)
    state = UnlearnState(model=used, t=None, hp={}, gen=torch.Generator().manual_seed(7), batch_size=1, epochs=1)
    METHOD.prepare(state)
    for k, v in used.state_dict().items():
        assert torch.equal(v, fresh[k]), k


def test_the_registry_retrain_keeps_its_name_and_defaults():
    m = get_method("retrain")
    assert m is METHOD and not m.forget_term and m.space() == {}
    assert m.defaults() == {"lr": 0.05, "epochs": 30, "momentum": 0.9, "weight_decay": 5e-4}
