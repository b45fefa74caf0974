"""Search cells: one per (scenario, method, FaLW on/off). Trials are compared only within their cell."""
from __future__ import annotations

from dataclasses import dataclass, field

from ...scenario import Scenario
from ...unlearn import Param, get_method
from ..record.trials import scenario_label
from ..spec import StudySpec


@dataclass(frozen=True)
class Cell:
    id: str
    scenario: Scenario
    method: str
    falw: bool
    space: dict[str, Param]
    fixed: dict[str, float]
    epochs: int
    batch_size: int | None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.method}{'+falw' if self.falw and self.method != 'falw' else ''}"

    def hp(self, config: dict) -> dict:
        """The full hyperparameters of a trial: the sampled ones plus this cell's fixed ones."""
        return {**{k: config[k] for k in self.space}, **self.fixed}

    def at_seed(self, seed: int) -> Scenario:
        return self.scenario.model_copy(update={"seed": seed})


def build_cells(spec: StudySpec) -> list[Cell]:
    cells = []
    for scenario in spec.scenario_list():
        for entry in spec.methods:
            for falw in entry.falw_modes():
                space, fixed = entry.search_space(falw)
                method = get_method(entry.name)
                # Retrain's budget is its scenario's recipe (the retrained baseline's), not a method default.
                default = scenario.recipe.epochs if entry.name == "retrain" else method.params["epochs"].default
                epochs = entry.epochs or int(fixed.get("epochs", default))
                space.pop("epochs", None)
                fixed.pop("epochs", None)
                label = f"{entry.name}{'+falw' if falw and entry.name != 'falw' else ''}"
                cells.append(Cell(
                    id=f"{scenario_label(scenario)}/{label}", scenario=scenario, method=entry.name, falw=falw,
                    space=space, fixed=fixed, epochs=epochs, batch_size=entry.batch_size, options=dict(entry.options),
                ))
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"methods: the same cell appears twice: {dupes[0]}")
    return cells
