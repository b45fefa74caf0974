"""The top-level API: the names a study runner or a method author needs, importable from ``falw_ray``
itself, and an ``import falw_ray`` that loads none of torch, Ray or MLflow until a name is used."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "ray", "mlflow", "optuna", "pandas")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_importing_falw_ray_loads_no_heavy_library():
    assert _loaded_after("import falw_ray; falw_ray.__version__; dir(falw_ray)") == []


def test_a_public_name_loads_what_it_needs_on_first_use():
    assert "torch" in _loaded_after("import falw_ray; falw_ray.Experiment")


def test_declaring_a_method_loads_no_heavy_library():
    """A method's declaration (name, hyperparameters, options) is read by `falw-ray methods` and
    `validate`: torch comes in only when the method runs."""
    declared = ("import falw_ray; from falw_ray.unlearn import METHODS; "
                "falw_ray.Method('m', 's', {'lr': falw_ray.Param(0.1, 0.01, 1.0)}, 'forget', loss=len); "
                "[m.space(True) for m in METHODS.values()]")
    assert _loaded_after(declared) == []
    assert "torch" in _loaded_after(declared + "; falw_ray.falw_weighted_mean.__globals__['torch'].zeros(1)")


def test_the_public_names_are_the_internal_objects():
    import falw_ray
    from falw_ray import (Batch, DatasetArrays, Experiment, Method, Option, Param, Scenario, Study,
                          UnlearnState, falw_weighted_mean, forget_weights)
    from falw_ray.data.arrays import DatasetArrays as arrays
    from falw_ray.experiment import Experiment as experiment
    from falw_ray.study.runner import Study as study
    from falw_ray.unlearn import base, losses

    assert (Study, Experiment, DatasetArrays) == (study, experiment, arrays)
    assert (Method, Param, Option, Batch, UnlearnState) == (base.Method, base.Param, base.Option, base.Batch,
                                                            base.UnlearnState)
    assert (falw_weighted_mean, forget_weights) == (losses.falw_weighted_mean, losses.forget_weights)
    assert Scenario.__module__ == "falw_ray.scenario"
    assert set(falw_ray.__all__) <= set(dir(falw_ray))
    with pytest.raises(AttributeError, match="no attribute 'METHODS'"):
        falw_ray.METHODS


def test_falw_weighted_mean_weighs_forget_rows_only():
    """Against the paper's reduction written out: forget rows times their weight, retain rows
    times 1, summed over the batch and divided by its size."""
    from falw_ray import Batch, UnlearnState, falw_weighted_mean

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    forget = torch.tensor([True, False, True, True, False, False])
    given = torch.tensor([0.25, 9.0, 1.5, 0.75, 9.0, 9.0])  # what FaLW would weigh each row by
    state = UnlearnState(model=torch.nn.Identity(), t=None, hp={}, gen=gen, batch_size=6, epochs=1,
                         weigh=lambda lg, labels: given.clone())
    per_sample = F.cross_entropy(logits, y, reduction="none")
    got = falw_weighted_mean(state, logits, Batch(logits, y, forget, torch.arange(6)), per_sample)
    expected = sum((given[i] if forget[i] else 1.0) * per_sample[i] for i in range(6)) / 6
    torch.testing.assert_close(got, expected)
    off = UnlearnState(model=torch.nn.Identity(), t=None, hp={}, gen=gen, batch_size=6, epochs=1)
    torch.testing.assert_close(falw_weighted_mean(off, logits, Batch(logits, y, forget, torch.arange(6)), per_sample),
                               per_sample.mean())
