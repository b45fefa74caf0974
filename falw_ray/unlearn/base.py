"""What a method is (losses, hyperparameters, default search space) and the loop that runs it.

A method module declares one ``Method``; the engine owns batching, the optimiser, the SalUn
gradient mask, the FaLW switch and the arithmetic precision, so the same method runs with or
without FaLW. What each method computes, and where it differs from its reference code, is in
docs/method.md.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..console import did_you_mean
from ..data.device import index_batches
from ..lazy import nn, torch
from ..train import autocast, sgd
from .falw import FalwWeigher, unit_weights

Layout = Literal["mixed", "forget", "retain", "paired"]


class DivergedError(RuntimeError):
    """The unlearning loss became NaN or infinite."""


class FalwUnused(ValueError):
    """FaLW was on, but the method ran an epoch without asking for its weights: the run would be
    labelled "with FaLW" and be the run without it."""


@dataclass(frozen=True)
class Param:
    """A hyperparameter: its default and the range a search draws it from."""

    default: float
    low: float
    high: float
    log: bool = False
    integer: bool = False
    searched: bool = True
    help: str = ""

    def __post_init__(self) -> None:
        if not self.low <= self.default <= self.high:
            raise ValueError(f"default {self.default} outside [{self.low}, {self.high}]")


OPTIMIZER = {
    "momentum": Param(0.9, 0.0, 0.99, searched=False, help="SGD momentum"),
    "weight_decay": Param(5e-4, 0.0, 1e-2, searched=False, help="SGD weight decay"),
}
"""The optimiser's settings every method takes (the reference recipe's), fixed unless a study's
space searches them; a method that declares its own (Retrain: its recipe's) uses those."""

TAU = Param(0.2, 0.0, 0.5, help="FaLW balancing factor; 0 switches class balancing off")
"""FaLW's own hyperparameter, added to a method's space when FaLW is on (docs/method.md, FaLW)."""


@dataclass(frozen=True)
class Option:
    """A method's non-searched choice (a schedule, an evaluation convention). ``default`` is one of
    ``choices``, or a mapping from data set to choice with ``"*"`` for the others: the reference
    code's own default can differ per data set."""

    choices: tuple[str, ...]
    default: str | Mapping[str, str]
    help: str = ""

    def default_for(self, dataset: str) -> str:
        if isinstance(self.default, str):
            return self.default
        return self.default.get(dataset, self.default["*"])


@dataclass
class Batch:
    """Rows of one step. ``forget`` marks forget-set rows; ``rows`` index their own split."""

    x: torch.Tensor
    y: torch.Tensor
    forget: torch.Tensor
    rows: torch.Tensor


@dataclass
class UnlearnState:
    """What a method's hooks and losses may read and change during one run."""

    model: nn.Module
    t: object
    hp: dict
    gen: torch.Generator
    batch_size: int
    epochs: int
    weigh: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = unit_weights
    options: dict = field(default_factory=dict)
    precision: str = "fp32"
    method: "Method | None" = None
    epoch: int = 0
    opt: torch.optim.Optimizer | None = None
    grad_mask: dict[str, torch.Tensor] | None = None
    extra: dict = field(default_factory=dict)

    def frozen_copy(self) -> nn.Module:
        """The original model, frozen (teacher or attack target), made once per run."""
        if "original" not in self.extra:
            m = copy.deepcopy(self.model).eval()
            for p in m.parameters():
                p.requires_grad_(False)
            self.extra["original"] = m
        return self.extra["original"]


Hook = Callable[[UnlearnState], None]


@dataclass(frozen=True)
class Method:
    """One unlearning method. ``loss`` maps a batch to a scalar; FaLW enters through ``state.weigh``.

    ``forget_term`` declares that the loss (or ``run_epoch``) weighs its forget rows by FaLW's weights
    (``state.weigh``, or ``falw_weighted_mean``): the method then runs with and without FaLW. False
    refuses FaLW (``falw: on`` is an error). A run with FaLW on whose first epoch never asked for a
    weight stops with FalwUnused."""

    name: str
    summary: str
    params: Mapping[str, Param]
    layout: Layout
    loss: Callable[[UnlearnState, Batch], torch.Tensor] | None = None
    forget_term: bool = True
    prepare: Hook | None = None
    epoch_start: Hook | None = None
    run_epoch: Callable[[UnlearnState], torch.Tensor] | None = None
    finish: Hook | None = None
    options: Mapping[str, Option] = field(default_factory=dict)

    def space(self, falw: bool = False) -> dict[str, Param]:
        """The default search space: the searched params, plus tau when FaLW is on."""
        space = {k: p for k, p in self.params.items() if p.searched}
        if falw:
            space["tau"] = TAU
        return space

    def all_params(self) -> dict[str, Param]:
        """The method's hyperparameters and the optimiser's settings it does not declare itself."""
        return {**OPTIMIZER, **self.params}

    def defaults(self, falw: bool = False) -> dict[str, float]:
        out = {k: p.default for k, p in self.all_params().items()}
        if falw:
            out["tau"] = TAU.default
        return out

    def resolve(self, hp: Mapping | None, falw: bool) -> dict:
        """Defaults overlaid with ``hp``; an unknown name is an error, not silently ignored."""
        out = self.defaults(falw)
        for k, v in (hp or {}).items():
            if k not in out:
                raise ValueError(f"method {self.name!r} has no hyperparameter {k!r}{did_you_mean(k, out)}; expected one "
                                 f"of {sorted(out)}")
            out[k] = v
        for k, p in self.params.items():
            if p.integer:
                out[k] = int(round(out[k]))
        return out

    def resolve_options(self, options: Mapping | None, dataset: str) -> dict[str, str]:
        """Every option of the method: the data set's default overlaid with ``options``; an unknown
        option or choice is a one-line error naming it and what was expected."""
        out = {k: o.default_for(dataset) for k, o in self.options.items()}
        for k, v in (options or {}).items():
            if k not in self.options:
                raise ValueError(f"method {self.name!r} has no option {k!r}; expected one of {sorted(self.options)}")
            if v not in self.options[k].choices:
                raise ValueError(f"option {k!r} of method {self.name!r}: expected one of "
                                 f"{list(self.options[k].choices)}, got {v!r}")
            out[k] = v
        return out


def step(state: UnlearnState, loss: torch.Tensor) -> None:
    """Backward, SalUn-mask the gradients where a mask is set, and step. With the mask's
    ``restore`` mode the masked-out weights are also put back after the step (weight decay and
    momentum would move them otherwise) and their momentum is zeroed."""
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    kept = []
    if state.grad_mask is not None:
        restore = state.extra.get("mask_restore", False)
        for name, p in state.model.named_parameters():
            if p.grad is not None and name in state.grad_mask:
                p.grad.mul_(state.grad_mask[name])
                if restore:
                    kept.append((p, state.grad_mask[name], p.detach().clone()))
    state.opt.step()
    with torch.no_grad():
        for p, mask, before in kept:
            p.copy_(torch.where(mask.bool(), p, before))
            buf = state.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(mask)


def _pair(t, fr: torch.Tensor, rr: torch.Tensor) -> Batch:
    """Forget rows then retain rows in one batch; row indices are split on the host, so no device sync."""
    dev = t.device
    forget = torch.cat([torch.ones(len(fr), dtype=torch.bool), torch.zeros(len(rr), dtype=torch.bool)]).to(dev)
    fr, rr = fr.to(dev), rr.to(dev)
    return Batch(torch.cat([t.forget_x[fr], t.retain_x[rr]]), torch.cat([t.forget_y[fr], t.retain_y[rr]]),
                 forget, torch.cat([fr, rr]))


def layout_batches(state: UnlearnState, layout: Layout):
    """Batches of the layout a method trains on (no augmentation during unlearning)."""
    t, bs, gen, dev = state.t, state.batch_size, state.gen, state.t.device
    nf, nr = len(t.forget_x), len(t.retain_x)
    if layout == "forget":
        for rows in index_batches(nf, bs, gen):
            rows = rows.to(dev)
            yield Batch(t.forget_x[rows], t.forget_y[rows], torch.ones(len(rows), dtype=torch.bool, device=dev), rows)
    elif layout == "retain":
        for rows in index_batches(nr, bs, gen):
            rows = rows.to(dev)
            yield Batch(t.retain_x[rows], t.retain_y[rows], torch.zeros(len(rows), dtype=torch.bool, device=dev), rows)
    elif layout == "mixed":
        for idx in index_batches(nf + nr, bs, gen):
            is_f = idx < nf
            yield _pair(t, idx[is_f], idx[~is_f] - nf)
    elif layout == "paired":
        retain_order = torch.randperm(nr, generator=gen)
        for i, fr in enumerate(index_batches(nf, bs, gen)):
            yield _pair(t, fr, retain_order[(torch.arange(bs) + i * bs) % nr])
    else:
        raise ValueError(f"unknown batch layout {layout!r}")


def run_layout_epoch(state: UnlearnState, method: Method, layouts: tuple[Layout, ...] | None = None) -> torch.Tensor:
    """One pass over the method's layout (or over ``layouts`` one after another); returns the summed
    loss (kept on the device: no sync per step)."""
    total = torch.zeros((), device=state.t.device)
    for layout in layouts or (method.layout,):
        for batch in layout_batches(state, layout):
            with autocast(state.t.device, state.precision):
                loss = method.loss(state, batch)
            step(state, loss)
            total += loss.detach().float()
    return total


def unlearn(
    model: nn.Module,
    method: Method,
    t,
    hp: Mapping | None = None,
    falw: bool = False,
    epochs: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    falw_refresh_every: int = 1,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    compile: bool = False,
    options: Mapping[str, str] | None = None,
    precision: str = "fp32",
) -> nn.Module:
    """Run ``method`` on ``model`` (changed in place) over a scenario's tensors ``t``.

    ``hp`` overrides the method's defaults (``lr``, ``epochs`` and its extras; ``tau`` with FaLW);
    ``options`` its non-searched choices (defaults per data set, see ``Method.resolve_options``).
    ``precision`` is the arithmetic of the unlearning steps and of FaLW's statistics: "fp32", as
    the reference code, or "bf16" autocast.
    ``on_epoch(epoch, model)`` is called after every epoch: the place to evaluate and report.
    ``compile`` compiles the model's forward in place with torch.compile (off by default: compiling
    costs tens of seconds, so it pays on long GPU runs only; frozen copies run uncompiled).
    """
    if falw and not method.forget_term:
        raise ValueError(f"method {method.name!r} has no forget term, so FaLW cannot weight it")
    hp = method.resolve(hp, falw)
    if epochs is not None:
        hp["epochs"] = int(epochs)
    state = UnlearnState(model=model, t=t, hp=hp, gen=torch.Generator().manual_seed(seed),
                         batch_size=batch_size, epochs=int(hp["epochs"]),
                         options=method.resolve_options(options, t.dataset), precision=precision, method=method)
    autocast(t.device, precision)  # an unknown precision fails here, before any step
    torch.manual_seed(seed)
    if compile:
        model.compile()
    if falw:
        state.weigh = FalwWeigher(model, t.val_x, t.val_y, t.forget_counts, t.num_classes, hp["tau"], falw_refresh_every,
                                  precision)
    if method.prepare is not None:
        method.prepare(state)
    state.opt = sgd(model.parameters(), hp["lr"], hp["momentum"], hp["weight_decay"])
    model.train()
    for epoch in range(state.epochs):
        state.epoch = epoch
        if isinstance(state.weigh, FalwWeigher):
            state.weigh.new_epoch()
        if method.epoch_start is not None:
            method.epoch_start(state)
        total = method.run_epoch(state) if method.run_epoch is not None else run_layout_epoch(state, method)
        if epoch == 0 and isinstance(state.weigh, FalwWeigher) and state.weigh.calls == 0:
            raise FalwUnused(f"method {method.name!r} ran an epoch with FaLW on without applying FaLW's weights "
                             "(its loss never called state.weigh, e.g. through falw_weighted_mean): weigh its forget "
                             "term, or declare forget_term=False so that FaLW is refused")
        if not torch.isfinite(total):
            raise DivergedError(f"{method.name}: loss is {float(total)} in epoch {epoch + 1}")
        if method.finish is not None and epoch == state.epochs - 1:
            method.finish(state)
        if on_epoch is not None:
            on_epoch(epoch, model)
    return model
