"""The paper's CIFAR networks in plain PyTorch: VGG-11 with batch norm and ResNet-18 in CIFAR form.

Both take 32x32 inputs through a 3x3, stride-1 stem (ResNet-18 without its
max-pool), as the CIFAR models of the paper's code do. `width` multiplies
every layer's channels (the paper's width comparison). Each model names its
stem in `pretrained_cfg["first_conv"]`, the way timm models do, so the
workflow finds it the same way for both.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class VGG11BN(nn.Module):
    pretrained_cfg = {"first_conv": "features.0"}

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for layer in VGG11_LAYERS:
            if layer == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = scaled(layer, width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, channels_in: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    pretrained_cfg = {"first_conv": "conv1"}

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: float = 1.0):
        super().__init__()
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(in_chans, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        stages, channels_in = [], stem
        for index, base in enumerate((64, 128, 256, 512)):
            channels = scaled(base, width)
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(channels_in, channels, stride), BasicBlock(channels, channels, 1)))
            channels_in = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.pool(out), 1))


CIFAR_NETS: dict[str, Callable[..., nn.Module]] = {
    "vgg11_bn_cifar": VGG11BN,
    "resnet18_cifar": ResNet18Cifar,
}
