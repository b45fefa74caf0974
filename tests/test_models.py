"""Models: the digits CNN's pooling gives max_pool2d's values and gradients on either path."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from falw_ray.models import build_model
from falw_ray.models.cnn import MaxPool2x2


@pytest.mark.parametrize("shape", [(5, 3, 8, 8), (2, 4, 7, 9), (1, 1, 2, 2)])
def test_pool_matches_max_pool2d_with_and_without_autograd(shape):
    torch.manual_seed(0)
    x = torch.relu(torch.randn(shape))
    ref = nn.MaxPool2d(2)
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), ref(x))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(ref(x))
    MaxPool2x2()(a).backward(g)
    ref(b).backward(g)
    assert torch.equal(a.grad, b.grad)


def test_cnn_eval_pass_equals_the_max_pool2d_model():
    torch.manual_seed(0)
    model = build_model("cnn", 10, (1, 8, 8)).eval()
    x = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        fast = model(x)
        model.features[6] = nn.MaxPool2d(2)
        assert torch.equal(fast, model(x))

