#!/usr/bin/env python3
"""PyTorch eager's training images/s for the CIFAR ResNets, the yardstick of
scripts/gpu-check.sh.

Each model trains at the given batch exactly as resnet-wgpu's `bench train`
does (SGD lr 0.1, momentum 0.9, weight decay 1e-4, cross-entropy, 10 classes,
32x32 RGB, shortcut A), on random data already on the device, so both sides
time the step alone (resnet-wgpu's step also crops, flips and normalizes on
the GPU). Warm-up steps first (cuDNN picks its algorithms there), then timed
steps between device synchronizations.

Three rows per model, each labelled, on CUDA:
  f32   strict float32: TF32 off in cuDNN and matmuls (PyTorch's cuDNN convs
        use TF32 by default on Ampere and newer);
  tf32  TF32 on (PyTorch's default);
  amp   automatic mixed precision (float16 autocast + GradScaler), the faster
        of NCHW and channels_last (the label says which).
resnet-wgpu's f32 images/s (--ours-f32 name=value,...) is set beside the f32
and tf32 rows, its f16 (--ours-f16) beside the amp row, as ratios. Without
CUDA only the f32 row runs.

    python3 scripts/torch_bench.py --models resnet20,resnet56 --batch-size 128
    python3 scripts/torch_bench.py --ours-f32 resnet20=1234 --ours-f16 resnet20=2345
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


def grad_scaler(enabled):
    """torch.amp.GradScaler("cuda") where it exists (torch 2.3+), else the
    older torch.cuda.amp.GradScaler."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        try:
            return torch.amp.GradScaler("cuda", enabled=enabled)
        except TypeError:
            pass
    return torch.cuda.amp.GradScaler(enabled=enabled)


def set_tf32(allowed):
    torch.backends.cudnn.allow_tf32 = allowed
    torch.backends.cuda.matmul.allow_tf32 = allowed


def images_per_sec(name, batch, steps, warmup, dev, amp=False, channels_last=False):
    torch.manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = CifarResNet(depth_of(name), "A").to(dev, memory_format=memory).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(batch, 3, 32, 32, device=dev).contiguous(memory_format=memory)
    y = torch.randint(0, 10, (batch,), device=dev)
    scaler = grad_scaler(amp) if dev.type == "cuda" else None

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
            return
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


def modes(dev):
    """(label, our precision, run) for each row this device can run."""
    def strict(model, a):
        set_tf32(False)
        return images_per_sec(model, a.batch_size, a.steps, a.warmup, dev)

    def tf32(model, a):
        set_tf32(True)
        return images_per_sec(model, a.batch_size, a.steps, a.warmup, dev)

    def amp(model, a):
        set_tf32(True)
        runs = {layout: images_per_sec(model, a.batch_size, a.steps, a.warmup, dev, True,
                                       layout == "channels_last")
                for layout in ("NCHW", "channels_last")}
        layout = max(runs, key=runs.get)
        return runs[layout], f"amp {layout}"

    if dev.type != "cuda":
        return [("f32", "f32", strict)]
    return [("f32", "f32", strict), ("tf32", "f32", tf32), ("amp", "f16", amp)]


def parse_rates(text):
    return {k: float(v) for k, v in (kv.split("=") for kv in text.split(",") if "=" in kv)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--ours-f32", default="", help="resnet-wgpu's f32 images/s: name=value,...")
    ap.add_argument("--ours-f16", default="", help="resnet-wgpu's f16 images/s: name=value,...")
    args = ap.parse_args()
    ours = {"f32": parse_rates(args.ours_f32), "f16": parse_rates(args.ours_f16)}
    dev, name = device()
    torch.backends.cudnn.benchmark = True
    print(f"pytorch {torch.__version__} eager on {name}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}; f32 = TF32 off, tf32 = PyTorch's "
          f"default, amp = float16 autocast + GradScaler in the faster memory layout")
    print(f"{'model':<10} {'pytorch mode':<20} {'pytorch img/s':>14} {'ours':>5} "
          f"{'resnet-wgpu img/s':>18} {'ours / pytorch':>15}", flush=True)
    for model in args.models.split(","):
        for label, precision, run in modes(dev):
            result = run(model, args)
            theirs, label = result if isinstance(result, tuple) else (result, label)
            mine = ours[precision].get(model)
            ratio = f"{mine / theirs:.3f}" if mine else "-"
            mine_cell = f"{mine:.1f}" if mine else "-"
            print(f"{model:<10} {label:<20} {theirs:>14.1f} {precision:>5} {mine_cell:>18} "
                  f"{ratio:>15}", flush=True)


if __name__ == "__main__":
    main()
