#!/usr/bin/python3
"""Trains fetal-head, Vigil's fetal head segmentation model, on the HC18 images in
../shared/data/ultrasound-hc18 (subjects 000-559, heads of 44-196 mm) and
../shared/data/ultrasound-hc18-late (odd subjects 561-805, heads of 160-346 mm): real ultrasound,
sonographers' ellipses. Exports it to ONNX.

    make fetal-head-model      (runs this script with the pinned seed and epochs)

Split by subject (a subject's NNN_2HC.png stays with NNN_HC.png), by a rule Vigil's Go code
repeats (internal/hc18, used by `vigil eval biometry`):
  held apart ("test"): subject number % 5 == 0   -- reported, never trained or tuned on
  tune:                subject number % 10 == 3  -- Vigil's quality thresholds are chosen here
  train:               every other subject

Input: "image" float32 [N,1,224,320], grey 0..1, the image shrunk exactly as Vigil's
triage.Resize does (the mean of the source pixels each output pixel covers, with the same
integer bounds). Output: "logits" float32 [N,1,224,320]; sigmoid is the probability that the
pixel is inside the skull's ellipse.

The script also writes --report (JSON): Dice and the HC error in mm on the held-apart subjects,
measured here in Python with OpenCV's ellipse fit. The figures that count are the ones measured
through Vigil's gRPC path (`vigil eval biometry`); the two should agree.
"""
import argparse
import csv
import json
import math
import os
import random
import time

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

H, W = 224, 320


def split_of(filename):
    subject = int(filename[:3])
    if subject % 5 == 0:
        return "test"
    if subject % 10 == 3:
        return "tune"
    return "train"


def area_resize(img, w, h):
    """triage.Resize in numpy: each output pixel is the mean of the source pixels from
    int(o*s) to max(int((o+1)*s), int(o*s)+1), in float64 as Go computes them."""
    sh, sw = img.shape
    sx, sy = sw / w, sh / h
    x0 = np.floor(np.arange(w) * sx).astype(np.int64)
    x1 = np.maximum(np.floor((np.arange(w) + 1) * sx).astype(np.int64), x0 + 1)
    y0 = np.floor(np.arange(h) * sy).astype(np.int64)
    y1 = np.maximum(np.floor((np.arange(h) + 1) * sy).astype(np.int64), y0 + 1)
    integral = np.zeros((sh + 1, sw + 1), np.float64)
    integral[1:, 1:] = img.astype(np.float64).cumsum(0).cumsum(1)
    s = (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])
    return (s / ((y1 - y0)[:, None] * (x1 - x0)[None, :])).astype(np.float32)


