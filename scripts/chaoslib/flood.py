"""flood: `--samples` samples published as fast as `mosquitto_pub -q 1 -l` sends them into
an inbound queue of 256: every one must be acked (stored, duplicate or refused as busy),
every accepted one must be on disk, `status` must count them (`samples.stored`;
`samples.refused` + `mqtt.dropped_inbound`), and the daemon must keep
predicting."""
import subprocess
import time
from pathlib import Path

from .mqtt import Client
from .rig import BASE, Broker, Daemon, digit_pngs, jload, replay_pipeline, sample, write_config


def committed(store, id_):
    meta = store / f"{id_}.json"
    m = jload(meta.read_text()) if meta.exists() else None
    return bool(m) and (store / f"{id_}.{m['ext']}").exists()


def run(args, tmp, checks, rng):
    n = args.samples
    broker = Broker(tmp)
    conf = write_config(tmp, broker.port, replay_pipeline("door", 100),
                        f"[adapt]\nmin_shots = 100000\nauto_after = 100000\nsample_quota = {n * 2}\n")
    d = Daemon(conf, tmp)
    sub = Client(broker.port, [f"{BASE}/#"])
    sub.wait_ready()
    serving = sub.wait(d.started, f"{BASE}/door/prediction", timeout=60) is not None
    checks.check("serving", serving, "predicting before the flood" if serving else "no prediction in 60 s",
                 "the daemon predicts")
    pngs = digit_pngs()
    lines = [sample(f"f{i:05}", f"digit_{i % 10}", pngs[str(i % 10)][i % 5]) for i in range(n)]
    t = time.time()
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                    "-t", f"{BASE}/samples/vision/add", "-l"],
                   input="\n".join(lines) + "\n", text=True, check=True, timeout=300)
    sent = time.time() - t
    acks = {}
    end = time.time() + 120
    while time.time() < end and len(acks) < n:
        for m in sub.since(t, "/samples/vision/ack"):
            a = jload(m.payload)
            if a:
                acks[a["id"]] = a
        time.sleep(0.2)
    after = time.time()
    predicting = sub.wait(after, f"{BASE}/door/prediction", timeout=15) is not None
    n_stored = sum(1 for a in acks.values() if a.get("accepted") and a.get("reason") == "stored")
    # A status published after every ack (it is re-published every few seconds).
    status = sub.wait(after, f"{BASE}/status",
                      pred=lambda m: ((jload(m.payload) or {}).get("samples") or {}).get("stored", 0) >= n_stored,
                      timeout=30)
    d.kill()
    sub.close()
    broker.stop()
    store = Path(tmp) / "state" / "samples" / "vision"
    stored = [i for i, a in acks.items() if a.get("accepted") and a.get("reason") == "stored"]
    refused = [i for i, a in acks.items() if not a.get("accepted")]
    missing = [i for i in stored if not committed(store, i)]
    on_disk = len(list(store.glob("*.json")))
    counters = ((jload(status.payload) or {}).get("samples") or {}) if status else {}
    mqtt = ((jload(status.payload) or {}).get("mqtt") or {}) if status else {}
    # Refused: by the inbound thread (`samples.refused`), or as busy by the connection
    # task when the inbound queue was full (`mqtt.dropped_inbound`).
    status_refused = counters.get("refused", 0) + mqtt.get("dropped_inbound", 0)
    checks.check("acked", len(acks) == n,
                 f"{len(acks)} of {n} samples acked ({len(stored)} stored, {len(refused)} refused, "
                 f"published in {sent:.1f} s)", "every sample acked")
    checks.check("stored-on-disk", not missing and on_disk == len(stored),
                 f"{len(stored)} acked as stored, {len(missing)} of them missing on disk, "
                 f"{on_disk} metadata files", "every stored ack on disk, nothing else")
    checks.check("status-counts", counters.get("stored") == len(stored) and status_refused == len(refused),
                 f"status counts stored {counters.get('stored')}, refused {counters.get('refused')} + "
                 f"busy {mqtt.get('dropped_inbound')} (`mqtt.dropped_inbound`)",
                 f"= the acks ({len(stored)} stored, {len(refused)} refused)")
    checks.check("still-predicting", predicting, "a prediction after the flood" if predicting else "none in 15 s",
                 "predicting after the flood")
    return {"acked": len(acks), "stored": len(stored), "refused": len(refused), "publish_s": round(sent, 2),
            "status_samples": counters, "status_mqtt": mqtt}
