"""The comparison baseline: unlearning the way the reference codebases (SalUn, Unlearn-Sparse, the
FaLW authors' scripts) run it. Benchmark code, not product code.

What "the reference way" means here, per run (one configuration per run, runs one after another):
- data: the data set is loaded anew and split anew; every split is a per-sample torch ``Dataset``
  (uint8 image -> float, scale, normalise, and for training the random crop / flip, one sample at a
  time in ``__getitem__``) read through a ``torch.utils.data.DataLoader`` with default collation;
- baselines: the original model's weights are read from disk with ``torch.load`` into a new model;
- unlearning: the same method as falw_ray's (falw_ray's own loss functions, optimiser, SalUn mask
  and FaLW weights), but every batch comes from a DataLoader: ``ConcatDataset(forget, retain)``
  shuffled for the mixed layout, one loader per split otherwise; FaLW's validation statistics and
  SalUn's saliency pass also read their split through a DataLoader;
- evaluation once the run has finished (``eval_every_epoch`` for after every epoch): forget, retain
  and test through DataLoaders at the run's batch size (predictions and true-class confidences in
  the same pass), then the MIA with the straightforward scikit-learn SVC; results go to a list (a
  CSV at most), nothing else is tracked.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset


class PerSample(Dataset):
    """A torchvision-style data set: one uint8 image at a time -> normalised (augmented) float tensor."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std, scale: float, crop_pad: int = 0, flip: bool = False):
        from torchvision.transforms import v2 as T

        self.x, self.y, self.scale = x, y, float(scale)
        self.normalize = T.Normalize(list(mean), list(std))
        steps = []
        if crop_pad:
            steps.append(T.RandomCrop(x.shape[-1], padding=crop_pad))
        if flip:
            steps.append(T.RandomHorizontalFlip())
        self.augment = T.Compose(steps) if steps else None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = torch.from_numpy(self.x[i]).float().div_(self.scale)
        img = self.normalize(img)
        if self.augment is not None:
            img = self.augment(img)
        return img, int(self.y[i])


class Tagged(Dataset):
    """Rows of one split, tagged with whether they are forget rows and their row index in the split."""

    def __init__(self, base: Dataset, forget: bool):
        self.base, self.forget = base, forget

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, self.forget, i


@dataclass
class RefTensors:
    """What falw_ray's methods read from their ``t`` besides batches (labels, counts, device)."""

    forget_y: torch.Tensor
    forget_counts: torch.Tensor
    num_classes: int
    device: torch.device
    forget: Dataset
    retain: Dataset
    val: Dataset
    test: Dataset
    retain_eval: Dataset
    forget_eval: Dataset
    mia_members: np.ndarray
    val_y: torch.Tensor
    num_workers: int = 0

    @property
    def val_x(self) -> Dataset:
        """FaLW's weigher reads ``t.val_x``: the validation Dataset here (read through a DataLoader)."""
        return self.val


def datasets_for(data, splits, device=torch.device("cpu"), num_workers: int = 0) -> RefTensors:
    def ds(x, y, train=False):
        return PerSample(x, y, data.mean, data.std, data.scale)

    fx, fy = data.train_x[splits.forget], data.train_y[splits.forget]
    rx, ry = data.train_x[splits.retain], data.train_y[splits.retain]
    return RefTensors(
        forget_y=torch.from_numpy(fy).to(device),
        forget_counts=torch.bincount(torch.from_numpy(fy), minlength=data.num_classes),
        num_classes=data.num_classes, device=device,
        forget=ds(fx, fy), retain=ds(rx, ry), val=ds(data.train_x[splits.val], data.train_y[splits.val]),
        test=ds(data.test_x[splits.test], data.test_y[splits.test]),
        retain_eval=ds(rx, ry), forget_eval=ds(fx, fy), mia_members=np.asarray(splits.mia_members),
        val_y=torch.from_numpy(data.train_y[splits.val]).to(device), num_workers=num_workers,
    )


