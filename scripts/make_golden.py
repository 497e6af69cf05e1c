#!/usr/bin/env python3
"""Writes the golden fixtures in tests/fixtures/ with PyTorch (CPU).

For a CIFAR ResNet-8 (shortcut A) and ResNet-20 (shortcut B), a ResNet-8
with GroupNorm (shortcut B, so the projection's norm is one too) and a ResNet-8
whose convs have biases, with seeded weights and one seeded batch, it records one training step exactly as
resnet-wgpu runs it (SGD lr 0.1, momentum 0.9, weight decay 1e-4; input =
uint8 / 255, no augmentation): the logits and loss, the gradient of every
parameter, and every parameter and batch-norm buffer after the step. It also
records the ResNet-20 step once more as resnet-wgpu's mixed precision takes it
(f16 storage emulated, see cifar_resnet.Precision), and the state-dict names
and shapes of torchvision's ResNet-18/34/50/101/152,
which the Rust model must reproduce exactly.

Run from the repository root (needs torch, torchvision, safetensors, numpy):
    python3 scripts/make_golden.py
Tests only read the files; they never run PyTorch.
"""

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from cifar_resnet import CifarResNet, Precision

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def golden(name, n, shortcut, batch, side, seed, file=None, groups=None, bias=False, half=False):
    """`half`: the step as resnet-wgpu's --precision f16 takes it (emulated,
    see cifar_resnet.Precision); its file leaves out the initial weights,
    which are those of the same call without `half`."""
    torch.manual_seed(seed)
    model = CifarResNet(n, shortcut, groups=groups, bias=bias)
    # Non-trivial norm parameters and running stats, so every term is exercised.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch,), dtype=torch.int64)
    tensors = {"images": images, "labels": labels}
    for k, v in model.state_dict().items():
        tensors[f"init.{k}"] = v.clone()

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    logits = model(images.float() / 255.0, Precision(half))
    loss = F.cross_entropy(logits, labels)
    opt.zero_grad()
    loss.backward()
    tensors["logits"] = logits.detach().clone()
    tensors["loss"] = loss.detach().reshape(1).clone()
    for k, p in model.named_parameters():
        tensors[f"grad.{k}"] = p.grad.clone()
    opt.step()
    for k, v in model.state_dict().items():
        tensors[f"after.{k}"] = v.clone()
    if half:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("init.")}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = os.path.join(OUT, f"golden_{file or name}.safetensors")
    metadata = {"model": name, "shortcut": shortcut, "batch": str(batch)}
    metadata.update({"groups": str(groups or 0), "conv_bias": str(bias)})
    if half:
        metadata["precision"] = "f16"
    save_file(tensors, path, metadata=metadata)
    print(f"wrote {path}: loss {loss.item():.6f}")


def torchvision_names():
    import torchvision

    out = {}
    for name in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]:
        model = getattr(torchvision.models, name)(weights=None, num_classes=1000)
        out[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
    path = os.path.join(OUT, "torchvision_state_dicts.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    golden("resnet8", 1, "A", batch=8, side=32, seed=1)
    golden("resnet20", 3, "B", batch=4, side=16, seed=2)
    golden("resnet20", 3, "B", batch=4, side=16, seed=2, file="resnet20_f16", half=True)
    golden("resnet8", 1, "B", batch=4, side=16, seed=3, file="resnet8_groupnorm", groups=4)
    golden("resnet8", 1, "A", batch=4, side=16, seed=4, file="resnet8_conv_bias", bias=True)
    torchvision_names()
