#!/usr/bin/env python3
"""The fleet at scale (issue 33, BENCHMARKS "The fleet"): one mosquitto on a loopback
port, 200 lightweight subscriber clients of the fleet's topics (as 200 devices of a
family would subscribe: `lsskd/fleet/<family>/offer/#` and `…/part/#`) and 3 real
daemons: `origin` (`share = true`) is taught 20 new labels, five samples each, and offers
each; `auto` (policy `auto`) builds and judges every offer; `ask` (policy `ask`) keeps
them. Measured:

- delivery: per offer, from its `issued_ms` (the origin's clock, the same machine) until
  a subscriber holds its envelope and every chunk; per offer the slowest subscriber, then
  the median and max over offers, and the median over every (offer, subscriber);
- the receiving daemons: from `issued_ms` to `auto`'s verdict (adopted or rejected, with
  its imprint and gate) and to `ask`'s `waiting`;
- bytes per offer: the envelope and every part, and what reaches the broker with the
  topics (MQTT fixed headers left out);
- mosquitto's RSS (`/proc/<pid>/status` VmRSS): before the clients, with them connected,
  the peak while offers flowed, and at the end (the retained offers held);
- and, without the broker, what each form an offer could take costs in bytes per label
  for each shipped model (`forms`): its five samples (the demo's own files of that model),
  its imprint row (embedding × 4 bytes), a weight delta (the deployed `model.onnx`).

The origin's gate is relaxed (`adapt.min_new_accuracy = 0`): the run measures the
transport, and half of its labels are the digits transposed, which the default gate may
refuse beside the digits themselves. No fine-tunes (`auto_after = 0`).

  scripts/fleet-scale.py [--clients 200] [--labels 20] [--json OUT]

Uses the debug binary (`LSSKD_EDGE_BIN` or `$CARGO_TARGET_DIR/debug/lsskd-edge`)."""
import argparse
import base64
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaoslib.mqtt import Client  # noqa: E402
from chaoslib.rig import DATA, REPO, Broker, binary, reap, spawn  # noqa: E402