def _loader(ds: Dataset, batch_size: int, shuffle: bool, gen: torch.Generator | None, workers: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen if shuffle else None,
                      num_workers=workers)


def _batches(state, layout: str) -> Iterator:
    """falw_ray's ``layout_batches`` contract (Batch objects), fed by DataLoaders."""
    from falw_ray.unlearn.base import Batch

    t, bs, gen, dev = state.t, state.batch_size, state.gen, state.t.device
    loaders = state.extra.setdefault("ref_loaders", {})

    def get(name, make):
        if name not in loaders:
            loaders[name] = make()
        return loaders[name]

    def batch(x, y, f, rows):
        return Batch(x.to(dev), y.to(dev), f.to(dev).bool(), rows.to(dev))

    if layout == "forget":
        for x, y, f, rows in get("forget", lambda: _loader(Tagged(t.forget, True), bs, True, gen, t.num_workers)):
            yield batch(x, y, f, rows)
    elif layout == "retain":
        for x, y, f, rows in get("retain", lambda: _loader(Tagged(t.retain, False), bs, True, gen, t.num_workers)):
            yield batch(x, y, f, rows)
    elif layout == "mixed":
        mixed = lambda: _loader(ConcatDataset([Tagged(t.forget, True), Tagged(t.retain, False)]), bs, True, gen,  # noqa: E731
                                t.num_workers)
        for x, y, f, rows in get("mixed", mixed):
            yield batch(x, y, f, rows)
    elif layout == "paired":
        retain = iter(get("retain", lambda: _loader(Tagged(t.retain, False), bs, True, gen, t.num_workers)))
        for x, y, f, rows in get("forget", lambda: _loader(Tagged(t.forget, True), bs, True, gen, t.num_workers)):
            try:
                rx, ry, rf, rr = next(retain)
            except StopIteration:
                retain = iter(loaders["retain"])
                rx, ry, rf, rr = next(retain)
            yield batch(torch.cat([x, rx]), torch.cat([y, ry]), torch.cat([f, rf]), torch.cat([rows, rr]))
    else:
        raise ValueError(layout)


@torch.no_grad()
def _val_stats(model: nn.Module, x, y, num_classes: int, batch_size: int = 256):
    """FaLW's per-class mean / std of the true-class probability, over a validation DataLoader.
    ``x`` is the reference's validation Dataset (the weigher is built with it in place of a tensor)."""
    from falw_ray.unlearn.falw import stats_of

    was_training = model.training
    model.eval()
    conf, labels = [], []
    for xb, yb in DataLoader(x, batch_size=batch_size, shuffle=False):
        conf.append(model(xb).float().softmax(1).gather(1, yb[:, None]).squeeze(1))
        labels.append(yb)
    model.train(was_training)
    return stats_of(torch.cat(conf), torch.cat(labels), num_classes)


def _saliency(model, x, y, ratio: float, batch_size: int):
    """SalUn's mask over a forget DataLoader (``x`` is the forget Dataset)."""
    from falw_ray.unlearn.salun import saliency_from_batches

    return saliency_from_batches(model, DataLoader(x, batch_size=batch_size, shuffle=False), ratio)


@contextlib.contextmanager
def dataloader_engine():
    """Run falw_ray's methods with every batch from a DataLoader (restored on exit)."""
    import falw_ray.unlearn.base as base
    import falw_ray.unlearn.falw as falw
    import falw_ray.unlearn.salun as salun
    import falw_ray.unlearn.scrub as scrub

    saved = (base.layout_batches, scrub.layout_batches, falw.class_confidence_stats)
    saved_prepare = salun.prepare

    def prepare(state):
        state.grad_mask = _saliency(state.model, state.t.forget, None, state.hp["mask_ratio"], state.batch_size)

    base.layout_batches = scrub.layout_batches = _batches
    falw.class_confidence_stats = _val_stats
    object.__setattr__(salun.METHOD, "prepare", prepare)
    try:
        yield
    finally:
        base.layout_batches, scrub.layout_batches, falw.class_confidence_stats = saved
        object.__setattr__(salun.METHOD, "prepare", saved_prepare)


