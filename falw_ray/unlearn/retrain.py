"""Retrain: the gold standard. Re-initialise and train from scratch on the retain set with the
scenario's own recipe, so that the Retrain cell is the retrained baseline it is compared with.

The recipe (schedule, milestones, lr decay, batch size, augmentation) is not a hyperparameter, so it
reaches the method by binding: ``for_scenario(scenario)`` is Retrain with that scenario's recipe and
model. Its ``lr``, ``epochs``, ``momentum`` and ``weight_decay`` default to the recipe's (hp may
override them); it rebuilds the model exactly as the baseline is built (the scenario's model, seeded
by the run's seed) and trains it as ``falw_ray.train.fit`` does. With the scenario's seed and the
recipe's epochs it reproduces the stored retrained baseline (bit for bit on the CPU).

The registry's ``METHOD`` (no scenario bound) uses the data set's default recipe and re-initialises
every layer in place (``reset_parameters`` in module order, after seeding): for the small CNN and
the conv1d model that is the fresh model itself, for torchvision's models only an equivalent one.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial


from ..models import build_model
from ..recipe import Recipe, default_recipe
from ..train import lr_at, seed_everything, set_lr, train_epoch
from .base import Method, Param, UnlearnState


def recipe_params(recipe: Recipe) -> dict[str, Param]:
    """Retrain's hyperparameters, defaulting to ``recipe``'s (never searched: Retrain is the reference)."""
    return {
        "lr": Param(recipe.lr, min(1e-3, recipe.lr), max(0.5, recipe.lr), log=True, searched=False,
                    help="initial learning rate (default: the scenario recipe's)"),
        "epochs": Param(recipe.epochs, 1, max(500, recipe.epochs), integer=True, searched=False,
                        help="training epochs, also the schedule's length (default: the scenario recipe's)"),
        "momentum": Param(recipe.momentum, 0.0, 0.999, searched=False,
                          help="SGD momentum (default: the scenario recipe's)"),
        "weight_decay": Param(recipe.weight_decay, 0.0, max(0.1, recipe.weight_decay), searched=False,
                              help="SGD weight decay (default: the scenario recipe's)"),
    }


def _seed_of(state: UnlearnState) -> int:
    """The run's seed (``unlearn(seed=...)``): its batch generator was made from it, and has drawn nothing yet."""
    return state.gen.initial_seed()


def reinitialise(state: UnlearnState) -> None:
    """Every layer's own initialisation, in module order, after seeding as a baseline run does."""
    seed_everything(_seed_of(state))
    for module in state.model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # BatchNorm's also resets its running statistics


def rebuild(model_name: str, state: UnlearnState) -> None:
    """The weights of a fresh ``model_name``, built after seeding exactly as the baseline's is
    (baselines.train_role: seed_everything, then build_model), copied into the model in place."""
    t = state.t
    seed_everything(_seed_of(state))
    fresh = build_model(model_name, t.num_classes, tuple(t.retain_x.shape[1:]))
    state.model.load_state_dict(fresh.state_dict())


def run_epoch(recipe: Recipe | None, state: UnlearnState):
    """One epoch of ``falw_ray.train.fit`` on the retain set: the recipe's schedule, batch size and
    augmentation; lr and epochs (the schedule's length) from hp. No recipe: the data set's default."""
    recipe = recipe if recipe is not None else default_recipe(state.t.dataset)
    set_lr(state.opt, lr_at(state.epoch, state.epochs, state.hp["lr"], recipe.schedule, recipe.milestones,
                            recipe.lr_decay))
    t = state.t
    return train_epoch(state.model, state.opt, t.retain_x, t.retain_y, recipe.batch_size, state.gen,
                       t.aug if recipe.augment else None)


METHOD = Method(
    name="retrain",
    summary="train from scratch on the retain set with the scenario's recipe (the reference every gap is taken to)",
    layout="retain", run_epoch=partial(run_epoch, None), prepare=reinitialise, forget_term=False,
    params=recipe_params(Recipe()),
)


def for_recipe(recipe: Recipe, model_name: str | None = None) -> Method:
    """Retrain bound to ``recipe`` (its defaults and training) and, given ``model_name``, rebuilding
    that model exactly as a baseline is built (else re-initialising it in place, as ``METHOD``)."""
    return replace(METHOD, params=recipe_params(recipe), run_epoch=partial(run_epoch, recipe),
                   prepare=partial(rebuild, model_name) if model_name is not None else reinitialise)


def for_scenario(scenario) -> Method:
    """Retrain as the scenario's retrained baseline is trained (its recipe and model)."""
    return for_recipe(scenario.recipe, scenario.model)
