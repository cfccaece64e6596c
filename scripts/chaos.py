#!/usr/bin/env python3
"""Reliability figures of the daemon (issue 11, RELIABILITY.md), each part bounded in time;
not run by CI. Real components: the daemon binary, mosquitto on a loopback port.

  scripts/chaos.py kill   [--iterations 200]  SIGKILL at random moments: ingestion,
                                             imprint, fine-tune, promotion (a quarter
                                             right after a promotion); acked samples lost,
                                             restarts not serving within 10 s
  scripts/chaos.py broker [--iterations 20]   mosquitto restarted under load: predictions
                                             resume, retained state re-published
  scripts/chaos.py flood  [--samples 1000]    samples as fast as mosquitto_pub sends them:
                                             every one acked (stored / duplicate / refused)
  scripts/chaos.py soak   [--minutes 60]      RSS sampled every 10 s at demo rates
  scripts/chaos.py fuzz   [--cases 1000000]   the MQTT parsers through proptest at scale

The binary: LSSKD_EDGE_BIN, else target/debug/lsskd-edge (built by `cargo test` or
`cargo build`). Prints one summary line per part, and JSON with --json.
"""
import argparse
import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
BIN = os.environ.get("LSSKD_EDGE_BIN", str(REPO / "target" / "debug" / "lsskd-edge"))
DEV = "chaos"
PREFIX = "lsskd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on a loopback port (anonymous, no persistence), restartable."""

    def __init__(self, tmp):
        self.port = free_port()
        self.conf = Path(tmp) / "mosquitto.conf"
        text = f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        if os.geteuid() == 0:
            text += "user root\n"
        self.conf.write_text(text)
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def pub(self, topic, payload=None, lines=None, qos=1):
        cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", str(qos), "-t", topic]
        if lines is not None:
            subprocess.run(cmd + ["-l"], input="\n".join(lines) + "\n", text=True, check=True,
                           timeout=300)
        else:
            subprocess.run(cmd + ["-m", payload], check=True, timeout=30)


class Listener:
    """Every message on the device's topics, with its arrival time (one mosquitto_sub)."""

    def __init__(self, broker, topic=f"{PREFIX}/{DEV}/#"):
        self.msgs = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-v", "-t", topic],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.3)

    def _read(self):
        for line in self.proc.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            with self.lock:
                self.msgs.append((time.time(), topic, payload))

    def since(self, t, suffix=None):
        with self.lock:
            return [(ts, tp, p) for ts, tp, p in self.msgs
                    if ts >= t and (suffix is None or tp.endswith(suffix))]

    def wait(self, t, suffix, pred=lambda p: True, timeout=10.0):
        """The first message on a topic ending in `suffix` that satisfies `pred` and was sent
        at or after `t`: by its payload's `ts` (ms) when it has one — mosquitto_sub's
        output reaches us late, so arrival times cannot tell one daemon from the next."""
        end = time.time() + timeout
        while time.time() < end:
            for ts, tp, p in self.since(t - 5, suffix):
                sent = (jload(p) or {}).get("ts") if p.startswith("{") else None
                sent = sent / 1000 if isinstance(sent, (int, float)) else ts
                if sent >= t and pred(p):
                    return sent, p
            time.sleep(0.02)
        return None

    def stop(self):
        self.proc.terminate()


def config(tmp, port, extra=""):
    conf = Path(tmp) / "config.toml"
    conf.write_text(f"""device_id = "{DEV}"
state_dir = "{Path(tmp) / 'state'}"
[[pipeline]]
name = "door"
model = "{REPO / 'models' / 'vision'}"
[pipeline.source]
kind = "replay_images"
path = "{REPO / 'demo' / 'samples' / 'vision'}"
interval_ms = 100

[publish]
debounce_count = 1

[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_max_secs = 2
homeassistant_prefix = ""
{extra}""")
    return conf


