"""kill: the daemon SIGKILLed `--iterations` times in one state folder that survives every
restart, a quarter of the kills in each phase, each phase confirmed before the kill:

- ingestion: 30 samples sent; killed at the first of their acks; confirmed when fewer than
  30 acks came (the inbound thread was still storing them);
- imprint: 3 samples of a new label; killed, by turns, as soon as `training/state` says
  training or gating of kind `imprint`, or 0–1 s after it says gating (the gate ends by
  staging the version and switching the pointer); confirmed when no end of that imprint
  (promoted, rejected, idle, failed) was published before the kill (its `ts`, the
  daemon's clock);
- fine-tune: `adapt`; killed, by turns, 0–3 s after `training/state` says training of
  kind `finetune` (preparing), or within a second of its first progress report (10 % of
  its steps); confirmed as the imprint;
- after a promotion: an imprint of a new digit promoted, `rollback`, or `promote <newest>`;
  killed as soon as `training/state` says promoted / rolled_back; confirmed by that
  message, and the registry's `current` must then name the version it announced.

A phase that could not be confirmed (the job ended first) is tried again, at most five
times; a short run stops starting kills after 6 minutes (an unfinished plan fails
`phases-confirmed`). After every restart (and once more at the end): the daemon predicts; the version it
serves (the card it publishes at start, the first prediction's `model_version`) is the
registry's `current` read before the start; every acked sample has its metadata and data
on disk, and the daemon's own counts (`samples` command) equal those on disk; no `.tmp*`
file or folder is left in the state folder once it runs."""
import time
from pathlib import Path

from .mqtt import Client
from .rig import (BASE, Broker, Daemon, digit_pngs, jload, log, replay_pipeline, sample,
                  shipped_pngs, state_of, temporaries, write_config, current_version)

ENDS = {"promoted", "rejected", "idle", "failed", "rolled_back"}
STATE = f"{BASE}/training/state"
CARD = f"{BASE}/model/vision/info"
PREDICTION = f"{BASE}/door/prediction"
ACK = f"{BASE}/samples/vision/ack"
CMD = f"{BASE}/model/vision/cmd"


