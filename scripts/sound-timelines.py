#!/usr/bin/env python3
"""End to end through the daemon (issue 29): the 60-s timelines of a sound-events split
played through a replay microphone into a real daemon, and its stable state scored against
each timeline's CSV — first with the model as shipped, then after the novel classes were
taught by MQTT samples (`lsskd-edge sample send`, then `adapt`).

Teaching: per novel class, `--shot` clips of the `train` split from one source recording
(`recording_id`), else from one source package, else (a class with too few clips, such as
glass_break) 3 clips of the class. The teaching daemon's microphone plays the train beds.

Scoring, in the timeline's time (the replay plays in real time: one hop of audio a hop of
wall clock). Window j of the replay ends at `window + j * hop` after the timeline's start
(a lead-in of `--lead-s` of near-silence comes first and is not scored); the stable label
after window j is the last `state` message at or before its prediction. An event is caught
when the stable label equals its class at the end of some window within its second ±0.5 s
(`start_s - 0.5` to `end_s + 0.5`). A false alarm is a run of windows with one stable
label (not nothing) that no event of that class overlaps, ±0.5 s. Prints one Markdown row
per timeline and phase, and the totals. Usage:
  scripts/sound-timelines.py --bin target/debug/lsskd-edge --model models/sounds \
      --data ../shared/data/sound-events [--split val] [--timelines val_0,val_1] [--no-teach]
Every daemon is real (`lsskd-edge run`, its embedded broker on a free loopback port); the
timelines of a phase play at the same time, one daemon each. Each run keeps its predictions
(WORK/<phase>/<timeline>/messages.json); `--rescore WORK` scores them again under other
stable-state rules (windows in a row, a score floor under which a window is nothing).
"""
import argparse
import collections
import csv
import glob
import json
import math
import os
import random
import shutil
import struct
import sys
import tempfile
import wave

from timelinelib import adapt, arguments, collect, free_port, mqtt_section, send, start, stop, subscribe, wait_card, wait_port

NOVEL_FALLBACK_SHOT = 3
PIPELINE = "mic"


def config(model, path, looped, port, state_dir, a):
    return f"""device_id = "tl"
state_dir = "{state_dir}"
[[pipeline]]
name = "{PIPELINE}"
model = "{model}"
[pipeline.source]
kind = "replay_audio"
path = "{path}"
window_ms = {a.window_ms}
hop_ms = {a.hop_ms}
loop = {"true" if looped else "false"}

{mqtt_section(port)}
[publish]
debounce_count = {a.debounce}
[adapt]
auto_after = 0
"""


def support(data, classes, shot):
    """Per class, the teaching clips: `shot` of one recording, else of one package, else
    NOVEL_FALLBACK_SHOT of the class (largest package first)."""
    rows = [r for r in csv.DictReader(open(f"{data}/manifest-train.csv")) if r["class"] in classes]
    out = {}
    for c in classes:
        clips = [r for r in rows if r["class"] == c]
        for key in ("recording_id", "source_package"):
            groups = collections.defaultdict(list)
            for r in clips:
                groups[r[key]].append(r)
            best = max(sorted(groups), key=lambda g: len(groups[g]))
            if len(groups[best]) >= shot:
                out[c] = (key, best, [f"{data}/{r['path']}" for r in groups[best][:shot]])
                break
        else:
            sizes = collections.Counter(r["source_package"] for r in clips)
            clips.sort(key=lambda r: (-sizes[r["source_package"]], r["path"]))
            out[c] = ("class", c, [f"{data}/{r['path']}" for r in clips[:NOVEL_FALLBACK_SHOT]])
    return out


def write_silence(path, seconds, rate=16000, seed=0):
    """Near-silence (white noise at -70 dBFS), the lead-in before a timeline."""
    rng = random.Random(seed)
    amp = 32767 * 10 ** (-70 / 20)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(rng.uniform(-amp, amp)))
                               for _ in range(int(seconds * rate))))


def teach(a, work, classes):
    """A state folder whose model knows `classes` (taught from the train split), and how
    each class was taught."""
    state_dir = f"{work}/taught/state"
    os.makedirs(state_dir, exist_ok=True)
    port = free_port()
    cfg = f"{work}/taught/teach.toml"
    open(cfg, "w").write(config(a.model, f"{a.data}/beds", True, port, state_dir, a))
    model_name = json.load(open(f"{a.model}/manifest.json"))["name"]
    chosen = support(a.data, classes, a.shot)
    d = start(a.bin, cfg, f"{work}/taught/daemon.log")
    try:
        wait_port(port)
        wait_card(port, "tl", model_name)
        for c in classes:
            send(a.bin, cfg, port, model_name, c, chosen[c][2])
        verdict = adapt(port, "tl", model_name)
    finally:
        stop(d)
    return state_dir, verdict, chosen


