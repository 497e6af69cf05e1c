#!/usr/bin/env python3
"""PyTorch eager's training images/s for the CIFAR ResNets, the yardstick of
scripts/gpu-check.sh.

Each model trains at the given batch exactly as resnet-wgpu's `bench train`
does (SGD lr 0.1, momentum 0.9, weight decay 1e-4, cross-entropy, 10 classes,
32x32 RGB, shortcut A), on random data already on the device, so both sides
time the step alone (resnet-wgpu's step also crops, flips and normalizes on
the GPU). Warm-up steps first (cuDNN picks its algorithms there), then timed
steps between device synchronizations.

With --ours name=images_per_sec,... it also prints resnet-wgpu's figure from
the same machine beside PyTorch's, as a ratio. With --amp PyTorch trains in
automatic mixed precision (autocast to float16 and a GradScaler, on CUDA
only), the yardstick of resnet-wgpu's --precision f16.

    python3 scripts/torch_bench.py --models resnet20,resnet56 --batch-size 128
    python3 scripts/torch_bench.py --amp --ours resnet20=1234
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar_resnet import CifarResNet  # noqa: E402


def depth_of(name):
    """resnet20 -> n = 3 blocks per stage (depth 6n + 2)."""
    depth = int(name.removeprefix("resnet"))
    if not name.startswith("resnet") or (depth - 2) % 6 != 0:
        raise SystemExit(f"{name}: only the CIFAR ResNets (resnet8/20/32/44/56/110) are here")
    return (depth - 2) // 6


def device():
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.cuda.get_device_name(0)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps"), "Apple MPS"
    return torch.device("cpu"), "CPU (no CUDA or MPS device)"


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elif dev.type == "mps":
        torch.mps.synchronize()


def images_per_sec(name, batch, steps, warmup, dev, amp=False):
    torch.manual_seed(0)
    model = CifarResNet(depth_of(name), "A").to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * batch / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--ours", default="", help="resnet-wgpu's images/s: name=value,...")
    ap.add_argument("--amp", action="store_true", help="autocast to float16 with a GradScaler")
    args = ap.parse_args()
    ours = dict(kv.split("=") for kv in args.ours.split(",") if "=" in kv)
    dev, name = device()
    if args.amp and dev.type != "cuda":
        raise SystemExit(f"--amp needs CUDA; this machine has {name}")
    torch.backends.cudnn.benchmark = True
    mode = "AMP (float16 autocast, GradScaler)" if args.amp else "float32"
    print(f"pytorch {torch.__version__} eager {mode} on {name}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}")
    print(f"{'model':<10} {'pytorch img/s':>14} {'resnet-wgpu img/s':>18} {'ours / pytorch':>15}")
    for model in args.models.split(","):
        theirs = images_per_sec(model, args.batch_size, args.steps, args.warmup, dev, args.amp)
        mine = float(ours[model]) if model in ours else None
        ratio = f"{mine / theirs:.3f}" if mine else "-"
        mine_cell = f"{mine:.1f}" if mine else "-"
        print(f"{model:<10} {theirs:>14.1f} {mine_cell:>18} {ratio:>15}")


if __name__ == "__main__":
    main()
