"""VGG-16-BN on torchvision's feature stack with the small-image head (global pool + one linear layer)."""
from __future__ import annotations

import torch.nn as nn


def vgg16_bn(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    from torchvision.models import vgg16_bn as build  # here: importing torchvision costs every worker ~1 s

    model = build(num_classes=num_classes)
    if input_shape[0] != 3:
        model.features[0] = nn.Conv2d(input_shape[0], 64, kernel_size=3, padding=1)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, num_classes))
    model.head_path = "classifier.1"
    return model
