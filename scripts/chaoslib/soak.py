"""soak: the daemon for `--minutes` (≥ 60 for the figure) with two pipelines — `door`, a
replay of the demo images every 200 ms (5/s), and `cam`, an IP camera
(`scripts/rtsp-server.py`, GStreamer's RTSP server streaming a scene timeline at 5 frames
a second, read through ffmpeg like any RTSP camera) — while:

- a sample of a shipped class arrives over MQTT every 15 s;
- teaching rounds (one per 6 minutes, 2 to 10), spread over the first two thirds of the
  run (so that the last adaptation ends before it does), alternate a new digit (5 good samples: its
  imprint should be promoted, then an `adapt` fine-tune) and five images of a shipped class
  (`bag`) under a new name (the gate should reject it: the same thing sent under a new
  name);
- mosquitto is restarted twice (at a third and two thirds of the run, down 3 s each);
- the camera is unplugged (its server killed) for 10 s at half the run and plugged back.

A short run (`--short`, 5 minutes) has the same settings: its fine-tunes run whole (5–25 s
here). (It used to give them a budget of 5 s; a fine-tune that failed over that budget left
about 10 MiB behind that `malloc_trim` did not return — 59 → 70 MiB, where a whole one
leaves nothing — which failed the RSS check; that path is to be looked into.)

Checks, after the warm-up (the first fifth of the run, at least a minute):
- each pipeline's prediction rate within 5 % of its configured rate (5/s), counted by
  capture time (`ts`, distinct `capture_id`) over the measured time minus the fault
  windows — from each fault's start until 10 s after that pipeline's first prediction
  after it (broker restarts: both pipelines; the unplug: `cam`);
- the camera came back (its status said `retrying` while unplugged, predictions resumed);
- predictions resumed after both broker restarts;
- adaptations promoted ≥ 1 and rejected ≥ 1;
- RSS, sampled every 10 s, compared at moments the trainer is idle (`training/state`
  not training, gating or queued; a fine-tune's working set comes and goes): the median of
  the last 12 such samples (a quarter of them in short runs) within 5 % of the median of
  the first 12 after the warm-up and the end of the first adaptation of each kind that ran
  (an imprint, a fine-tune: the first of each sets up what the process keeps for it — the
  trainer's thread pool and its threads' heaps; growth after that is what the check is
  for); open file descriptors
  (`/proc/<pid>/fd`) at the end ≤ after the warm-up (medians likewise);
- the daemon ran to the end and stopped cleanly on SIGTERM."""
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

from .mqtt import Client
from .rig import (BASE, DATA, REPO, Broker, Daemon, digit_pngs, free_port, jload, log,
                  replay_pipeline, sample, shipped_pngs, spawn, write_config)

RATE_HZ = 5.0
SLACK = 0.05


