#!/usr/bin/env python3
"""Regions of interest for the views of ../shared/data/scene-states (issue 30).

A person setting up a camera draws the region where things happen in the view. Here that
region is derived from the teaching frames only (frames 0-4 of `animal`, `vehicle` and
`parcel`, the frames `fewshot-bench --per-group` and the daemon test teach with): the
union of those objects' boxes (feet at x, y; side = scale * 240, the manifest's size),
widened by a margin of a quarter of the box, made square (the model's input is square)
and kept inside the 320x240 frame. Prints `group,x,y,width,height` (dataset::regions).

Usage: scripts/scene-regions.py DATA SPLIT > regions.csv
"""
import csv
import sys

W, H = 320, 240
TEACH = range(5)


def region(boxes):
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[2] for b in boxes)
    y1 = max(b[3] for b in boxes)
    mx, my = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
    x0, y0, x1, y1 = x0 - mx, y0 - my, x1 + mx, y1 + my
    side = min(max(x1 - x0, y1 - y0), H)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0), W - side)
    top = min(max(cy - side / 2, 0), H - side)
    return round(left), round(top), round(side), round(side)


def main():
    data, split = sys.argv[1], sys.argv[2]
    boxes = {}
    for r in csv.DictReader(open(f"{data}/manifest-{split}.csv")):
        n = int(r["path"].rsplit("/", 1)[1].split(".")[0])
        if r["x"] and n in TEACH:
            x, y, side = float(r["x"]), float(r["y"]), float(r["scale"]) * 240
            boxes.setdefault(r["scene"], []).append((x - side / 2, y - side, x + side / 2, y))
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["group", "x", "y", "width", "height"])
    for scene in sorted(boxes):
        out.writerow([scene, *region(boxes[scene])])


if __name__ == "__main__":
    main()
