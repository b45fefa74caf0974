"""Unlearning metrics in the SalUn convention (docs/method.md, Metrics), all in percent."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn as nn

from .columns import MEASURED


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 1024):
    """Predicted labels and true-class softmax probabilities, in eval mode, one batched pass.

    Every output counts, as in the reference code: a model with extra outputs (Boundary Expanding's
    shadow class) can predict one, which is never a sample's label, and its softmax spans them all.
    """
    was_training = model.training
    model.eval()
    preds, conf = [], []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb).float()
        preds.append(logits.argmax(1))
        conf.append(logits.softmax(1).gather(1, yb[:, None]).squeeze(1))
    model.train(was_training)
    return torch.cat(preds), torch.cat(conf)


def mia_efficacy(member_conf, nonmember_conf, target_conf) -> float:
    """Share (x100) of target samples an RBF SVC (C=3, gamma='auto') calls non-members.

    The SVC is fitted on one feature, the true-class confidence: members labelled 1, non-members 0.

    The fit is exactly scikit-learn's on the same rows in the same order (libsvm's solution depends
    on both, so anything else can move the boundary by its tolerance and flip a target: see
    BENCHMARKS.md, benchmark 5). The prediction is made once per distinct target value and counted
    with its multiplicity: libsvm predicts each row on its own, and confidences repeat a lot (float32
    softmax saturates at exactly 1.0), so this is the same value, bit for bit, for less work.
    """
    from sklearn.svm import SVC

    member = np.asarray(member_conf, dtype=np.float64).reshape(-1, 1)
    nonmember = np.asarray(nonmember_conf, dtype=np.float64).reshape(-1, 1)
    target = np.asarray(target_conf, dtype=np.float64).reshape(-1)
    features = np.concatenate([member, nonmember])
    labels = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(features, labels)
    return _share_called_nonmember(clf, target)


def _share_called_nonmember(clf, target: np.ndarray) -> float:
    """100 * (1 - mean(clf.predict(target))), predicting each distinct value once."""
    if len(target) == 0 or not np.isfinite(target).all():
        # Same outcome as the plain call (scikit-learn's own error for empty or non-finite input).
        return float(100.0 * (1.0 - clf.predict(target.reshape(-1, 1)).mean()))
    values, counts = np.unique(target, return_counts=True)
    pred = clf.predict(values.reshape(-1, 1))
    members = float(counts[pred == 1].sum())  # an exact integer, as the plain mean's sum of 0/1 is
    return float(100.0 * (1.0 - members / len(target)))


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy per class in percent; NaN for classes with no samples."""
    hits = np.bincount(labels, weights=(pred == labels).astype(np.float64), minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * hits / counts, np.nan)


def class_groups(num_classes: int) -> dict[str, np.ndarray]:
    """Head / middle / tail thirds of the class order (class 0 is the head)."""
    head, mid, tail = np.array_split(np.arange(num_classes), 3)
    return {"head": head, "mid": mid, "tail": tail}


def gaps(metrics: Mapping, reference: Mapping) -> dict[str, float]:
    """Gaps to the retrained model: |m - m_retrain| per metric, their mean (avg_gap), and the
    per-class FA deviation summarised over head / mid / tail (signed dev, absolute gap)."""
    out = {f"{k}_gap": abs(float(metrics[k]) - float(reference[k])) for k in MEASURED}
    out["avg_gap"] = float(np.mean([out[f"{k}_gap"] for k in MEASURED]))
    dev = np.asarray(metrics["fa_per_class"], dtype=np.float64) - np.asarray(reference["fa_per_class"], dtype=np.float64)
    for group, rows in class_groups(len(dev)).items():
        d = dev[rows]
        d = d[~np.isnan(d)]
        out[f"fa_dev_{group}"] = float(d.mean()) if len(d) else 0.0
        out[f"fa_gap_{group}"] = float(np.abs(d).mean()) if len(d) else 0.0
    return out


def evaluate(model: nn.Module, t) -> dict:
    """FA, RA, TA, MIA-Efficacy and per-class FA of ``model`` on a scenario's tensors."""
    c = t.num_classes
    fp, fconf = predict(model, t.forget_x, t.forget_y, c)
    rp, rconf = predict(model, t.retain_x, t.retain_y, c)
    tp, tconf = predict(model, t.test_x, t.test_y, c)
    if not all(bool(torch.isfinite(conf).all()) for conf in (fconf, rconf, tconf)):
        raise FloatingPointError("the model's outputs are not finite")
    fy, fp = t.forget_y.cpu().numpy(), fp.cpu().numpy()

    def acc(p, y) -> float:
        return float(100.0 * (p == y).float().mean())

    return {
        "fa": float(100.0 * (fp == fy).mean()),
        "ra": acc(rp, t.retain_y),
        "ta": acc(tp, t.test_y),
        "mia": mia_efficacy(rconf[t.mia_members].cpu().numpy(), tconf.cpu().numpy(), fconf.cpu().numpy()),
        "fa_per_class": per_class_accuracy(fp, fy, c).tolist(),
    }