def play(a, work, phase, name, state_from):
    """Start the daemon for one timeline (its own copy of the state folder)."""
    base = f"{work}/{phase}/{name}"
    os.makedirs(f"{base}/play", exist_ok=True)
    state_dir = f"{base}/state"
    if state_from:
        shutil.copytree(state_from, state_dir)
    write_silence(f"{base}/play/0-lead.wav", a.lead_s)
    os.symlink(f"{a.data}/timelines/{name}.wav", f"{base}/play/1-timeline.wav")
    port = free_port()
    cfg = f"{base}/play.toml"
    open(cfg, "w").write(config(a.model, f"{base}/play", False, port, state_dir, a))
    d = start(a.bin, cfg, f"{base}/daemon.log")
    wait_port(port)
    n = windows(a)
    sub = subscribe(port, [f"lsskd/tl/{PIPELINE}/prediction", f"lsskd/tl/{PIPELINE}/state"],
                    int(a.lead_s + 60) + 60, 10 * n)
    return d, sub


def windows(a):
    """Windows of the lead-in and the timeline (60 s)."""
    total_ms = int((a.lead_s + 60) * 1000)
    return (total_ms - a.window_ms) // a.hop_ms + 1


def timeline_windows(preds, a):
    """The predictions of the lead-in and the timeline's windows, in order, each with the
    end of its window in the timeline's seconds (negative in the lead-in). Capture ids are
    consecutive and the last one is the stream's last window."""
    n = windows(a)
    last = max(p["capture_id"] for p in preds)
    kept = sorted((p for p in preds if p["capture_id"] > last - n), key=lambda p: p["capture_id"])
    return [((a.window_ms + (p["capture_id"] - (last - n + 1)) * a.hop_ms) / 1000 - a.lead_s, p)
            for p in kept]


def shown_labels(messages, a):
    """[(end of window in the timeline's seconds, stable label or "")], in order."""
    preds = [json.loads(p) for t, p in messages if t.endswith("/prediction")]
    states = [json.loads(p) for t, p in messages if t.endswith("/state")]
    shown, k, out = "", 0, []
    for end_s, p in timeline_windows(preds, a):
        while k < len(states) and states[k]["ts"] <= p["ts"]:
            shown = states[k]["label"] or ""
            k += 1
        if end_s >= 0:
            out.append((end_s, shown))
    return out


def minutes_of(labels, a):
    return (labels[-1][0] - labels[0][0] + a.window_ms / 1000) / 60 if labels else math.nan


def events_of(a, timeline):
    return list(csv.DictReader(open(f"{a.data}/timelines/{timeline}.csv")))


def score(labels, events):
    """Caught events (per group) and false alarms."""
    caught = collections.Counter()
    for e in events:
        lo, hi = float(e["start_s"]) - 0.5, float(e["end_s"]) + 0.5
        if any(lo <= t <= hi and lab == e["class"] for t, lab in labels):
            caught[e["group"]] += 1
    runs, prev = [], None
    for t, lab in labels:
        if lab and lab == prev:
            runs[-1][2] = t
        elif lab:
            runs.append([lab, t, t])
        prev = lab
    false = 0
    for lab, t0, t1 in runs:
        if not any(e["class"] == lab and float(e["start_s"]) - 0.5 <= t1 and t0 <= float(e["end_s"]) + 0.5
                   for e in events):
            false += 1
    return caught, false


