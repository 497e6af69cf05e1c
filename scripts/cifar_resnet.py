"""The paper's CIFAR ResNet (6n+2 layers, shortcut A or B) in PyTorch, with
torchvision-style names: the model resnet-wgpu's fixtures (make_golden.py) and
speed comparison (torch_bench.py) are made with.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# resnet-wgpu's mixed precision (--precision f16), emulated: every tensor it
# stores in f16 (activations and their gradients) is rounded to float16 where
# it is stored, the conv and fc weights are read as float16 copies of the f32
# masters, and everything else (the arithmetic, batch-norm statistics, weight
# gradients, the optimizer) stays float32. Gradients are rounded at the loss
# scale resnet-wgpu uses, as a GradScaler would leave them.
LOSS_SCALE = 65536.0


class _Store(torch.autograd.Function):
    """Forward: round to float16. Backward: the gradient rounded likewise."""

    @staticmethod
    def forward(ctx, x):
        return x.half().float()

    @staticmethod
    def backward(ctx, g):
        return (g * LOSS_SCALE).half().float() / LOSS_SCALE


class _StoreGrad(torch.autograd.Function):
    """Forward: identity. Backward: the gradient rounded to float16 (a conv's
    input gradient, stored before the residual sum adds it)."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return (g * LOSS_SCALE).half().float() / LOSS_SCALE


class Precision:
    """What a model stores: f32 (identity everywhere) or f16 (rounded)."""

    def __init__(self, half=False):
        self.half = half

    def store(self, x):
        return _Store.apply(x) if self.half else x

    def store_grad(self, x):
        return _StoreGrad.apply(x) if self.half else x

    def conv(self, conv, x):
        if not self.half:
            return conv(x)
        w = conv.weight + (conv.weight.half().float() - conv.weight).detach()
        y = F.conv2d(self.store_grad(x), w, None, conv.stride, conv.padding)
        y = self.store(y)
        if conv.bias is not None:
            y = self.store(y + conv.bias.view(1, -1, 1, 1))
        return y

    def linear(self, fc, x):
        if not self.half:
            return fc(x)
        w = fc.weight + (fc.weight.half().float() - fc.weight).detach()
        return F.linear(self.store_grad(x), w, fc.bias)


F32 = Precision(False)


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

    def forward(self, x, p=F32):
        out = p.store(F.relu(self.bn1(p.conv(self.conv1, x))))
        out = self.bn2(p.conv(self.conv2, out))
        if self.downsample is not None:
            skip = p.store(self.downsample[1](p.conv(self.downsample[0], x)))
        elif self.pad is not None:
            skip = p.store(self.pad(x))
        else:
            skip = x
        return p.store(F.relu(out + skip))


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

    def forward(self, x, p=F32):
        """`p`: Precision(half=True) emulates resnet-wgpu's --precision f16."""
        x = p.store(F.relu(self.bn1(p.conv(self.conv1, p.store(x)))))
        for block in [*self.layer1, *self.layer2, *self.layer3]:
            x = block(x, p)
        pooled = p.store(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return p.linear(self.fc, pooled)
