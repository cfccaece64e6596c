"""broker: mosquitto (no persistence) stopped by SIGTERM or SIGKILL for 0.5–3 s and
restarted, `--iterations` times, under a daemon that keeps predicting.

Before each restart a fresh probe must receive the retained `status` (online) and the
model card, both flagged retained. After it, a subscriber that was connected before the
restart and reconnects every 10 ms measures, from the moment the restarted broker first
accepts a TCP connection (polled every 5 ms), the delay to (a) the first prediction
captured after that moment, (b) `status` online re-published, (c) the card re-published;
then a fresh probe must find both retained again (the broker kept none of them)."""
import signal
import time

from .mqtt import Client
from .rig import BASE, Broker, Daemon, jload, log, median_max, replay_pipeline, write_config

STATUS = f"{BASE}/status"
CARD = f"{BASE}/model/vision/info"
PREDICTION = f"{BASE}/door/prediction"
# The daemon's reconnect waits 1 s, then doubles (mqtt.reconnect_max_secs caps it; the
# default, 30, is used): its next attempt comes at most the time since the disconnect
# + 1 s after the broker is back. Half a second more for reconnecting and re-publishing.
SLACK_S = 1.5


def probe(port, timeout=5.0):
    """A fresh subscriber: did it receive the retained status (online) and card?"""
    c = Client(port, [STATUS, CARD], reconnect=False, name="probe")
    end = time.time() + timeout
    got = {}
    while time.time() < end and len(got) < 2:
        for m in c.since(0):
            if m.retain and m.topic == STATUS and (jload(m.payload) or {}).get("status") == "online":
                got["status"] = m
            if m.retain and m.topic == CARD and jload(m.payload):
                got["card"] = m
        time.sleep(0.02)
    c.close()
    return "status" in got, "card" in got


def run(args, tmp, checks, rng):
    n = args.iterations
    broker = Broker(tmp)
    conf = write_config(tmp, broker.port, replay_pipeline("door", 100))
    d = Daemon(conf, tmp)
    sub = Client(broker.port, [f"{BASE}/#"], name="measure")
    sub.wait_ready()
    serving = sub.wait(d.started, PREDICTION, timeout=60) is not None
    sub.wait(d.started, CARD, timeout=30)
    if not checks.check("serving", serving, "first prediction after the start" if serving else
                        "no prediction within 60 s of the start", "the daemon predicts"):
        d.kill()
        broker.stop()
        return {}
    before_ok = after_ok = 0
    delays = {"prediction": [], "status": [], "card": []}
    within = {k: 0 for k in delays}
    rows = []
    for i in range(n):
        st, cd = probe(broker.port)
        before_ok += st and cd
        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        down = time.time()
        broker.stop(sig)
        time.sleep(rng.uniform(0.5, 3.0))
        up = broker.start()
        outage = up - down
        got = {
            "prediction": sub.wait(up, PREDICTION, timeout=40,
                                   pred=lambda m: (jload(m.payload) or {}).get("ts", 0) >= up * 1000),
            "status": sub.wait(up, STATUS, timeout=40,
                               pred=lambda m: (jload(m.payload) or {}).get("status") == "online"),
            "card": sub.wait(up, CARD, timeout=40, pred=lambda m: jload(m.payload) is not None),
        }
        row = {"outage_s": round(outage, 2), "signal": sig.name}
        for k, m in got.items():
            if m is not None:
                delay = m.at - up
                delays[k].append(delay)
                within[k] += delay <= outage + SLACK_S
                row[k] = round(delay, 3)
            else:
                row[k] = None
        ast, acd = probe(broker.port)
        after_ok += ast and acd
        row.update(probe_before=bool(st and cd), probe_after=bool(ast and acd))
        rows.append(row)
        log(f"broker restart {i + 1}/{n} ({sig.name}, down {outage:.2f} s): prediction "
            f"{row['prediction']} s, status {row['status']} s, card {row['card']} s after it "
            f"accepted connections; probe before {row['probe_before']}, after {row['probe_after']}")
    d.kill()
    sub.close()
    broker.stop()
    checks.check("retained-before", before_ok == n,
                 f"a fresh probe received the retained status (online) and card before {before_ok}/{n} restarts",
                 f"{n}/{n}")
    for k, what in [("prediction", "first prediction captured after the broker was up"),
                    ("status", "retained status re-published"),
                    ("card", "retained model card re-published")]:
        med, mx = median_max(delays[k])
        fig = (f"{what}: {len(delays[k])}/{n} restarts, delay at the subscriber from broker-up "
               + (f"median {med:.3f} s, max {mx:.3f} s" if delays[k] else "-")
               + f"; {within[k]}/{n} within the outage + {SLACK_S} s")
        checks.check(f"{k}-delay", within[k] == n, fig,
                     f"{n}/{n}, each within the outage + {SLACK_S} s (reconnect backoff 1 s doubling)")
    checks.check("retained-after", after_ok == n,
                 f"a fresh probe found status and card retained again after {after_ok}/{n} restarts",
                 f"{n}/{n}")
    return {"restarts": rows,
            "median_max_s": {k: [round(x, 3) if x is not None else None for x in median_max(v)]
                             for k, v in delays.items()}}