def rescore(a, work):
    """The predictions a run kept (WORK/<phase>/<timeline>/messages.json) scored again under
    other stable-state rules: a label is stable after `count` windows in a row, and a window
    whose score is under `floor` counts as nothing (an open-set rule on top of the model's
    background class). No daemon runs; the windows are mapped as in a live run."""
    background = json.load(open(f"{a.model}/manifest.json")).get("background")
    print("| phase | windows in a row | score under it is nothing | core caught | novel caught | false alarms a minute |")
    print("|---|---|---|---|---|---|")
    for name in sorted(os.listdir(work)):
        runs = [(timeline_windows(json.load(open(path))["predictions"], a),
                 events_of(a, os.path.basename(os.path.dirname(path))))
                for path in sorted(glob.glob(f"{work}/{name}/*/messages.json"))]
        if not runs:
            continue
        for count in (1, 2, 3):
            for floor in (0.0, 0.5, 0.7, 0.9):
                caught, total, false, minutes = collections.Counter(), collections.Counter(), 0, 0.0
                for mapped, events in runs:
                    stable, run, cand, labels = "", 0, None, []
                    for end_s, p in mapped:
                        lab = "" if p["label"] == background or p["score"] < floor else p["label"]
                        run, cand = (run + 1, cand) if lab == cand else (1, lab)
                        if run >= count:
                            stable = lab
                        if end_s >= 0:
                            labels.append((end_s, stable))
                    k, f = score(labels, events)
                    caught.update(k)
                    total.update(e["group"] for e in events)
                    false += f
                    minutes += minutes_of(labels, a)
                print(f"| {name} | {count} | {floor} | {caught['core']} of {total['core']} | "
                      f"{caught['novel']} of {total['novel']} | {false / minutes:.2f} |")


def phase(a, work, name, timelines, state_from):
    """Every timeline at once; per timeline (caught per group, events per group, false alarms,
    minutes)."""
    running = [(t, *play(a, work, name, t, state_from)) for t in timelines]
    results = {}
    try:
        for t, _, sub in running:
            messages = collect(sub, 5.0)
            events = events_of(a, t)
            labels = shown_labels(messages, a)
            json.dump({"shown": labels, "predictions": [json.loads(p) for tp, p in messages
                                                        if tp.endswith("/prediction")]},
                      open(f"{work}/{name}/{t}/messages.json", "w"))
            caught, false = score(labels, events)
            total = collections.Counter(e["group"] for e in events)
            results[t] = (caught, total, false, minutes_of(labels, a))
    finally:
        for _, d, _ in running:
            stop(d)
    return results


def main():
    ap = arguments(argparse.ArgumentParser())
    ap.add_argument("--timelines", help="names (default: every <split>_<i>.wav)")
    ap.add_argument("--teach", default="door,glass_break,keyboard_typing,fire_crackle,weather")
    ap.add_argument("--no-teach", action="store_true", help="only the shipped model")
    ap.add_argument("--window-ms", type=int, default=1000)
    ap.add_argument("--hop-ms", type=int, default=250)
    ap.add_argument("--debounce", type=int, default=2)
    ap.add_argument("--lead-s", type=float, default=3.0)
    ap.add_argument("--rescore", metavar="WORK",
                    help="score a run's kept predictions under other stable-state rules (no daemon)")
    a = ap.parse_args()
    a.data = os.path.abspath(a.data)
    if a.rescore:
        return rescore(a, a.rescore)
    a.model = os.path.abspath(a.model)
    timelines = a.timelines.split(",") if a.timelines else sorted(
        f[:-4] for f in os.listdir(f"{a.data}/timelines") if f.startswith(f"{a.split}_") and f.endswith(".wav"))
    work = a.work or tempfile.mkdtemp(prefix="sound-timelines-")
    phases = [("shipped", None, "")]
    if not a.no_teach:
        state_dir, verdict, chosen = teach(a, work, a.teach.split(","))
        for c, (key, group, files) in chosen.items():
            print(f"taught {c}: {len(files)} clips of one {key} ({group})", file=sys.stderr)
        phases.append(("taught", state_dir, verdict))
    print("| timeline | model | core events caught | novel events caught | false alarms | per minute |")
    print("|---|---|---|---|---|---|")
    for name, state_from, verdict in phases:
        results = phase(a, work, name, timelines, state_from)
        tot = [collections.Counter(), collections.Counter(), 0, 0.0]
        for t in timelines:
            caught, total, false, minutes = results[t]
            print(f"| {t} | {name} | {caught['core']} of {total['core']} | {caught['novel']} of {total['novel']} "
                  f"| {false} | {false / minutes:.2f} |", flush=True)
            tot[0].update(caught)
            tot[1].update(total)
            tot[2] += false
            tot[3] += minutes
        caught, total, false, minutes = tot
        recall = sum(caught.values()) / max(sum(total.values()), 1)
        print(f"| **all** | {name}{' (' + verdict + ')' if verdict else ''} | {caught['core']} of {total['core']} "
              f"({caught['core'] / max(total['core'], 1):.3f}) | {caught['novel']} of {total['novel']} "
              f"({caught['novel'] / max(total['novel'], 1):.3f}) | {false} | {false / minutes:.2f} |", flush=True)
        print(f"{name}: recall {recall:.3f} over {sum(total.values())} events, "
              f"{false / minutes:.2f} false alarms a minute", file=sys.stderr)
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