class Daemon:
    def __init__(self, conf, log):
        self.log = open(log, "ab")
        env = dict(os.environ, RUST_LOG="info")
        env.pop("NOTIFY_SOCKET", None)
        self.started = time.time()
        self.proc = subprocess.Popen([BIN, "run", "--config", str(conf)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def digit_pngs():
    """Preview PNGs of the MNIST few-shot pool: {digit: [bytes, ...]}."""
    out = {}
    for d in sorted((DATA / "mnist-fewshot" / "preview").iterdir()):
        out[d.name] = [f.read_bytes() for f in sorted(d.glob("*.png"))]
    return out


def sample(id_, label, png):
    return json.dumps({"id": id_, "label": label, "data": base64.b64encode(png).decode()})


def jload(p):
    try:
        return json.loads(p)
    except ValueError:
        return None


def training_state(p, states, kind=None):
    s = jload(p)
    return bool(s) and s.get("state") in states and (kind is None or s.get("kind") == kind)


# ------------------------------------------------------------------------------------------

def run_kill(args, tmp):
    broker = Broker(tmp)
    conf = config(tmp, broker.port, "[adapt]\nmin_shots = 3\nauto_after = 100000\nsample_quota = 100000\n")
    listen = Listener(broker)
    pngs = digit_pngs()
    digits = sorted(pngs)
    imprinted = set()
    acked, slow, phases = set(), [], {}
    # What the promote phase's kill came right after.
    verdicts = {}
    live = newest = 0
    seq = 0
    started = time.time()
    for i in range(args.iterations):
        phase = ["ingest", "imprint", "finetune", "promote"][i % 4]
        phases[phase] = phases.get(phase, 0) + 1
        d = Daemon(conf, Path(tmp) / "daemon.log")
        first = listen.wait(d.started, "/door/prediction", timeout=10.0)
        if first is None:
            slow.append(i)
        t = time.time()
        if phase == "ingest":
            lines = []
            for _ in range(5):
                seq += 1
                g = random.choice(digits)
                lines.append(sample(f"k{seq}", f"digit_{g}", random.choice(pngs[g])))
            threading.Thread(target=broker.pub, args=(f"{PREFIX}/{DEV}/samples/vision/add",),
                             kwargs={"lines": lines}, daemon=True).start()
            time.sleep(random.uniform(0.0, 0.3))
        elif phase == "promote" and len(imprinted) >= len(digits):
            # A switch of the live version (the atomic `current` pointer and the hot swap):
            # back to the parent, then forward again to the newest version.
            cmd = "rollback" if live == newest else f"promote {newest}"
            broker.pub(f"{PREFIX}/{DEV}/model/vision/cmd", cmd)
            v = listen.wait(t, "/training/state",
                            lambda p: training_state(p, {"promoted", "rolled_back", "failed"}), 30.0)
            st = (jload(v[1]) or {}) if v else {}
            verdicts[st.get("state", "none")] = verdicts.get(st.get("state", "none"), 0) + 1
            if st.get("state") in ("promoted", "rolled_back"):
                live = st.get("version", live)
        elif phase in ("imprint", "promote"):
            # A label the device has not seen: a new digit while there is one (promoted:
            # a new version), then a digit under a fresh name.
            g = digits[len(imprinted) % len(digits)]
            label = f"digit_{g}" if len(imprinted) < len(digits) else f"digit_{g}_{len(imprinted)}"
            imprinted.add(label)
            lines = []
            for k in range(3):
                seq += 1
                lines.append(sample(f"k{seq}", label, pngs[g][k % len(pngs[g])]))
            broker.pub(f"{PREFIX}/{DEV}/samples/vision/add", lines=lines)
            if phase == "imprint":
                listen.wait(t, "/training/state", lambda p: training_state(p, {"training", "gating"}), 5.0)
                time.sleep(random.uniform(0.0, 0.5))
            else:
                v = listen.wait(t, "/training/state", lambda p: training_state(p, {"promoted", "rejected"}), 30.0)
                st = (jload(v[1]) or {}) if v else {}
                verdicts[st.get("state", "none")] = verdicts.get(st.get("state", "none"), 0) + 1
                if st.get("state") == "promoted":
                    live = newest = st.get("version", newest)
        else:
            # Fine-tune phase: a fine-tune on everything stored, killed part-way.
            broker.pub(f"{PREFIX}/{DEV}/model/vision/cmd", "adapt")
            listen.wait(t, "/training/state", lambda p: training_state(p, {"training"}, "finetune"), 10.0)
            time.sleep(random.uniform(0.0, 3.0))
        d.kill()
        for _, _, p in listen.since(t, "/samples/vision/ack"):
            a = jload(p)
            if a and a.get("accepted"):
                acked.add(a["id"])
        print(f"  kill {i + 1}/{args.iterations} {phase}: first prediction "
              f"{'-' if first is None else '%.1f s' % (first[0] - d.started)}", file=sys.stderr)
    time.sleep(1.0)  # the last acks on their way through mosquitto_sub
    for _, _, p in listen.since(started, "/samples/vision/ack"):
        a = jload(p)
        if a and a.get("accepted"):
            acked.add(a["id"])
    # Every acked sample must be committed: its metadata (the commit marker) and data file.
    store = Path(tmp) / "state" / "samples" / "vision"
    def committed(a):
        meta = store / f"{a}.json"
        m = jload(meta.read_text()) if meta.exists() else None
        return bool(m) and (store / f"{a}.{m['ext']}").exists()

    lost = sorted(a for a in acked if not committed(a))
    # One last start: serves within 10 s, and `samples list` reads every acked sample.
    d = Daemon(conf, Path(tmp) / "daemon.log")
    final = listen.wait(d.started, "/door/prediction", timeout=10.0)
    d.kill()
    listen.stop()
    broker.stop()
    log = (Path(tmp) / "daemon.log").read_text(errors="replace")
    return {
        "part": "kill", "iterations": args.iterations, "phases": phases,
        "promote_phase_killed_after": verdicts,
        "acked_samples": len(acked), "acked_samples_lost": len(lost), "lost": lost[:20],
        "restarts_not_serving_within_10s": len(slow) + (final is None), "slow": slow,
        "fallbacks_logged": len(re.findall(r"falling back|fell back|damaged", log)),
        "minutes": round((time.time() - started) / 60, 1),
    }


def run_broker(args, tmp):
    broker = Broker(tmp)
    conf = config(tmp, broker.port)
    d = Daemon(conf, Path(tmp) / "daemon.log")
    listen = Listener(broker)
    assert listen.wait(d.started, "/door/prediction", timeout=15.0), "daemon not serving"
    def retained():
        probe = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-v", "-W", "3",
             "-t", f"{PREFIX}/{DEV}/#", "--retained-only"],
            capture_output=True, text=True)
        return {line.split(" ", 1)[0] for line in probe.stdout.splitlines()}

    # What the daemon keeps retained (status, model card, …): all of it must come back.
    time.sleep(2)
    expected = retained()
    resumed, retained_ok, gaps = 0, 0, []
    for i in range(args.iterations):
        listen.stop()
        broker.stop(random.choice([signal.SIGTERM, signal.SIGKILL]))
        time.sleep(random.uniform(0.5, 3.0))
        broker.start()
        t = time.time()
        listen = Listener(broker)
        got = listen.wait(t, "/door/prediction", timeout=20.0)
        if got:
            resumed += 1
            gaps.append(got[0] - t)
        # A fresh subscriber on a broker without persistence: the retained messages are
        # there only if the daemon re-published them.
        topics = retained()
        if expected <= topics:
            retained_ok += 1
        print(f"  broker restart {i + 1}/{args.iterations}: predictions "
              f"{'resumed after %.1f s' % gaps[-1] if got else 'did not resume'}, retained "
              f"{sorted(topics)}", file=sys.stderr)
    d.kill()
    listen.stop()
    broker.stop()
    return {"part": "broker", "restarts": args.iterations, "predictions_resumed": resumed,
            "retained_topics": sorted(expected), "retained_republished": retained_ok,
            "max_seconds_to_resume": round(max(gaps), 1) if gaps else None}