def load(data):
    folder = os.path.basename(os.path.normpath(data))
    rows = list(csv.reader(open(os.path.join(data, "train.csv"))))[1:]
    items = []
    for name, pixel_mm, hc in rows:
        img = cv2.imread(os.path.join(data, "train", name), cv2.IMREAD_GRAYSCALE)
        # The annotation is the sonographer's ellipse, filled (drawn a little larger than the
        # ellipse measured: its outline fit gives HC 0.7 mm above train.csv on average). The
        # target is that fit scaled to the HC in train.csv, drawn to a sixteenth of a pixel.
        drawn = cv2.imread(os.path.join(data, "train", name.replace(".png", "_Annotation.png")), cv2.IMREAD_GRAYSCALE)
        contours, _ = cv2.findContours((drawn > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        centre, (a, b), angle = cv2.fitEllipse(max(contours, key=len).reshape(-1, 2).astype(np.float32))
        k = float(hc) / float(pixel_mm) / ramanujan(a / 2, b / 2)
        ellipse = (centre, (a * k, b * k), angle)
        items.append(dict(name=name, img=img, ellipse=ellipse, pixel_mm=float(pixel_mm), hc=float(hc), split=split_of(name),
                          folder=folder))
    return items


def filled(ellipse, shape, scale=16):
    """A float mask of the ellipse, anti-aliased by drawing at 1/scale pixel precision."""
    mask = np.zeros((shape[0] * scale, shape[1] * scale), np.uint8)
    (cx, cy), (a, b), angle = ellipse
    # Pixel centres are at integers; on the fine grid, pixel x spans x*scale-scale/2.. .
    cv2.ellipse(mask, ((cx * scale + (scale - 1) / 2, cy * scale + (scale - 1) / 2), (a * scale, b * scale), angle), 255, -1, cv2.LINE_8)
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def augment(item, rng):
    """A random view of one image: scale, rotation, shift and flips of the whole frame (the
    ellipse moves with it), then contrast, gamma and speckle-like noise."""
    img = item["img"]
    h, w = img.shape
    (cx, cy), (a, b), angle = item["ellipse"]
    scale = math.exp(rng.uniform(math.log(0.75), math.log(1.3)))
    rot = rng.uniform(-35, 35)
    centre = (w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h)
    m = cv2.getRotationMatrix2D(centre, rot, scale)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ncx, ncy = m @ np.array([cx, cy, 1.0])
    ellipse = ((ncx, ncy), (a * scale, b * scale), angle - rot)
    mask = filled(ellipse, (h, w), scale=4)
    if rng.random() < 0.5:
        out, mask = out[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.3:
        out, mask = out[::-1], mask[::-1]
    x = out.astype(np.float32) / 255.0
    x = np.clip(x * rng.uniform(0.75, 1.3) + rng.uniform(-0.08, 0.08), 0, 1) ** rng.uniform(0.7, 1.4)
    x = x * rng.gamma(8.0, 1 / 8.0, size=x.shape).astype(np.float32) if rng.random() < 0.3 else x
    x = np.clip(x, 0, 1) * 255.0
    return area_resize(x, W, H) / 255.0, area_resize(np.ascontiguousarray(mask), W, H)


def plain(item):
    x = area_resize(item["img"], W, H) / 255.0
    return x, area_resize(filled(item["ellipse"], item["img"].shape), W, H)


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A five-level U-Net: the deepest level sees the whole head (16x downsampled)."""

    def __init__(self, w=12):
        super().__init__()
        c = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        self.enc = nn.ModuleList([block(1, c[0])] + [block(c[i - 1], c[i]) for i in range(1, 5)])
        self.dec = nn.ModuleList([block(c[i] + c[i - 1], c[i - 1]) for i in range(4, 0, -1)])
        self.out = nn.Conv2d(c[0], 1, 1)

    def forward(self, x):
        skips = []
        for i, e in enumerate(self.enc):
            x = e(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for d in self.dec:
            s = skips.pop()
            x = d(torch.cat([F.interpolate(x, size=s.shape[2:], mode="bilinear", align_corners=False), s], 1))
        return self.out(x)


def ramanujan(a, b):
    """Perimeter of an ellipse with semi-axes a, b (Ramanujan's second approximation)."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def measure(logits, shape):
    """HC in pixels of the original image from one logit map, or None. As Vigil's biometry
    pipeline does it: the largest component above 0; on each edge between one of its pixels and
    a pixel below 0, the point where the logit crosses 0 (linear between the two centres); those
    points in the original image's pixels; OpenCV's ellipse fit."""
    mask = (logits > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        return None
    inside = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    pts = []
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        src = inside[max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
        nb = logits[max(0, dy):H - max(0, -dy), max(0, dx):W - max(0, -dx)]
        here = logits[max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
        ys, xs = np.nonzero(src & (nb <= 0))
        t = here[ys, xs] / (here[ys, xs] - nb[ys, xs])
        pts.append(np.stack([xs + max(0, -dx) + t * dx, ys + max(0, -dy) + t * dy], 1))
    pts = np.concatenate(pts).astype(np.float32)
    if len(pts) < 5:
        return None
    sx, sy = shape[1] / W, shape[0] / H
    pts = np.stack([(pts[:, 0] + 0.5) * sx - 0.5, (pts[:, 1] + 0.5) * sy - 0.5], 1)
    (_, _), (a, b), _ = cv2.fitEllipse(pts)
    return ramanujan(a / 2, b / 2)


def evaluate(model, items):
    model.eval()
    dices, errors, missing = [], [], []
    with torch.no_grad():
        for i in range(0, len(items), 8):
            chunk = items[i:i + 8]
            pairs = [plain(it) for it in chunk]
            x = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None])
            logits = model(x).numpy()[:, 0]
            for it, (_, y), lg in zip(chunk, pairs, logits):
                pred = lg > 0
                truth = y > 0.5
                dices.append(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1))
                hc = measure(lg, it["img"].shape)
                if hc is None:
                    missing.append(it["name"])
                else:
                    errors.append((abs(hc * it["pixel_mm"] - it["hc"]), it["name"]))
    e = np.array([v for v, _ in errors]) if errors else np.zeros(1)
    return dict(images=len(items), dice_mean=float(np.mean(dices)), dice_median=float(np.median(dices)),
                hc_abs_error_mm=dict(mean=float(e.mean()), median=float(np.median(e)), p90=float(np.percentile(e, 90)), worst=float(e.max())),
                worst_images=[n for _, n in sorted(errors, reverse=True)[:5]], no_measurement=missing)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, action="append",
                    help="an HC18 folder (train.csv and train/); give it once per folder")
    ap.add_argument("--repeat", action="append", default=[],
                    help="FOLDER=N: each of that folder's training images is seen N times an epoch")
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--limit", type=int, default=0, help="train on this many images only (a quick trial)")
    args = ap.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.use_deterministic_algorithms(True)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)

    items = [it for d in args.data for it in load(d)]
    folders = sorted({it["folder"] for it in items})
    repeat = {k: int(v) for k, v in (r.split("=") for r in args.repeat)}
    train = [it for it in items if it["split"] == "train"]
    if args.limit:
        train = train[:args.limit]
    # The later-pregnancy folder is small (91 training images beside 472): its images are
    # repeated so that large heads are a fair share of each epoch.
    train = [it for it in train for _ in range(repeat.get(it["folder"], 1))]
    tune = [it for it in items if it["split"] == "tune"]
    test = [it for it in items if it["split"] == "test"]
    for f in folders:
        n = [sum(1 for it in part if it["folder"] == f) for part in (train, tune, test)]
        print(f"{f}: {n[0]} train (with repeats), {n[1]} tune, {n[2]} held apart", flush=True)

    model = UNet()
    batch = 8
    steps = args.epochs * math.ceil(len(train) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train))
        total = 0.0
        for i in range(0, len(order), batch):
            pairs = [augment(train[j], rng) for j in order[i:i + batch]]
            x = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None])
            y = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None])
            logits = model(x)
            bce = F.binary_cross_entropy_with_logits(logits, y)
            p = torch.sigmoid(logits)
            dice = 1 - (2 * (p * y).sum((2, 3)) + 1) / (p.sum((2, 3)) + y.sum((2, 3)) + 1)
            loss = bce + dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(pairs)
        line = f"epoch {epoch + 1}/{args.epochs}: loss {total / len(train):.4f}, {time.time() - start:.0f} s"
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            for f in folders:
                r = evaluate(model, [it for it in tune if it["folder"] == f])
                line += f"; {f} tune Dice {r['dice_mean']:.4f}, HC error mean {r['hc_abs_error_mm']['mean']:.2f} mm"
            export(model, args.out)  # a usable model at every check, should the run be cut short
        print(line, flush=True)

    model.eval()
    report = dict(seed=args.seed, epochs=args.epochs, input=[H, W], train_images=len(train), repeat=repeat,
                  tune=evaluate(model, tune), held_apart=evaluate(model, test),
                  by_folder={f: dict(tune=evaluate(model, [it for it in tune if it["folder"] == f]),
                                     held_apart=evaluate(model, [it for it in test if it["folder"] == f]))
                             for f in folders})
    json.dump(report, open(args.report, "w"), indent=2)
    print(json.dumps(dict(held_apart=report["held_apart"], by_folder=report["by_folder"]), indent=2), flush=True)
    export(model, args.out)
    print(f"wrote {args.out}")


def export(model, out):
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, H, W), out, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13,
                      do_constant_folding=True)


if __name__ == "__main__":
    main()