class Run:
    def __init__(self, tmp, rng):
        self.tmp = Path(tmp)
        self.state = self.tmp / "state"
        self.store = self.state / "samples" / "vision"
        self.rng = rng
        self.broker = Broker(tmp)
        self.conf = write_config(tmp, self.broker.port, replay_pipeline("door", 100),
                                 "[adapt]\nmin_shots = 3\nauto_after = 100000\nsample_quota = 100000\n")
        self.sub = Client(self.broker.port, [f"{BASE}/#"])
        self.sub.wait_ready()
        self.digits = digit_pngs()
        self.shipped = shipped_pngs()
        self.seq = 0
        self.fresh = 0          # new labels taught so far
        self.acked = {}         # id -> label, every ack with accepted: true
        self.restarts = []      # per start: what the checks found
        self.pointer_checks = []
        self.started_at = time.time()

    # ---- one start --------------------------------------------------------------------
    def start(self):
        """Start the daemon and check it (see the module docs); returns it, or None when it
        did not serve."""
        expected = current_version(self.state)
        d = Daemon(self.conf, self.tmp)
        r = {"expected_version": expected}
        first = self.sub.wait(d.started, PREDICTION, timeout=60,
                              pred=lambda m: (jload(m.payload) or {}).get("ts", 0) >= d.started * 1000)
        card = self.sub.wait(d.started, CARD, timeout=30, pred=lambda m: jload(m.payload) is not None)
        r["serving_s"] = round(first.at - d.started, 2) if first else None
        r["prediction_version"] = state_of(first).get("model_version") if first else None
        r["card_version"] = state_of(card).get("version") if card else None
        # Leftover temporaries: any still there a second later (a sample being stored or
        # a version being staged right now would be gone).
        tmps = temporaries(self.state)
        if tmps:
            time.sleep(1.0)
            tmps = [t for t in tmps if (self.state / t).exists()]
        r["temporaries"] = tmps
        # Every acked sample committed on disk, and the daemon's own counts = the disk's.
        on_disk = self.disk()
        r["acked"] = len(self.acked)
        r["acked_missing"] = sorted(i for i in self.acked if i not in on_disk)
        t = time.time()
        self.sub.publish(CMD, "samples")
        reply = self.sub.wait(t, f"{BASE}/samples/vision/list", timeout=20)
        disk_counts = {}
        for label in on_disk.values():
            disk_counts[label] = disk_counts.get(label, 0) + 1
        r["daemon_counts_match"] = bool(reply) and state_of(reply).get("counts") == disk_counts
        r["stored"] = len(on_disk)
        self.restarts.append(r)
        if first is None:
            d.kill()
            return None
        return d

    def disk(self):
        """Committed samples on disk: {id: label} (metadata that parses, data file there)."""
        out = {}
        for meta in self.store.glob("*.json"):
            m = jload(meta.read_text(errors="replace"))
            if m and (self.store / f"{m['id']}.{m['ext']}").exists():
                out[m["id"]] = m["label"]
        return out

    def collect_acks(self, since):
        for m in self.sub.since(since, ACK):
            a = jload(m.payload)
            if a and a.get("accepted"):
                self.acked[a["id"]] = True

    def send(self, label, pngs):
        ids = []
        for png in pngs:
            self.seq += 1
            ids.append(f"k{self.seq}")
            self.sub.publish(f"{BASE}/samples/vision/add", sample(ids[-1], label, png))
        return ids

    def new_label(self):
        g = str(self.fresh % 10)
        label = f"digit_{g}" if self.fresh < 10 else f"digit_{g}_{self.fresh}"
        self.fresh += 1
        return label, self.digits[g][:3]

    # ---- phases: each returns (confirmed, what) with the daemon still running ----------
    def ingest(self, d, turn):
        t = time.time()
        batch = [self.rng.choice(self.shipped) for _ in range(30)]
        ids = set()
        for label, png in batch:
            ids |= set(self.send(label, [png]))
        first = self.sub.wait(t, ACK, pred=lambda m: state_of(m).get("id") in ids, timeout=20)
        d.kill()
        time.sleep(0.3)
        n = len({state_of(m).get("id") for m in self.sub.since(t, ACK)} & ids)
        return first is not None and n < len(ids), f"{n} of {len(ids)} acked"

    def during(self, d, kind, send, states, linger_s):
        """Send what starts a `kind` job, wait until `training/state` shows it in one of
        `states`, kill 0–`linger_s` s later; confirmed when the job had not ended."""
        t = time.time()
        t_ms = int(t * 1000)
        send()
        # The awaited state, or the job's end (nothing to do, rejected, failed) before it.
        seen = self.sub.wait(t, STATE, timeout=180,
                             pred=lambda m: state_of(m).get("kind") == kind and state_of(m).get("ts", 0) >= t_ms
                             and (states(state_of(m)) or state_of(m).get("state") in ENDS))
        if seen is None or state_of(seen).get("state") in ENDS:
            d.kill()
            s = state_of(seen)
            return False, f"no {kind} seen" + (f": it ended {s.get('state')} {s.get('reason', '')}".rstrip()
                                                if seen else " within 180 s")
        time.sleep(self.rng.uniform(0.0, linger_s))
        d.kill()
        kill_ms = int(time.time() * 1000)
        time.sleep(0.3)
        ended = [m for m in self.sub.since(t, STATE)
                 if state_of(m).get("kind") == kind and state_of(m).get("state") in ENDS
                 and t_ms <= state_of(m).get("ts", 0) <= kill_ms]
        s = state_of(seen)
        what = f"{s.get('state')}" + (f" at {s['progress']:.2f}" if s.get("progress") is not None else "")
        return not ended, what + (f", but it ended ({state_of(ended[0]).get('state')}) first" if ended else "")

    def imprint(self, d, turn):
        """By turns: killed at the imprint's first report (preparing), or 0–1 s into its
        gate (which ends by staging the version and switching the pointer)."""
        label, pngs = self.new_label()
        if turn % 2 == 0:
            return self.during(d, "imprint", lambda: self.send(label, pngs),
                               lambda s: s.get("state") in ("training", "gating"), 0.0)
        return self.during(d, "imprint", lambda: self.send(label, pngs),
                           lambda s: s.get("state") == "gating", 1.0)

    def finetune(self, d, turn):
        """By turns: killed 0–3 s after the fine-tune began (preparing its data), or within
        a second of its first progress report (10 % of its steps done)."""
        if turn % 2 == 0:
            return self.during(d, "finetune", lambda: self.sub.publish(CMD, "adapt"),
                               lambda s: s.get("state") == "training", 3.0)
        return self.during(d, "finetune", lambda: self.sub.publish(CMD, "adapt"),
                           lambda s: s.get("state") == "training" and (s.get("progress") or 0) >= 0.1, 1.0)

    def promote(self, d, turn):
        cur = current_version(self.state)
        versions = sorted(int(p.name[1:]) for p in (self.state / "models" / "vision").glob("v[0-9]*"))
        newest = versions[-1] if versions else 0
        t = time.time()
        t_ms = int(t * 1000)
        if turn % 3 == 0 or not versions:
            label, pngs = self.new_label()
            self.send(label, pngs)
            how = f"imprint of {label}"
        elif newest > cur:
            self.sub.publish(CMD, f"promote {newest}")
            how = f"promote {newest}"
        else:
            self.sub.publish(CMD, "rollback")
            how = "rollback"
        m = self.sub.wait(t, STATE, timeout=90,
                          pred=lambda m: state_of(m).get("state") in ENDS and state_of(m).get("ts", 0) >= t_ms)
        d.kill()
        s = state_of(m)
        if s.get("state") not in ("promoted", "rolled_back"):
            return False, f"{how}: {s.get('state', 'nothing')} {s.get('reason', '')}".strip()
        pointer = current_version(self.state)
        self.pointer_checks.append((s.get("version"), pointer))
        return True, f"{how}: {s['state']} version {s.get('version')}, pointer {pointer}"