def png(w, h, pixels):
    """A grey 8-bit PNG of `pixels` (row-major bytes), filter 0."""
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))

    def chunk(kind, data):
        return (struct.pack("!I", len(data)) + kind + data
                + struct.pack("!I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def labels_and_samples(n_labels, per_label=5):
    """Up to 20 labels: `digit_<d>` (MNIST few-shot pool images) and `digit_<d>_t` (the
    same digits' other images, transposed), `per_label` PNGs each."""
    root = DATA / "mnist-fewshot"
    imgs = (root / "pool-images-idx3-ubyte").read_bytes()
    labs = (root / "pool-labels-idx1-ubyte").read_bytes()
    n, rows, cols = struct.unpack(">III", imgs[4:16])
    by_digit = {}
    for i in range(n):
        by_digit.setdefault(labs[8 + i], []).append(imgs[16 + i * rows * cols:16 + (i + 1) * rows * cols])
    out = []
    for d in range(10):
        out.append((f"digit_{d}", [png(cols, rows, p) for p in by_digit[d][:per_label]]))
    for d in range(10):
        t = [bytes(p[c * cols + r] for r in range(rows) for c in range(cols))
             for p in by_digit[d][per_label:2 * per_label]]
        out.append((f"digit_{d}_t", [png(rows, cols, p) for p in t]))
    return out[:n_labels]


def key_of(state):
    state.mkdir(parents=True, exist_ok=True)
    conf = state.with_suffix(".id.toml")
    conf.write_text(f'state_dir = "{state}"\n')
    return subprocess.run([binary(), "fleet", "id", "--config", str(conf)], check=True,
                          capture_output=True, text=True).stdout.strip()


def config(tmp, name, port, fleet, adapt=""):
    conf = tmp / f"{name}.toml"
    conf.write_text(f"""device_id = "{name}"
state_dir = "{tmp / name}"
[[pipeline]]
name = "desk"
model = "{REPO / 'models' / 'vision'}"
[pipeline.source]
kind = "replay_images"
path = "{REPO / 'demo' / 'samples' / 'vision'}"
interval_ms = 1000
[mqtt]
host = "127.0.0.1"
port = {port}
homeassistant_prefix = ""
[adapt]
auto_after = 0
{adapt}
[fleet]
{fleet}
""")
    return conf


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None


def body_of(envelope):
    return json.loads(base64.b64decode(json.loads(envelope)["body"]))


def forms():
    """Bytes per offered label, per shipped model and form."""
    out = {}
    samples = {"vision": sorted((REPO / "demo/samples/vision").glob("*.png")),
               "audio": sorted((REPO / "demo/samples/audio").glob("*.wav")),
               "scenes": sorted((REPO / "demo/samples/scenes/teach").glob("*/*.jpg"))}
    for model, files in samples.items():
        m = json.loads((REPO / "models" / model / "manifest.json").read_text())
        sizes = [f.stat().st_size for f in files]
        out[model] = {
            "samples_5": round(5 * statistics.median(sizes)),
            "imprint_row": 4 * m["deployed"]["embedding_dim"],
            "weight_delta": (REPO / "models" / model / "model.onnx").stat().st_size,
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--labels", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-scale-"))
    try:
        run(args, tmp)
    finally:
        reap()


def run(args, tmp):
    broker = Broker(tmp)
    mem = {"before": rss_kib(broker.proc.pid)}
    clients = [Client(broker.port, ["lsskd/fleet/+/offer/#", "lsskd/fleet/+/part/#"],
                      name=f"sub{i}") for i in range(args.clients)]
    assert all(c.wait_ready(30) for c in clients), "subscribers not ready"
    mem["clients"] = rss_kib(broker.proc.pid)
    keys = {n: key_of(tmp / n) for n in ("origin", "auto", "ask")}
    trusted = f'trusted = ["{keys["origin"]}"]'
    logs = {}
    daemons = {}
    for name, fleet, adapt in [
        ("auto", f'{trusted}\npolicy = "auto"', ""),
        ("ask", f'{trusted}\npolicy = "ask"', ""),
        ("origin", "share = true", "min_new_accuracy = 0.0"),
    ]:
        logs[name] = open(tmp / f"{name}.log", "wb")
        daemons[name] = spawn([binary(), "run", "--config", str(config(tmp, name, broker.port, fleet, adapt))],
                              stdout=subprocess.DEVNULL, stderr=logs[name],
                              env={"RUST_LOG": "info", "PATH": "/usr/bin:/bin"})
    watch = Client(broker.port, ["lsskd/+/model/vision/info", "lsskd/fleet/+/verdict/#"], name="watch")
    assert watch.wait_ready(10)
    for name in daemons:
        assert watch.wait(0, f"{name}/model/vision/info", timeout=60), f"{name} did not start"
    peak = [0]
    stop = threading.Event()

    def sample_rss():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(broker.proc.pid) or 0)
            time.sleep(0.2)

    threading.Thread(target=sample_rss, daemon=True).start()
    teacher = Client(broker.port, [], name="teacher")
    assert teacher.wait_ready(10)
    started = time.time()
    taught = labels_and_samples(args.labels)
    for label, pngs in taught:
        for i, p in enumerate(pngs):
            teacher.publish("lsskd/origin/samples/vision/add", json.dumps(
                {"id": f"{label}-{i}", "label": label, "data": base64.b64encode(p).decode()}))
        time.sleep(0.5)
    deadline = time.time() + 900
    offer_suffix = "/offer/origin/"

    def envelopes(c):
        return [m for m in c.since(started) if offer_suffix in m.topic and m.payload]

    while time.time() < deadline:
        if all(len(envelopes(c)) >= args.labels for c in clients[:5]):
            break
        time.sleep(1)
    # The receiving daemons' verdicts on every offer.
    verdict_deadline = time.time() + 600
    while time.time() < verdict_deadline:
        v = [json.loads(m.payload) for m in watch.since(started) if "/verdict/origin/" in m.topic]
        auto = {x["label"] for x in v if x["device"] == "auto" and x["state"] in ("adopted", "rejected")}
        ask = {x["label"] for x in v if x["device"] == "ask" and x["state"] == "waiting"}
        if len(auto) >= args.labels and len(ask) >= args.labels:
            break
        time.sleep(1)
    time.sleep(2)
    stop.set()
    mem["peak"] = peak[0]
    mem["end"] = rss_kib(broker.proc.pid)
    report = measure(args, clients, watch, started, mem)
    for d in daemons.values():
        d.terminate()
        d.wait(20)
    report["summary"]["forms_bytes_per_label"] = forms()
    print(json.dumps(report["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def measure(args, clients, watch, started, mem):
    """Delivery per offer and subscriber, the daemons' verdicts, bytes per offer."""
    first = clients[0]
    offers = {}
    for m in first.since(started):
        if "/offer/origin/" in m.topic and m.payload:
            b = body_of(m.payload)
            offers[b["label"]] = {
                "label": b["label"], "counter": b["counter"], "issued_ms": b["issued_ms"],
                "parts": sum(p["chunks"] for p in b["parts"]),
                "bytes_envelope": len(m.payload.encode()),
                "bytes_parts": sum(p["bytes"] for p in b["parts"]),
                "bytes_topics": len(m.topic) + sum(
                    len(f"{m.topic.replace('/offer/', '/part/')}/{b['counter']}/{i}/{c}")
                    for i, p in enumerate(b["parts"]) for c in range(p["chunks"])),
            }
    per_offer, pairs, missing = {}, [], 0
    for label, o in offers.items():
        slowest = 0.0
        for c in clients:
            msgs = [m for m in c.since(started)
                    if (m.topic.endswith(f"/offer/origin/{label}") and m.payload)
                    or f"/part/origin/{label}/{o['counter']}/" in m.topic]
            if len(msgs) < 1 + o["parts"]:
                missing += 1
                continue
            d = max(m.at for m in msgs) - o["issued_ms"] / 1000
            pairs.append(d)
            slowest = max(slowest, d)
        per_offer[label] = slowest
    v = [json.loads(m.payload) for m in watch.since(started) if "/verdict/origin/" in m.topic]
    auto = {}
    ask = {}
    for x in v:
        if x["label"] not in offers:
            continue
        t = x["ts"] / 1000 - offers[x["label"]]["issued_ms"] / 1000
        if x["device"] == "auto" and x["state"] in ("adopted", "rejected"):
            auto.setdefault(x["label"], (x["state"], t))
        if x["device"] == "ask" and x["state"] == "waiting":
            ask.setdefault(x["label"], t)
    med = statistics.median
    total = [o["bytes_envelope"] + o["bytes_parts"] for o in offers.values()]
    wire = [o["bytes_envelope"] + o["bytes_parts"] + o["bytes_topics"] for o in offers.values()]
    summary = {
        "clients": args.clients, "daemons": 3, "offers": len(offers),
        "delivery_to_all_s": {"median": round(med(per_offer.values()), 3) if per_offer else None,
                              "max": round(max(per_offer.values()), 3) if per_offer else None},
        "delivery_per_subscriber_s": {"median": round(med(pairs), 3) if pairs else None,
                                      "max": round(max(pairs), 3) if pairs else None},
        "incomplete_deliveries": missing,
        "auto_verdict_s": {"median": round(med(t for _, t in auto.values()), 2) if auto else None,
                           "max": round(max(t for _, t in auto.values()), 2) if auto else None,
                           "adopted": sum(1 for s, _ in auto.values() if s == "adopted"),
                           "rejected": sum(1 for s, _ in auto.values() if s == "rejected")},
        "ask_waiting_s": {"median": round(med(ask.values()), 2) if ask else None,
                          "max": round(max(ask.values()), 2) if ask else None, "n": len(ask)},
        "bytes_per_offer": {"median": med(total) if total else None,
                            "with_topics_median": med(wire) if wire else None,
                            "samples_per_offer": 5},
        "broker_rss_mib": {k: round(val / 1024, 1) if val else None for k, val in mem.items()},
    }
    return {"summary": summary, "offers": offers, "per_offer_s": per_offer,
            "auto": auto, "ask": ask}


if __name__ == "__main__":
    main()
