#!/usr/bin/python3
"""Chooses fetal-head's quality limits (manifest thresholds) on the tune and training subjects.

    bin/vigil eval biometry --split tune --json > tune.json     (with the limits set loose)
    bin/vigil eval biometry --split train --json > train.json
    models/fetal-head/tune_quality.py tune.json train.json

Reads each image's HC error and quality figures (model score, fit residual, outline seen, how
much the mirrored view differs) and, for a grid of limits, prints how many images would be
flagged and how many would still be more than 10 mm off without a flag, over all images and
per folder (ultrasound-hc18, ultrasound-hc18-late). The limits in manifest.yaml are the loosest
that leave none, with a margin; the held-apart subjects are never looked at here. The residual
and the mirrored-view difference are shares of the head's size, so they scale with it.
"""
import itertools
import json
import re
import sys


def figures(q):
    m = re.match(r"model ([\d.]+), fit residual ([\d.]+)%, skull outline seen ([\d.]+)%(?:, mirrored view differs ([\d.]+)%)?", q)
    return float(m.group(1)), float(m.group(2)) / 100, float(m.group(3)) / 100, float(m.group(4) or 0) / 100


def main():
    images = []
    for path in sys.argv[1:]:
        images += [im for im in json.load(open(path))["images"] if im.get("hc_mm")]
    folders = sorted({im.get("folder", "") for im in images})
    rows = []
    grid = itertools.product([0.8, 0.85, 0.9], [0.04, 0.05, 0.07, 0.1], [0.7, 0.8, 0.9],
                             [0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 1])
    for score, resid, cover, spread in grid:
        flagged, silent, errs = {f: 0 for f in folders}, [], []
        for im in images:
            s, r, c, d = figures(im["quality"])
            # Flags the loose run raised for other reasons (axis ratio, other areas, HC range) stay.
            other = im.get("low_quality") and any(k in im.get("why", "") for k in ("flatter", "other areas", "outside any"))
            if s < score or r > resid or c < cover or d > spread or other:
                flagged[im.get("folder", "")] += 1
            else:
                errs.append(im.get("abs_error_mm", 0))
                if im.get("abs_error_mm", 0) > 10:
                    silent.append(im["file"])
        mean = sum(errs) / len(errs) if errs else 0
        over5 = sum(1 for e in errs if e > 5)
        rows.append((len(silent), sum(flagged.values()), score, resid, cover, spread, mean, over5, silent, flagged))
    rows.sort(key=lambda r: (r[0], r[1] + 2 * r[7]))
    counts = {f: sum(1 for im in images if im.get("folder", "") == f) for f in folders}
    print(f"{len(images)} measured images: " + ", ".join(f"{f} {n}" for f, n in counts.items()))
    print("silent>10mm flagged  min_score max_residual min_coverage max_flip_spread  mean-unflagged over5-unflagged  flagged per folder")
    for r in rows[:30]:
        per = ", ".join(f"{r[9][f]} ({100 * r[9][f] / max(counts[f], 1):.1f}%)" for f in folders)
        print(f"{r[0]:10d} {r[1]:7d}  {r[2]:9.2f} {r[3]:12.2f} {r[4]:12.2f} {r[5]:15.3f}  {r[6]:.2f} {r[7]:3d}  {per} {r[8]}")


if __name__ == "__main__":
    main()