def run(args, tmp, checks, rng):
    r = Run(tmp, rng)
    n = args.iterations
    phases = ["ingest", "imprint", "finetune", "promote"]
    confirmed = {p: 0 for p in phases}
    unconfirmed = []
    after = {"promoted": 0, "rolled_back": 0}
    turn = 0
    turns = {p: 0 for p in phases}
    deadline = time.time() + args.budget_min * 60 if args.budget_min else None
    for i in range(n):
        if deadline and time.time() > deadline:
            log(f"kill: over its {args.budget_min:g} min budget after {i} iterations")
            break
        phase = phases[i % 4]
        for attempt in range(5):
            t = time.time()
            d = r.start()
            if d is None:
                log(f"kill {i + 1}/{n}: the daemon did not serve within 60 s")
                break
            if phase == "promote":
                ok, what = r.promote(d, turn)
                turn += 1
                if ok:
                    after["rolled_back" if "rolled_back" in what else "promoted"] += 1
            else:
                ok, what = getattr(r, phase)(d, turns[phase])
                turns[phase] += 1
            d.kill()
            r.collect_acks(t)
            log(f"kill {i + 1}/{n} {phase}{' (again)' if attempt else ''}: "
                f"{'confirmed' if ok else 'NOT confirmed'} ({what}); at its start it served "
                f"v{r.restarts[-1]['card_version']} (current {r.restarts[-1]['expected_version']}) "
                f"and held {r.restarts[-1]['stored']} samples")
            if ok:
                confirmed[phase] += 1
                break
            unconfirmed.append(f"{phase}: {what}")
        if d is None:
            break
    # One last start: the same checks after the last kill.
    time.sleep(0.5)
    r.collect_acks(r.started_at)
    d = r.start()
    if d is not None:
        d.stop()
    r.sub.close()
    r.broker.stop()
    log_text = (Path(tmp) / "daemon.log").read_text(errors="replace")
    fallbacks = log_text.count("falling back")
    starts = r.restarts
    names = {"ingest": "ingestion", "imprint": "an imprint", "finetune": "a fine-tune",
             "promote": "right after a promotion"}
    planned = {p: (n // 4) + (phases.index(p) < n % 4) for p in phases}
    checks.check("phases-confirmed", confirmed == planned,
                 ", ".join(f"{names[p]} {confirmed[p]}/{planned[p]}" for p in phases)
                 + f" ({after['promoted']} after a promote, {after['rolled_back']} after a rollback; "
                 + f"{len(unconfirmed)} attempts not confirmed and tried again)",
                 "every kill in its phase, confirmed before it")
    slow = [s for s in starts if s["serving_s"] is None]
    worst = max((s["serving_s"] for s in starts if s["serving_s"] is not None), default=None)
    checks.check("restarts-serve", not slow,
                 f"{len(starts) - len(slow)}/{len(starts)} starts predicting within 60 s (slowest {worst} s)",
                 "every start")
    wrong = [s for s in starts if not (s["card_version"] == s["expected_version"] == s["prediction_version"])]
    checks.check("served-version", not wrong,
                 f"{len(starts) - len(wrong)}/{len(starts)} starts served the registry's current version "
                 f"(card and first prediction)" + (f"; wrong: {wrong[:3]}" if wrong else ""),
                 "card = prediction's model_version = `current`")
    bad_ptr = [p for p in r.pointer_checks if p[0] != p[1]]
    checks.check("pointer-after-promotion", not bad_ptr,
                 f"{len(r.pointer_checks) - len(bad_ptr)}/{len(r.pointer_checks)} kills right after a promotion "
                 f"found `current` = the announced version" + (f"; wrong {bad_ptr[:3]}" if bad_ptr else ""),
                 "all")
    missing = sorted({i for s in starts for i in s["acked_missing"]})
    checks.check("acked-present", not missing and all(s["daemon_counts_match"] for s in starts),
                 f"{len(missing)} of {len(r.acked)} acked samples missing after a restart; the daemon's counts "
                 f"= the disk's after {sum(s['daemon_counts_match'] for s in starts)}/{len(starts)} starts"
                 + (f"; missing {missing[:5]}" if missing else ""),
                 "0 missing, counts equal at every start")
    leftovers = sorted({t for s in starts for t in s["temporaries"]})
    checks.check("no-temporaries", not leftovers,
                 f"{sum(bool(s['temporaries']) for s in starts)}/{len(starts)} starts left `.tmp*` in the state folder"
                 + (f": {leftovers[:5]}" if leftovers else ""), "none at any start")
    checks.check("no-fallback", fallbacks == 0, f"{fallbacks} fallbacks to an older version logged", "0")
    return {"confirmed": confirmed, "unconfirmed": unconfirmed, "after": after,
            "acked": len(r.acked), "starts": len(starts), "slowest_start_s": worst,
            "snapshot_files_left_in_tmpdir": len(list((Path(tmp) / "daemon-tmp").glob("lsskd-snapshot-*")))}
