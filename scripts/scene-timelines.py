#!/usr/bin/env python3
"""End to end through the daemon (issue 30): for every view of a scene-states split, teach
the view's five states by MQTT samples (frames 0-4 of each state, `lsskd-edge sample
send`), then play its 90-frame timeline through a replay camera cut to the view's region
and score the retained stable state frame by frame against timeline.csv.

One frame of the timeline is one second of the camera. Frames are replayed every
`--interval-ms` (250: four times real time) and scored in frames, so "2 s" is 2 frames:
- accuracy: the stable state equals the truth, over the frames that are not within
  2 frames after a change of the truth (the timeline's start is such a change);
- latency: for each change, the frames until the stable state shows the new state (a
  change counts as reported in time when that is under 2).

Every daemon is a real one (`lsskd-edge run`, its embedded broker on a free loopback port,
a fresh state folder per view, publish.debounce_count 2). Usage:
  scripts/scene-timelines.py --bin target/debug/lsskd-edge --model models/scenes \
      --data ../shared/data/scene-states --split val --regions REGIONS.csv [--views a,b]
With --rtsp the timeline is played by an RTSP camera on loopback (scripts/rtsp-server.py,
H.264, --interval-ms a frame) and the frames are matched by their order. Prints one
Markdown row per view and the mean; each view's `frames.csv` in the work folder has, frame
by frame, the truth, the retained state and the frame's own prediction, and
`predictions.jsonl` the timeline's prediction messages (every class's score).
"""
import argparse
import collections
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

from timelinelib import adapt, arguments, collect, free_port, mqtt_section, send, start, stop, subscribe, wait_card, wait_port

STATES = ["empty", "animal", "vehicle", "parcel", "lights_off"]
LEAD = 12


def replay_source(frames, interval_ms, looped):
    return f"""kind = "replay_images"
path = "{frames}"
interval_ms = {interval_ms}
loop = {"true" if looped else "false"}"""


def rtsp_source(url, interval_ms):
    # ffmpeg keeps a frame once `interval_ms` passed since the last: a little under the
    # stream's frame period, so that jitter drops none.
    return f"""kind = "rtsp"
url = "{url}"
interval_ms = {interval_ms * 4 // 5}"""


def config(model, source, region, port, state_dir):
    x, y, w, h = region
    return f"""device_id = "tl"
state_dir = "{state_dir}"
[[pipeline]]
name = "cam"
model = "{model}"
region = {{ x = {x}, y = {y}, width = {w}, height = {h} }}
[pipeline.source]
{source}

{mqtt_section(port)}
[publish]
debounce_count = 2
top_k = 5
"""


def teach(a, view, model_name, port, cfg):
    """Frames 0-4 of each state as samples, then `adapt`; its outcome."""
    for state in STATES:
        send(a.bin, cfg, port, model_name, state,
             [f"{a.data}/{a.split}/{view}/{state}/{n}.jpg" for n in range(a.shot)])
    return adapt(port, "tl", model_name)


def frames_by_id(preds, n):
    """Replay: capture ids are consecutive, the last n are the timeline."""
    last = max(p["capture_id"] for p in preds)
    by = {p["capture_id"] - (last - n + 1): p for p in preds if p["capture_id"] > last - n}
    if len(by) != n:
        raise SystemExit(f"{len(by)} predictions for {n} frames (frames dropped?)")
    return by


def frames_by_order(preds, n):
    """RTSP: the stream starts at the lead-in's first frame once the daemon connects, and
    ffmpeg keeps every frame (their stream timestamps are a period apart, over
    `interval_ms`): the i-th prediction is frame i of the lead-in and the timeline. (Not
    their arrival times: ffmpeg holds the first frames while it probes the stream.)"""
    ordered = sorted(preds, key=lambda p: p["capture_id"])[LEAD:LEAD + n]
    if len(ordered) != n:
        raise SystemExit(f"{len(ordered)} predictions for {n} frames of the stream")
    return dict(enumerate(ordered))


def score(messages, truth, rtsp=False):
    preds = [json.loads(p) for t, p in messages if t.endswith("/prediction")]
    states = [json.loads(p) for t, p in messages if t.endswith("/state")]
    by = frames_by_order(preds, len(truth)) if rtsp else frames_by_id(preds, len(truth))
    preds = [by[t] for t in range(len(truth))]
    shown, k, per_frame = None, 0, []
    for p in preds:
        while k < len(states) and states[k]["ts"] <= p["ts"]:
            shown = states[k]["label"]
            k += 1
        per_frame.append(shown)
    return score_shown(per_frame, truth) + (per_frame, preds)


