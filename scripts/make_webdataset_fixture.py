#!/usr/bin/env python3
"""Writes tests/fixtures/webdataset/: shards made by Python's `webdataset`
library (its ShardWriter), the format `resnet-wgpu pack` writes and `--data`
reads. Each split has two shards; each sample a picture (JPEG, or PNG for every
third), its class as `.cls` and a `.json` field the reader ignores. The
pictures are flat colours, one per class, so a test can check that each
picture arrived with its own label.

    pip install webdataset pillow numpy
    python3 scripts/make_webdataset_fixture.py
"""

import io
import json
import os

import numpy as np
import webdataset as wds
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "webdataset")
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 50, 210)]


def picture(label, i, fmt):
    w, h = 20 + 3 * i, 16 + 2 * (i % 4)
    array = np.zeros((h, w, 3), np.uint8)
    array[:, :] = COLOURS[label]
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def main():
    for split, count in [("train", 12), ("val", 6)]:
        folder = os.path.join(OUT, split)
        os.makedirs(folder, exist_ok=True)
        pattern = os.path.join(folder, "part-%03d.tar")
        with wds.ShardWriter(pattern, maxcount=count // 2, verbose=0) as sink:
            for i in range(count):
                label = i % 3
                fmt, ext = ("PNG", "png") if i % 3 == 2 else ("JPEG", "jpg")
                sink.write({
                    "__key__": f"sample{i:04d}",
                    ext: picture(label, i, fmt),
                    "cls": label,
                    "json": json.dumps({"source": "fixture", "index": i}),
                })
    with open(os.path.join(OUT, "classes.txt"), "w") as f:
        f.write("red\ngreen\nblue\n")


if __name__ == "__main__":
    main()