def run_flood(args, tmp):
    broker = Broker(tmp)
    conf = config(tmp, broker.port,
                  f"[adapt]\nmin_shots = 100000\nauto_after = 100000\nsample_quota = {args.samples * 2}\n")
    d = Daemon(conf, Path(tmp) / "daemon.log")
    listen = Listener(broker)
    assert listen.wait(d.started, "/door/prediction", timeout=15.0), "daemon not serving"
    pngs = digit_pngs()
    lines = [sample(f"f{i:05}", f"digit_{i % 10}", pngs[str(i % 10)][i % 5]) for i in range(args.samples)]
    t = time.time()
    broker.pub(f"{PREFIX}/{DEV}/samples/vision/add", lines=lines)
    sent = time.time() - t
    end = time.time() + 120
    acks = {}
    while time.time() < end and len(acks) < args.samples:
        for _, _, p in listen.since(t, "/samples/vision/ack"):
            a = jload(p)
            if a:
                acks[a["id"]] = a
        time.sleep(0.2)
    predicting = listen.wait(time.time(), "/door/prediction", timeout=10.0) is not None
    status = listen.wait(t, "/status", lambda p: '"samples"' in p and (jload(p) or {}).get("samples", {}).get("stored", 0) > 0, 15.0)
    d.kill()
    store = Path(tmp) / "state" / "samples" / "vision"
    stored_files = len(list(store.glob("*.json")))
    listen.stop()
    broker.stop()
    reasons = {}
    for a in acks.values():
        r = a["reason"] if a["accepted"] else "refused: " + a["reason"].split(" (")[0]
        reasons[r] = reasons.get(r, 0) + 1
    accepted = sum(1 for a in acks.values() if a["accepted"])
    return {"part": "flood", "samples": args.samples, "publish_seconds": round(sent, 1),
            "acked": len(acks), "unacked": args.samples - len(acks), "accepted": accepted,
            "stored_on_disk": stored_files, "reasons": reasons,
            "still_predicting": predicting,
            "status_counters": (jload(status[1]) or {}).get("samples") if status else None,
            "mqtt_counters": (jload(status[1]) or {}).get("mqtt") if status else None}


