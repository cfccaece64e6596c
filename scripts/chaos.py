#!/usr/bin/env python3
"""The daemon's reliability checks (issue 32, RELIABILITY.md): each part runs the real
binary against mosquitto on a loopback port, decides explicit checks, prints one
`PASS`/`FAIL` line per check with the measured figure, and the process exits 1 when any
check failed (2 on a usage error).

  scripts/chaos.py [--short] [--report] PART... [options]

  crash   the crash-point explorer over the sample store's and the registry's operations:
          every state a file system may leave at every crash point, opened with the real
          stores (`cargo test --lib crash`; `all` states at full size, 4 per point short).
  kill    SIGKILL in each phase, confirmed from `training/state` and the acks before the
          kill: ingestion, an imprint, a fine-tune, right after a promotion or rollback.
          After each restart: every acked sample on disk and counted by the daemon, the
          served version (card, predictions) = the registry's `current`, no `.tmp*` left.
  broker  mosquitto restarted under load: delay at a real subscriber from broker-up to
          the first new prediction and to the retained status and card (seen before).
  flood   samples as fast as they can be sent: every one acked, none lost.
  soak    ≥ 1 h: samples, adaptations promoted and rejected, two broker restarts, an IP
          camera unplugged and plugged back; prediction rate, RSS and fd counts.
  fuzz    the MQTT parsers through proptest at scale.

--short bounds every part (about 10 minutes in all: CI); --report rewrites RELIABILITY.md
from this run's results (scripts/chaos.sh all); --report-saved from each part's last
full-size run (parts run one by one). Options: --iterations (kill, broker),
--samples (flood), --minutes (soak), --cases (fuzz), --states (crash), --seed. The binary: LSSKD_EDGE_BIN,
else $CARGO_TARGET_DIR/debug/lsskd-edge (target/ by default). Results (JSON) go to
$CARGO_TARGET_DIR/chaos/<part>.json.
"""
import argparse
import json
import os
import random
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaoslib import broker, crash, flood, fuzz, kill, report, soak  # noqa: E402
from chaoslib.rig import REPO, Checks, binary, git_commit, reap  # noqa: E402

PARTS = {"crash": crash, "fuzz": fuzz, "flood": flood, "broker": broker, "kill": kill,
         "soak": soak}
ORDER = ["crash", "fuzz", "flood", "broker", "kill", "soak"]
# Sizes: (full, short).
SIZES = {
    "kill": ("iterations", 100, 8),
    "broker": ("iterations", 20, 3),
    "flood": ("samples", 1000, 400),
    "soak": ("minutes", 60, 5),
    "fuzz": ("cases", 1_000_000, 2000),
    "crash": ("states", "all", 4),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", help="crash | kill | broker | flood | soak | fuzz | all (default: all)")
    ap.add_argument("--short", action="store_true", help="every part bounded (CI)")
    ap.add_argument("--report", action="store_true", help="rewrite RELIABILITY.md from this run")
    ap.add_argument("--report-saved", action="store_true",
                    help="rewrite RELIABILITY.md from every part's saved full-size result "
                         "($CARGO_TARGET_DIR/chaos/<part>.json), running nothing")
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--cases", type=int)
    ap.add_argument("--states", help="crash: states per crash point, or `all`")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    # A short run's kill part stops starting kills after this many minutes (CI's bound).
    args.budget_min = 6 if args.short else None
    # Stopped from outside: the `finally` below still stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report_saved:
        return report_saved()
    parts = args.parts or ["all"]
    if "all" in parts:
        parts = ORDER
    for p in parts:
        if p not in PARTS:
            ap.error(f"unknown part `{p}` (crash, kill, broker, flood, soak, fuzz, all)")
    if not Path(binary()).exists() and set(parts) - {"fuzz", "crash"}:
        ap.error(f"no daemon binary at {binary()} (cargo build, or set LSSKD_EDGE_BIN)")
    commit = git_commit()
    out_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "chaos"
    out_dir.mkdir(parents=True, exist_ok=True)
    command = os.environ.get("CHAOS_COMMAND") or "scripts/chaos.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    results, failed = [], []
    t_all = time.time()
    for part in parts:
        key, full, short = SIZES[part]
        a = argparse.Namespace(**vars(args))
        if getattr(a, key) is None:
            setattr(a, key, short if args.short else full)
        v = getattr(a, key)
        a.size = f"{v:g} {key}" if isinstance(v, (int, float)) else f"{v} {key}"
        checks = Checks(part)
        rng = random.Random(args.seed)
        started = time.time()
        print(f"== {part} ({a.size}{', short' if args.short else ''})", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"chaos-{part}-") as tmp:
            try:
                details = PARTS[part].run(a, tmp, checks, rng) or {}
            except Exception as e:  # a part that crashed is a failed check, with its trace
                traceback.print_exc()
                checks.check("ran", False, f"the part stopped: {type(e).__name__}: {e}", "runs to its end")
                details = {}
            finally:
                reap()
            if not checks.ok:
                keep = out_dir / f"{part}-daemon.log"
                src = Path(tmp) / "daemon.log"
                if src.exists():
                    keep.write_bytes(src.read_bytes()[-2_000_000:])
                    print(f"   the daemon's log: {keep}", flush=True)
        minutes = (time.time() - started) / 60
        r = {"part": part, "size": a.size, "short": args.short, "commit": commit,
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
             "minutes": round(minutes, 1), "command": command, "ok": checks.ok,
             "checks": checks.items, "details": details}
        (out_dir / f"{part}.json").write_text(json.dumps(r, indent=1))
        results.append(r)
        print(f"== {part}: {'PASS' if checks.ok else 'FAIL'} "
              f"({sum(c['ok'] for c in checks.items)}/{len(checks.items)} checks, {minutes:.1f} min)",
              flush=True)
        if not checks.ok:
            failed.append(part)
    if args.report:
        path = report.write(results)
        print(f"wrote {path}", flush=True)
    print(f"== chaos: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'} "
          f"({len(parts)} parts, {(time.time() - t_all) / 60:.1f} min)", flush=True)
    return 1 if failed else 0


def report_saved():
    """RELIABILITY.md from the parts' last full-size runs, each with its own commit and
    date (parts run one after the other rather than in one `all`)."""
    out_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "chaos"
    results = []
    for part in ORDER:
        path = out_dir / f"{part}.json"
        if not path.exists():
            print(f"no saved result of `{part}` ({path}): run `scripts/chaos.sh {part}`", file=sys.stderr)
            return 2
        r = json.loads(path.read_text())
        if r.get("short"):
            print(f"the saved `{part}` is a short run: run `scripts/chaos.sh {part}`", file=sys.stderr)
            return 2
        results.append(r)
    print(f"wrote {report.write(results)}", flush=True)
    failed = [r["part"] for r in results if not r["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
