"""ResNet-18 from torchvision with the CIFAR stem (3x3 conv, stride 1, no max-pool) used by unlearning papers."""
from __future__ import annotations

import torch.nn as nn


def resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    from torchvision.models import resnet18 as build  # here: importing torchvision costs every worker ~1 s

    model = build(num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.head_path = "fc"
    return model
