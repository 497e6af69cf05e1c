#!/usr/bin/env python3
"""Writes tests/fixtures/random_resized_crop.json: quantiles of torchvision's
RandomResizedCrop boxes (scale 0.08-1, ratio 3/4-4/3) for a few picture
shapes, from 200,000 draws each of `RandomResizedCrop.get_params`, so
tests/data.rs can check that our boxes follow the same distribution (area
share, log aspect ratio, centre position) and fall back as often.

    pip install torch torchvision
    python3 scripts/make_crop_fixture.py
"""

import json
import math
import os

import torch
from torchvision.transforms import RandomResizedCrop

DRAWS = 200_000
SHAPES = [(500, 375), (375, 500), (224, 224), (1000, 200)]  # width, height
QUANTILES = [0.05, 0.25, 0.5, 0.75, 0.95]


def quantiles(values):
    values = sorted(values)
    return [values[int(q * (len(values) - 1))] for q in QUANTILES]


def main():
    torch.manual_seed(0)
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
    out = {"quantiles": QUANTILES, "draws": DRAWS, "shapes": []}
    for w, h in SHAPES:
        img = torch.empty(3, h, w)
        area, log_ratio, cx, cy, whole = [], [], [], [], 0
        for _ in range(DRAWS):
            top, left, ch, cw = RandomResizedCrop.get_params(img, scale, ratio)
            area.append(cw * ch / (w * h))
            log_ratio.append(math.log(cw / ch))
            cx.append((left + cw / 2) / w)
            cy.append((top + ch / 2) / h)
            whole += (cw, ch) == (w, h)
        out["shapes"].append({
            "width": w,
            "height": h,
            "area": quantiles(area),
            "log_ratio": quantiles(log_ratio),
            "centre_x": quantiles(cx),
            "centre_y": quantiles(cy),
            "whole_share": whole / DRAWS,
        })
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "random_resized_crop.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
