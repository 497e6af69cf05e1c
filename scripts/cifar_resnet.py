"""The paper's CIFAR ResNet (6n+2 layers, shortcut A or B) in PyTorch, with
torchvision-style names: the model resnet-wgpu's fixtures (make_golden.py) and
speed comparison (torch_bench.py) are made with.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class PadShortcut(nn.Module):
    """Option A: x[:, :, ::s, ::s], (out-in)/2 zero channels before, the rest after."""

    def __init__(self, in_c, out_c, stride):
        super().__init__()
        self.front = (out_c - in_c) // 2
        self.back = out_c - in_c - self.front
        self.stride = stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.front, self.back))


def norm_layer(channels, groups):
    """BatchNorm2d, or GroupNorm(groups, channels) when groups is set."""
    return nn.BatchNorm2d(channels) if groups is None else nn.GroupNorm(groups, channels)


class BasicBlock(nn.Module):
    def __init__(self, in_c, out_c, stride, shortcut, groups=None, bias=False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride, 1, bias=bias)
        self.bn1 = norm_layer(out_c, groups)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, 1, 1, bias=bias)
        self.bn2 = norm_layer(out_c, groups)
        self.pad = None
        self.downsample = None
        if stride != 1 or in_c != out_c:
            if shortcut == "A":
                self.pad = PadShortcut(in_c, out_c, stride)
            else:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_c, out_c, 1, stride, bias=bias), norm_layer(out_c, groups)
                )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            skip = self.downsample(x)
        elif self.pad is not None:
            skip = self.pad(x)
        else:
            skip = x
        return F.relu(out + skip)


class CifarResNet(nn.Module):
    """The paper's 6n+2 CIFAR ResNet with torchvision-style names; `groups`
    swaps every BatchNorm2d for GroupNorm(groups, channels), `bias` gives every
    conv a bias (resnet-wgpu's --norm group --groups N, --conv-bias)."""

    def __init__(self, n, shortcut, classes=10, groups=None, bias=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=bias)
        self.bn1 = norm_layer(16, groups)
        in_c = 16
        for stage, width in enumerate([16, 32, 64]):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_c, width, stride, shortcut, groups, bias))
                in_c = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
