#!/usr/bin/python3
"""Trains us-lesion-demo, Vigil's demonstration ultrasound segmentation model, on synthetic
phantom frames, and exports it to ONNX.

    make demo-model        (runs: vigil phantoms --training DIR, then this script)

Input: frames.u8 and masks.u8 written by `vigil phantoms --training`, N x 128 x 128 each
(grey 0..255; labels 0 background, 1 hypoechoic, 2 hyperechoic), prepared exactly as the
triage pipeline prepares model input. Output: an ONNX file with input "image" float32
[N,1,128,128] (0..1) and output "logits" float32 [N,2,128,128] (one channel per lesion kind;
sigmoid gives the probability).

This is a demonstration model trained on synthetic images only. It is not a clinical model.
"""
import argparse
import json
import os
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """A three-level U-Net: small enough to train on two CPU cores in minutes."""

    def __init__(self, width=12):
        super().__init__()
        w = width
        self.e1, self.e2, self.e3 = block(1, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.mid = block(4 * w, 4 * w)
        self.d3, self.d2, self.d1 = block(8 * w, 2 * w), block(4 * w, w), block(2 * w, w)
        self.out = nn.Conv2d(w, 2, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        m = self.mid(F.max_pool2d(e3, 2))
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")
        d3 = self.d3(torch.cat([up(m), e3], 1))
        d2 = self.d2(torch.cat([up(d3), e2], 1))
        d1 = self.d1(torch.cat([up(d2), e1], 1))
        return self.out(d1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=20261122)
    args = ap.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.use_deterministic_algorithms(True)

    meta = json.load(open(os.path.join(args.data, "meta.json")))
    n, size = meta["count"], meta["size"]
    x = np.fromfile(os.path.join(args.data, "frames.u8"), dtype=np.uint8).reshape(n, 1, size, size)
    m = np.fromfile(os.path.join(args.data, "masks.u8"), dtype=np.uint8).reshape(n, size, size)
    y = np.stack([m == 1, m == 2], axis=1).astype(np.float32)
    x = torch.from_numpy(x.astype(np.float32) / 255.0)
    y = torch.from_numpy(y)

    model = TinyUNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    pos_weight = torch.tensor([4.0, 4.0]).view(1, 2, 1, 1)
    batch = 16
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(n)
        total = 0.0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            xb, yb = x[idx], y[idx]
            if random.random() < 0.5:  # left-right flips: lesions have no side
                xb, yb = xb.flip(3), yb.flip(3)
            logits = model(xb)
            bce = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=pos_weight)
            p = torch.sigmoid(logits)
            dice = 1 - (2 * (p * yb).sum((2, 3)) + 1) / (p.sum((2, 3)) + yb.sum((2, 3)) + 1)
            loss = bce + dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / n:.4f}", flush=True)

    model.eval()
    dummy = torch.zeros(1, 1, size, size)
    torch.onnx.export(model, dummy, args.out, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13,
                      do_constant_folding=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