def changes_of(truth):
    """The frames where the truth changes (the start is one) and the frames not scored,
    those within 2 frames after a change."""
    changes = [0] + [t for t in range(1, len(truth)) if truth[t] != truth[t - 1]]
    return changes, {t for c in changes for t in range(c, c + 2)}


def score_shown(per_frame, truth):
    """(accuracy outside 2 frames after a change, changes shown within 2 frames, changes)."""
    changes, settling = changes_of(truth)
    scored = [t for t in range(len(truth)) if t not in settling]
    right = sum(per_frame[t] == truth[t] for t in scored)
    late = []
    for c in changes:
        end = next((t for t in changes if t > c), len(truth))
        hit = next((t - c for t in range(c, end) if per_frame[t] == truth[c]), None)
        late.append(hit)
    in_time = sum(1 for h in late if h is not None and h < 2)
    return right / len(scored), in_time, len(changes)


def write_frames(path, truth, shown, preds):
    """Frame by frame: the truth, the retained state and the frame's own prediction."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "truth", "state", "prediction", "score"])
        for t, (want, s, p) in enumerate(zip(truth, shown, preds)):
            w.writerow([t, want, s, p["label"], f"{p['score']:.3f}"])


def stable_states(preds, count, min_score):
    """The stable state after each prediction under the rule of `pipeline::Debouncer`: a
    label after `count` predictions of it in a row, each scoring at least `min_score`."""
    stable, recent, out = None, [], []
    for p in preds:
        recent = (recent + [p["label"] if p["score"] >= min_score else None])[-count:]
        if recent[-1] is not None and recent.count(recent[-1]) == count:
            stable = recent[-1]
        out.append(stable)
    return out


def rescore(a, work):
    """The predictions a run kept (WORK/<view>/predictions.jsonl) scored again under other
    `publish.debounce_count` and `publish.min_score`; no daemon runs. Then why the run's
    own retained states were wrong (WORK/<view>/frames.csv), and how the frames' own
    predictions match the truth shifted by a few frames (an RTSP run's alignment)."""
    print("| predictions in a row | score floor | state right (mean) | worst view | changes within 2 s |")
    print("|---|---|---|---|---|")
    views = sorted(v for v in os.listdir(work) if os.path.exists(f"{work}/{v}/predictions.jsonl"))
    truths = {v: [r["state"] for r in csv.DictReader(open(f"{a.data}/{a.split}/{v}/timeline.csv"))]
              for v in views}
    for count, floor in itertools.product((1, 2, 3), (0.5, 0.3, 0.0)):
        accs, hits, n = [], 0, 0
        for view in views:
            preds = [json.loads(line) for line in open(f"{work}/{view}/predictions.jsonl")]
            acc, in_time, changes = score_shown(stable_states(preds, count, floor), truths[view])
            accs.append(acc)
            hits += in_time
            n += changes
        print(f"| {count} | {floor} | {sum(accs) / len(accs):.3f} | {min(accs):.3f} | {hits} of {n} |")
    why, confused, shifted = collections.Counter(), collections.Counter(), collections.Counter()
    for view in views:
        rows = list(csv.DictReader(open(f"{work}/{view}/frames.csv")))
        truth = truths[view]
        _, settling = changes_of(truth)
        for t, r in enumerate(rows):
            for k in range(-3, 4):
                if 0 <= t + k < len(rows):
                    shifted[k, "n"] += 1
                    shifted[k, "right"] += rows[t + k]["prediction"] == truth[t]
            if t in settling or r["state"] == r["truth"]:
                continue
            if r["prediction"] == r["truth"]:
                why["the frame is right, the retained state lags"] += 1
            else:
                why["the frame's own prediction is wrong"] += 1
                confused[f"{r['truth']} -> {r['prediction']}"] += 1
    print(f"\nscored frames with the wrong state: {dict(why)}")
    print(f"the wrong predictions: {dict(confused.most_common())}")
    print("frame t's truth against prediction t+k: " +
          ", ".join(f"k={k}: {shifted[k, 'right'] / shifted[k, 'n']:.3f}" for k in range(-3, 4)))


def run_view(a, view, region, work):
    model_name = json.load(open(f"{a.model}/manifest.json"))["name"]
    port = free_port()
    state_dir = f"{work}/{view}/state"
    os.makedirs(state_dir, exist_ok=True)
    log = f"{work}/{view}/daemon.log"
    # 1. Teach, with the camera on the view's empty frames.
    cfg = f"{work}/{view}/teach.toml"
    empty = replay_source(f"{a.data}/{a.split}/{view}/empty", 1000, True)
    open(cfg, "w").write(config(os.path.abspath(a.model), empty, region, port, state_dir))
    d = start(a.bin, cfg, log)
    try:
        wait_port(port)
        wait_card(port, "tl", model_name)
        verdict = teach(a, view, model_name, port, cfg)
    finally:
        stop(d)
    # 2. The timeline once, frame names in time order.
    frames = f"{work}/{view}/timeline"
    os.makedirs(frames, exist_ok=True)
    truth = [r["state"] for r in csv.DictReader(open(f"{a.data}/{a.split}/{view}/timeline.csv"))]
    # A lead-in of LEAD copies of frame 0 (the timeline starts empty) while the subscriber
    # connects; the frames are scored by capture id, the last len(truth) of them.
    # (RTSP: the server wants N.jpg.)
    for t in range(-LEAD, len(truth)):
        name = f"{t + LEAD}.jpg" if a.rtsp else f"{t + LEAD:04d}.jpg"
        os.symlink(os.path.abspath(f"{a.data}/{a.split}/{view}/timeline/{max(t, 0)}.jpg"),
                   f"{frames}/{name}")
    cfg = f"{work}/{view}/timeline.toml"
    server = None
    if a.rtsp:
        # The camera comes up once the subscriber listens (the daemon's source retries
        # meanwhile), so that the first frame it delivers is the stream's first.
        rtsp_port = free_port()
        source = rtsp_source(f"rtsp://127.0.0.1:{rtsp_port}/cam", a.interval_ms)
    else:
        source = replay_source(frames, a.interval_ms, False)
    open(cfg, "w").write(config(os.path.abspath(a.model), source, region, port, state_dir))
    d = start(a.bin, cfg, log)
    try:
        wait_port(port)
        n = len(truth)
        sub = subscribe(port, ["lsskd/tl/cam/prediction", "lsskd/tl/cam/state"],
                        int(n * a.interval_ms / 1000) + 60, 10 * n)
        if a.rtsp:
            time.sleep(0.5)
            server = subprocess.Popen(
                ["/usr/bin/python3", "scripts/rtsp-server.py", frames, str(rtsp_port),
                 "--fps", str(1000 // a.interval_ms)], stdout=subprocess.PIPE, text=True)
            if server.stdout.readline().strip() != "ready":
                raise SystemExit("the RTSP server did not start")
        # The replay plays once: done when no prediction came for 3 s after the first.
        # The RTSP stream loops: done once the lead-in and the timeline have played.
        span = (LEAD + n + 2) * a.interval_ms / 1000
        messages = collect(sub, 3.0, (lambda first: time.time() - first > span) if a.rtsp else None)
    finally:
        stop(d)
        if server:
            server.kill()
    acc, in_time, n_changes, shown, preds = score(messages, truth, a.rtsp)
    write_frames(f"{work}/{view}/frames.csv", truth, shown, preds)
    with open(f"{work}/{view}/predictions.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in preds)
    return acc, in_time, n_changes, verdict


def main():
    ap = arguments(argparse.ArgumentParser())
    ap.add_argument("--regions")
    ap.add_argument("--views")
    ap.add_argument("--interval-ms", type=int, default=250)
    ap.add_argument("--rtsp", action="store_true",
                    help="play the timeline through an RTSP camera (scripts/rtsp-server.py) instead of a replay")
    ap.add_argument("--rescore", metavar="WORK",
                    help="score a run's kept predictions again under other debounce counts and score floors")
    a = ap.parse_args()
    a.data = os.path.abspath(a.data)
    if a.rescore:
        return rescore(a, a.rescore)
    if not a.regions:
        raise SystemExit("--regions is needed to run the timelines")
    regions = {r["group"]: (int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"]))
               for r in csv.DictReader(open(a.regions))}
    views = a.views.split(",") if a.views else sorted(regions)
    work = a.work or tempfile.mkdtemp(prefix="scene-timelines-")
    print("| view | state right (frames outside 2 s after a change) | changes reported within 2 s | teaching |")
    print("|---|---|---|---|")
    accs, hits, changes = [], 0, 0
    for view in views:
        acc, in_time, n_changes, verdict = run_view(a, view, regions[view], work)
        accs.append(acc)
        hits += in_time
        changes += n_changes
        print(f"| {view} | {acc:.3f} | {in_time} of {n_changes} | {verdict} |", flush=True)
    print(f"| **mean** | {sum(accs) / len(accs):.3f} (worst {min(accs):.3f}) | {hits} of {changes} | |")
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