@torch.no_grad()
def evaluate(model: nn.Module, t: RefTensors, batch_size: int) -> dict:
    """FA, RA, TA and the MIA (straightforward scikit-learn SVC), each split through a DataLoader."""
    from sklearn.svm import SVC

    def run(ds):
        preds, conf, ys = [], [], []
        for xb, yb in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=t.num_workers):
            logits = model(xb).float()  # every output, as metrics.predict (a shadow class is never a label)
            preds.append(logits.argmax(1))
            conf.append(logits.softmax(1).gather(1, yb[:, None]).squeeze(1))
            ys.append(yb)
        return torch.cat(preds).numpy(), torch.cat(conf).numpy(), torch.cat(ys).numpy()

    was_training = model.training
    model.eval()
    fp, fc, fy = run(t.forget_eval)
    rp, rc, ry = run(t.retain_eval)
    tp, tc, ty = run(t.test)
    model.train(was_training)
    member = rc[t.mia_members].astype(np.float64).reshape(-1, 1)
    nonmember = tc.astype(np.float64).reshape(-1, 1)
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(
        np.concatenate([member, nonmember]), np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))]))
    mia = 100.0 * (1.0 - clf.predict(fc.astype(np.float64).reshape(-1, 1)).mean())
    return {"fa": 100.0 * (fp == fy).mean(), "ra": 100.0 * (rp == ry).mean(), "ta": 100.0 * (tp == ty).mean(), "mia": mia}


def load_original(store_root, scenario, data) -> nn.Module:
    """The original model, read from the baseline store's weights file with torch.load."""
    from falw_ray.models import build_model
    from falw_ray.store import WEIGHTS, BaselineStore

    path = BaselineStore(store_root).path("original", scenario.original_key()) / WEIGHTS
    model = build_model(scenario.model, data.num_classes, data.input_shape)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def run_trial(store_root, scenario, method: str, falw: bool, hp: dict, epochs: int, batch_size: int,
              falw_refresh_every: int = 1, num_workers: int = 0, eval_every_epoch: bool = False) -> dict:
    """One configuration, the reference way. Returns seconds (total, unlearning epochs, evaluation)."""
    import importlib

    from falw_ray.data.registry import dataset_info, make_splits
    from falw_ray.unlearn import DivergedError, resolve, unlearn

    start = time.perf_counter()
    info = dataset_info(scenario.dataset)
    module, func = info.loader.split(":")
    data = getattr(importlib.import_module(module), func)(scenario.data_dir, download=False)  # anew, no cache
    f = scenario.forget
    splits = make_splits(data, f.kind, f.ratio, f.gamma, f.classes, scenario.seed)
    t = datasets_for(data, splits, num_workers=num_workers)
    model = load_original(store_root, scenario, data)
    m, falw_on = resolve(method, falw)
    history: list[dict] = []
    clock = {"eval": 0.0, "epochs": 0}

    def on_epoch(epoch: int, model) -> None:
        clock["epochs"] = epoch + 1
        if not eval_every_epoch and epoch + 1 < epochs:
            return
        s = time.perf_counter()
        history.append({"epoch": epoch + 1, **evaluate(model, t, batch_size)})
        clock["eval"] += time.perf_counter() - s

    setup = time.perf_counter() - start
    diverged = False
    with dataloader_engine():
        try:
            unlearn(model, m, t, hp=hp, falw=falw_on, epochs=epochs, batch_size=batch_size, seed=scenario.seed,
                    falw_refresh_every=falw_refresh_every, on_epoch=on_epoch)
        except DivergedError:
            diverged = True
    total = time.perf_counter() - start
    return {"seconds": total, "setup": setup, "eval": clock["eval"], "unlearn": total - setup - clock["eval"],
            "epochs": clock["epochs"], "diverged": diverged, "history": history}
