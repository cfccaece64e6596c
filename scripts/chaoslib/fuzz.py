"""fuzz: `cargo test --test it ingest_fuzz` with `LSSKD_FUZZ_CASES` cases per property (the
MQTT parsers, the sample checks, model commands, topics): no panic, no failure."""
import os
import re
import subprocess

from .rig import REPO


def run(args, tmp, checks, rng):
    env = dict(os.environ, LSSKD_FUZZ_CASES=str(args.cases))
    r = subprocess.run(["nice", "-n", "5", "cargo", "test", "--test", "it", "ingest_fuzz", "--",
                        "--test-threads", "2"], cwd=REPO, env=env, capture_output=True, text=True)
    m = re.search(r"test result: (\w+)\. (\d+) passed; (\d+) failed", r.stdout)
    passed, failed = (int(m.group(2)), int(m.group(3))) if m else (0, None)
    checks.check("properties", m is not None and failed == 0 and passed >= 4,
                 f"{passed} properties × {args.cases} cases passed, {failed} failed"
                 if m else "did not run: " + (r.stderr.strip().splitlines() or ["?"])[-1],
                 "≥ 4 properties, 0 failures")
    return {"passed": passed, "failed": failed}