def run_soak(args, tmp):
    broker = Broker(tmp)
    conf = Path(tmp) / "demo.toml"
    text = (REPO / "config" / "demo.toml").read_text()
    text = text.replace('"../', f'"{REPO}/')
    text = re.sub(r"(?m)^embedded_broker\s*=.*$", "embedded_broker = false", text)
    text = re.sub(r"(?m)^port\s*=.*$", f"port = {broker.port}", text)
    text = re.sub(r"(?m)^state_dir\s*=.*$", f"state_dir = \"{Path(tmp) / 'state'}\"", text)
    if "state_dir" not in text:
        text = f"state_dir = \"{Path(tmp) / 'state'}\"\n" + text
    conf.write_text(text)
    d = Daemon(conf, Path(tmp) / "daemon.log")
    samples = []
    end = time.time() + args.minutes * 60
    while time.time() < end and d.proc.poll() is None:
        samples.append((time.time() - d.started, d.rss_kib()))
        time.sleep(10)
    alive = d.proc.poll() is None
    d.kill()
    broker.stop()
    warm = [r for t, r in samples if t >= min(120, args.minutes * 60 / 4)]
    base, last = (warm[0], warm[-1]) if warm else (0, 0)
    return {"part": "soak", "minutes": args.minutes, "alive": alive, "samples": len(samples),
            "rss_mib_after_warmup": round(base / 1024, 1), "rss_mib_end": round(last / 1024, 1),
            "rss_mib_max": round(max((r for _, r in samples), default=0) / 1024, 1),
            "growth_percent": round(100 * (last - base) / base, 2) if base else None}


def run_fuzz(args, tmp):
    t = time.time()
    env = dict(os.environ, LSSKD_FUZZ_CASES=str(args.cases))
    r = subprocess.run(["cargo", "test", "--test", "it", "ingest_fuzz", "--", "--test-threads", "2"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    m = re.search(r"test result: (\w+)\. (\d+) passed; (\d+) failed", r.stdout)
    return {"part": "fuzz", "cases_per_property": args.cases,
            "properties": int(m.group(2)) + int(m.group(3)) if m else None,
            "failed": int(m.group(3)) if m else None, "result": m.group(1) if m else r.stderr[-500:],
            "minutes": round((time.time() - t) / 60, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["kill", "broker", "flood", "soak", "fuzz", "all"])
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    random.seed(args.seed)
    parts = ["fuzz", "flood", "broker", "kill", "soak"] if args.part == "all" else [args.part]
    for part in parts:
        a = argparse.Namespace(**vars(args))
        if a.iterations is None:
            a.iterations = {"kill": 200, "broker": 20}.get(part, 0)
        with tempfile.TemporaryDirectory(prefix=f"chaos-{part}-") as tmp:
            r = globals()[f"run_{part}"](a, tmp)
        r["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
