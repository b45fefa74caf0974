import numpy as np
import pytest
from sklearn.svm import SVC

import torch

from falw_ray.metrics import class_groups, gaps, mia_efficacy, per_class_accuracy, predict


def direct_mia(member, nonmember, target):
    x = np.concatenate([member, nonmember]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return 100.0 * (1 - clf.predict(np.asarray(target).reshape(-1, 1)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mia_matches_direct_svc(seed):
    rng = np.random.default_rng(seed)
    member = rng.beta(20, 1, 300)
    nonmember = rng.beta(4, 2, 300)
    target = np.concatenate([rng.beta(20, 1, 50), rng.beta(4, 2, 70)])
    assert mia_efficacy(member, nonmember, target) == pytest.approx(direct_mia(member, nonmember, target), abs=1e-9)


def test_mia_extremes():
    rng = np.random.default_rng(0)
    member, nonmember = rng.uniform(0.95, 1.0, 200), rng.uniform(0.0, 0.5, 200)
    assert mia_efficacy(member, nonmember, rng.uniform(0.0, 0.4, 40)) == 100.0
    assert mia_efficacy(member, nonmember, rng.uniform(0.96, 1.0, 40)) == 0.0


def test_per_class_accuracy_and_groups():
    labels = np.array([0, 0, 1, 1, 1, 3])
    pred = np.array([0, 1, 1, 1, 0, 3])
    acc = per_class_accuracy(pred, labels, 4)
    assert acc[0] == 50 and acc[1] == pytest.approx(200 / 3) and np.isnan(acc[2]) and acc[3] == 100
    g = class_groups(10)
    assert g["head"].tolist() == [0, 1, 2, 3] and g["tail"].tolist() == [7, 8, 9]


def test_gaps_and_head_tail_deviation():
    ref = {"fa": 90, "ra": 99, "ta": 95, "mia": 10, "fa_per_class": [90, 90, 90, 90, 90, 90]}
    m = {"fa": 94, "ra": 97, "ta": 94, "mia": 13, "fa_per_class": [100, 96, 90, 90, 80, 70]}
    g = gaps(m, ref)
    assert (g["fa_gap"], g["ra_gap"], g["ta_gap"], g["mia_gap"]) == (4, 2, 1, 3)
    assert g["avg_gap"] == 2.5
    assert g["fa_dev_head"] == 8 and g["fa_dev_tail"] == -15 and g["fa_gap_tail"] == 15


def test_predict_counts_every_output_so_a_shadow_prediction_is_wrong():
    """A model with a shadow class (C + 1 outputs, Boundary Expanding's widened head): the argmax spans
    every output and the confidence is the softmax over all of them at the true class."""
    logits = torch.tensor([[2.0, 0.0, 0.0, 5.0], [3.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.5]])
    y = torch.tensor([0, 0, 2])
    pred, conf = predict(torch.nn.Identity(), logits, y, num_classes=3)
    assert pred.tolist() == [3, 0, 3]
    assert (pred == y).tolist() == [False, True, False]
    e = np.exp(logits.numpy().astype(np.float64))
    expected = e[[0, 1, 2], [0, 0, 2]] / e.sum(1)
    assert np.allclose(conf.numpy(), expected, rtol=1e-6)
    assert conf[0].item() == pytest.approx(np.exp(2) / (np.exp(2) + 2 + np.exp(5)), rel=1e-6)
