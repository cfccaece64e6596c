#!/usr/bin/env python3
"""Samples one process's footprint for a phase of scripts/bench-footprint.sh.

Usage: footprint.py PID PROMETHEUS_URL [--seconds N] [--watch FILE --until REGEX]

Every second: resident memory (VmRSS), and at the ends of the phase the process's CPU time
(utime + stime of all threads, /proc/PID/stat), its context switches (voluntary and not, summed
over /proc/PID/task/*/status: each is a thread waking up or being preempted) and the daemon's
own counters (frames and drops per pipeline, from its Prometheus endpoint). The phase lasts
N seconds, or until a line of FILE matches REGEX. Prints one JSON object.
"""
import argparse
import json
import os
import re
import statistics
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; after "comm)" they are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / TICK


def switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def counters(url):
    out = {}
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        m = re.match(r'lsskd_(frames_total|dropped_total)\{.*pipeline="([^"]+)".*\} (\S+)', line)
        if m:
            out.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--watch")
    ap.add_argument("--until")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    until = re.compile(a.until) if a.until else None

    def done(elapsed):
        if until is None:
            return elapsed >= a.seconds
        if elapsed >= a.timeout:
            return True
        with open(a.watch) as f:
            return any(until.search(line) for line in f)

    t0, c0, s0, k0 = time.monotonic(), cpu_seconds(a.pid), switches(a.pid), counters(a.url)
    rss = []
    while True:
        time.sleep(1)
        rss.append(rss_mb(a.pid))
        if done(time.monotonic() - t0):
            break
    t1, c1, s1, k1 = time.monotonic(), cpu_seconds(a.pid), switches(a.pid), counters(a.url)
    dt = t1 - t0
    pipelines = {
        p: {
            "frames_per_s": (k1[p].get("frames_total", 0) - k0.get(p, {}).get("frames_total", 0)) / dt,
            "dropped": k1[p].get("dropped_total", 0) - k0.get(p, {}).get("dropped_total", 0),
        }
        for p in k1
    }
    print(json.dumps({
        "seconds": round(dt, 1),
        "cpu_percent_of_one_core": 100 * (c1 - c0) / dt,
        "rss_mb_median": statistics.median(rss),
        "rss_mb_max": max(rss),
        "wakeups_per_s": (s1 - s0) / dt,
        "pipelines": pipelines,
    }))


if __name__ == "__main__":
    main()
