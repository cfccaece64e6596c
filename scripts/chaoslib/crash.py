"""crash: the crash-point explorer (`src/durable/crash.rs`; its design and the bugs it
found: CRASH-REPORT.md) over every scenario of the sample store and the model registry —
`LSSKD_CRASH_STATES=all cargo test --lib crash` (a short run: 4 states per crash point, as
`cargo test` runs it in CI). Each scenario records its store's operations on a real
folder; every prefix of that log is a crash point, and every state a file system may leave
there (names not yet fsynced into their folder present or not, data not yet fsynced old,
empty, half or whole; dependencies respected) is written out and opened with the real
`SampleStore::open`, `Versions::open_current` and `ModelPackage::load`, which must find
every acknowledged sample, no half version, a live pointer that loads, and no sample that a
returned removal took."""
import os
import re
import subprocess

from .rig import REPO

LINE = re.compile(r"crash states: (.+?): Explored \{ crash_points: (\d+), states: (\d+), "
                  r"checked: (\d+), capped_points: (\d+) \}")


def run(args, tmp, checks, rng):
    env = dict(os.environ, LSSKD_CRASH_STATES=str(args.states))
    r = subprocess.run(["nice", "-n", "5", "cargo", "test", "--lib", "crash", "--",
                        "--nocapture", "--test-threads", "1"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    out = r.stdout + r.stderr
    m = re.search(r"test result: (\w+)\. (\d+) passed; (\d+) failed", out)
    passed, failed = (int(m.group(2)), int(m.group(3))) if m else (0, None)
    scenarios = [{"scenario": s, "crash_points": int(p), "states": int(n), "checked": int(c),
                  "capped_points": int(k)} for s, p, n, c, k in LINE.findall(out)]
    checks.check("invariants", m is not None and failed == 0 and passed > 0 and scenarios,
                 f"{passed} tests passed, {failed} failed; {len(scenarios)} scenarios: "
                 + "; ".join(f"{s['scenario']}: {s['crash_points']} points, {s['states']} states, "
                             f"{s['checked']} distinct" for s in scenarios)
                 if m else "did not run: " + (r.stderr.strip().splitlines() or ["?"])[-1],
                 "every state checked holds every invariant")
    if args.states == "all":
        # `states` counts every state enumerated; `checked` those distinct on disk (the
        # same folders with the same acknowledgements are checked once).
        checked = sum(s["checked"] for s in scenarios)
        total = sum(s["states"] for s in scenarios)
        capped = sum(s["capped_points"] for s in scenarios)
        checks.check("all-states", bool(scenarios) and capped == 0,
                     f"{total} crash states enumerated at {sum(s['crash_points'] for s in scenarios)} "
                     f"crash points, {checked} of them distinct on disk and checked; "
                     f"{capped} crash points capped",
                     "every state of every crash point (none capped)")
    return {"scenarios": scenarios, "passed": passed, "failed": failed}
