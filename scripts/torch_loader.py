#!/usr/bin/env python3
"""PyTorch's DataLoader on an image folder: the peer of `resnet-wgpu bench data`.

ImageFolder + PIL with torchvision's ImageNet recipe: RandomResizedCrop(size)
+ RandomHorizontalFlip + ToTensor + Normalize for training (or, with --eval,
Resize(size / 0.875) + CenterCrop(size)), batched by a DataLoader with the
given worker counts. Prints the same table as `bench data` (workers,
images/s), one row per worker count, after one warm-up batch per row.

    python3 scripts/torch_loader.py --data DIR [--workers 1,2] [--image-size 224]

Needs torch and torchvision (pip install torch torchvision).
"""

import argparse
import os
import time

import torch
from torchvision import datasets, transforms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--eval", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(1)
    size = args.image_size
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if args.eval:
        augment = [transforms.Resize(int(size / 0.875)), transforms.CenterCrop(size)]
    else:
        augment = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    recipe = transforms.Compose(augment + [transforms.ToTensor(), normalize])
    root = os.path.join(args.data, "train")
    if not os.path.isdir(root):
        root = args.data
    dataset = datasets.ImageFolder(root, transform=recipe)
    batch = min(args.batch_size, len(dataset))
    # One epoch holds the warm-up batch and the timed ones.
    batches = max(1, min(args.images // batch, len(dataset) // batch - 1))
    print(f"{root}: {len(dataset)} training pictures")
    print(f"{'workers':>8} {'images/s':>10} {'batches':>10}")
    for workers in [int(w) for w in args.workers.split(",")]:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            persistent_workers=False,
        )
        it = iter(loader)
        next(it)  # starts the workers: not timed, as bench data's first batch
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        rate = batches * batch / (time.perf_counter() - start)
        print(f"{workers:>8} {rate:>10.1f} {batches:>10}", flush=True)
        del it


if __name__ == "__main__":
    main()