class Camera:
    """scripts/rtsp-server.py on a fixed port: unplug = kill it, replug = start it again."""

    def __init__(self, tmp):
        self.port = free_port()
        self.folder = DATA / "scene-states" / "val" / "va01_table" / "timeline"
        self.log = Path(tmp) / "camera.log"
        self.proc = None
        self.plug()

    def plug(self):
        self.proc = spawn(
            ["/usr/bin/python3", str(REPO / "scripts" / "rtsp-server.py"), str(self.folder),
             str(self.port), "--fps", str(int(RATE_HZ))],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        end = time.time() + 20
        while time.time() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the RTSP server did not listen: {self.log.read_text()[-500:]}")

    def unplug(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def url(self):
        return f"rtsp://127.0.0.1:{self.port}/cam"


def cam_pipeline(url):
    return f"""[[pipeline]]
name = "cam"
model = "{REPO / 'models' / 'vision'}"
[pipeline.source]
kind = "rtsp"
url = "{url}"
interval_ms = 1
timeout_ms = 3000
"""


def run(args, tmp, checks, rng):
    total = args.minutes * 60
    warmup = max(60.0, total / 5)
    broker = Broker(tmp)
    cam = Camera(tmp)
    conf = write_config(tmp, broker.port,
                        replay_pipeline("door", int(1000 / RATE_HZ)) + cam_pipeline(cam.url),
                        "[adapt]\nmin_shots = 3\nauto_after = 100000\nsample_quota = 100000\n")
    sub = Client(broker.port, [f"{BASE}/#"])
    sub.wait_ready()
    d = Daemon(conf, tmp)
    t0 = d.started
    shipped = shipped_pngs()
    digits = digit_pngs()
    bags = [f.read_bytes() for f in sorted((DATA / "fashion-mnist" / "preview" / "bag").glob("*.png"))][:5]
    # The schedule: (seconds after the start, action, argument).
    events = [(total / 3, "broker", 1), (2 * total / 3, "broker", 2), (total / 2, "camera", None)]
    rounds = max(2, min(10, int(args.minutes / 6)))
    for k in range(rounds):
        events.append((total * (0.05 + 0.6 * k / rounds), "teach", k))
    t = 15.0
    while t < total - 5:
        events.append((t, "sample", None))
        t += 15.0
    events.sort(key=lambda e: e[0])
    faults = []          # (start, end-of-outage, pipelines affected)
    broker_resumed, camera = [], {}
    mem = []             # (t, rss KiB, fds)
    seq = 0
    next_mem = t0
    end = t0 + total
    while time.time() < end and d.alive():
        now = time.time()
        if now >= next_mem:
            # The trainer's state at this moment: RSS is compared between idle moments.
            st = [m for m in sub.since(t0, f"{BASE}/training/state")]
            busy = bool(st) and (jload(st[-1].payload) or {}).get("state") in ("training", "gating", "queued")
            mem.append((now - t0, d.rss_kib(), d.fds(), busy))
            next_mem += 10
        while events and t0 + events[0][0] <= now:
            _, what, arg = events.pop(0)
            if what == "sample":
                seq += 1
                label, png = rng.choice(shipped)
                sub.publish(f"{BASE}/samples/vision/add", sample(f"s{seq}", label, png))
            elif what == "teach":
                if arg % 2 == 0:
                    g = str(arg // 2 % 10)
                    label, pngs = f"digit_{g}", digits[g][:5]
                else:
                    label, pngs = f"satchel_{arg}", bags
                for png in pngs:
                    seq += 1
                    sub.publish(f"{BASE}/samples/vision/add", sample(f"s{seq}", label, png))
                if arg % 2 == 0:
                    pending_adapt = time.time() + 20
                    events.insert(0, (pending_adapt - t0, "adapt", None))
                    events.sort(key=lambda e: e[0])
                log(f"soak {(now - t0) / 60:.1f} min: taught {label} ({len(pngs)} samples)")
            elif what == "adapt":
                sub.publish(f"{BASE}/model/vision/cmd", "adapt")
                log(f"soak {(now - t0) / 60:.1f} min: adapt")
            elif what == "broker":
                down = time.time()
                broker.stop(signal.SIGTERM if arg == 1 else signal.SIGKILL)
                time.sleep(3)
                up = broker.start()
                got = sub.wait(up, f"{BASE}/door/prediction", timeout=60,
                               pred=lambda m: (jload(m.payload) or {}).get("ts", 0) >= up * 1000)
                broker_resumed.append(got.at - up if got else None)
                faults.append((down, up, ("door", "cam")))
                log(f"soak {(now - t0) / 60:.1f} min: broker restart {arg}: predictions "
                    f"{'resumed %.2f s after it was up' % (got.at - up) if got else 'did not resume'}")
            elif what == "camera":
                down = time.time()
                cam.unplug()
                time.sleep(10)
                retrying = [m for m in sub.since(down, f"{BASE}/status")
                            if any(p.get("name") == "cam" and "retrying" in str(p.get("state", ""))
                                   for p in (jload(m.payload) or {}).get("pipelines", []))]
                cam.plug()
                up = time.time()
                got = sub.wait(up, f"{BASE}/cam/prediction", timeout=90,
                               pred=lambda m: (jload(m.payload) or {}).get("ts", 0) >= up * 1000)
                camera = {"retrying_reported": bool(retrying),
                          "resumed_s": round(got.at - up, 2) if got else None}
                faults.append((down, up, ("cam",)))
                log(f"soak {(now - t0) / 60:.1f} min: camera unplugged 10 s: status retrying "
                    f"{bool(retrying)}, predictions {'resumed %.1f s after the replug' % (got.at - up) if got else 'did not resume'}")
        time.sleep(0.2)
    alive = d.alive()
    t_end = time.time()
    d.stop()
    clean = d.proc.returncode == 0
    time.sleep(0.5)
    sub.close()
    cam.unplug()
    broker.stop()

    # Rates by capture time, outside the warm-up and the fault windows.
    seen = {"door": {}, "cam": {}}
    for m in sub.since(t0):
        if m.topic.endswith("/prediction"):
            p = jload(m.payload) or {}
            pl = p.get("pipeline")
            if pl in seen and "ts" in p:
                seen[pl][p.get("capture_id")] = p["ts"] / 1000
    win_from, win_to = t0 + warmup, min(t_end, t0 + total) - 5
    rates = {}
    for pl, caps in seen.items():
        times = sorted(caps.values())
        excluded = []
        for start, up, affected in faults:
            if pl in affected:
                after = [x for x in times if x >= up]
                excluded.append((start, (after[0] if after else win_to) + 10))
        def inside(x):
            return win_from <= x <= win_to and not any(a <= x <= b for a, b in excluded)
        span = win_to - win_from - sum(max(0, min(b, win_to) - max(a, win_from)) for a, b in excluded)
        n = sum(1 for x in times if inside(x))
        gaps = [b - a for a, b in zip(times, times[1:]) if inside(a) and inside(b)]
        rates[pl] = {"rate_hz": n / span if span > 0 else 0, "measured_s": round(span), "predictions": n,
                     "longest_gap_s": round(max(gaps), 2) if gaps else None,
                     "excluded_s": round(sum(b - a for a, b in excluded))}
    for pl, r in rates.items():
        checks.check(f"rate-{pl}", abs(r["rate_hz"] - RATE_HZ) <= SLACK * RATE_HZ,
                     f"`{pl}` {r['rate_hz']:.3f} predictions/s over {r['measured_s']} s "
                     f"({r['excluded_s']} s of fault windows left out; longest gap {r['longest_gap_s']} s)",
                     f"{RATE_HZ:g}/s ± 5 %")
    checks.check("broker-restarts", len(broker_resumed) == 2 and all(x is not None for x in broker_resumed),
                 f"{len(broker_resumed)} restarts, predictions resumed "
                 + ", ".join("-" if x is None else f"{x:.2f} s" for x in broker_resumed) + " after broker-up",
                 "2 restarts, predictions resume")
    checks.check("camera-replug", camera.get("retrying_reported") and camera.get("resumed_s") is not None,
                 f"unplugged 10 s: status said retrying: {camera.get('retrying_reported')}; predictions "
                 f"resumed {camera.get('resumed_s')} s after the replug", "retrying reported, predictions resume")
    outcomes = {}
    for m in sub.since(t0, f"{BASE}/training/state"):
        s = jload(m.payload) or {}
        if s.get("state") in ("promoted", "rejected") and s.get("kind") in ("imprint", "finetune"):
            key = f"{s['kind']} {s['state']}"
            outcomes[key] = outcomes.get(key, 0) + 1
    promoted = sum(v for k, v in outcomes.items() if k.endswith("promoted"))
    rejected = sum(v for k, v in outcomes.items() if k.endswith("rejected"))
    checks.check("adaptations", promoted >= 1 and rejected >= 1,
                 ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())) or "none",
                 "≥ 1 promoted and ≥ 1 rejected")
    # After the warm-up and the end of the first adaptation of each kind that ran, at
    # moments the trainer was idle.
    ends = {}
    for m in sub.since(t0, f"{BASE}/training/state"):
        st = jload(m.payload) or {}
        if st.get("state") in ("promoted", "rejected", "failed") and st.get("kind") in ("imprint", "finetune"):
            ends.setdefault(st["kind"], m.at - t0)
    first_jobs = max(ends.values(), default=0)
    after = [(t, r, f) for t, r, f, busy in mem if t >= max(warmup, first_jobs) and r and not busy]
    k = max(2, min(12, len(after) // 4))
    first, last = after[:k], after[-k:]
    if len(after) >= 2 * k:
        rss0, rss1 = statistics.median(r for _, r, _ in first), statistics.median(r for _, r, _ in last)
        fd0, fd1 = statistics.median(f for _, _, f in first), statistics.median(f for _, _, f in last)
        growth = 100 * (rss1 - rss0) / rss0
        checks.check("rss", growth < 5,
                     f"{rss0 / 1024:.1f} MiB after the warm-up and the first {' and '.join(sorted(ends)) or 'job'}, {rss1 / 1024:.1f} MiB at the end "
                     f"({growth:+.2f} %; max {max(r for _, r, _, _ in mem if r) / 1024:.1f} MiB while training; "
                     f"medians of {k} of the {len(after)} idle samples after the warm-up, {len(mem)} in all)",
                     "growth < 5 %")
        checks.check("fds", fd1 <= fd0,
                     f"{fd0:g} open files after the warm-up, {fd1:g} at the end "
                     f"(max {max(f for _, _, f, _ in mem if f)})", "no growth")
    else:
        checks.check("rss", False, f"too few idle samples after the warm-up ({len(after)})", "growth < 5 %")
    checks.check("alive", alive and clean,
                 f"ran {(t_end - t0) / 60:.1f} min, stopped on SIGTERM with {d.proc.returncode}",
                 "ran to the end, exit 0")
    return {"rates": rates, "broker_resumed_s": broker_resumed, "camera": camera,
            "adaptations": outcomes, "memory": mem}
