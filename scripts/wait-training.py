#!/usr/bin/env python3
"""Wait for a device's trainer to settle after an `adapt`; print its last outcome as JSON.

Follows `<topic-prefix>/training/state` (mosquitto_sub, loopback broker on PORT) until a
fine-tune of MODEL has ended (promoted, rejected or failed) with nothing left queued, and
prints {"state", "reason", "seconds" (the fine-tune's own), "elapsed" (seconds since this
started)}; {"state": "timeout"} after TIMEOUT seconds. Used by scripts/bench-boards.sh.
Usage: scripts/wait-training.py PORT TOPIC_PREFIX MODEL TIMEOUT_SECS
"""
import json
import subprocess
import sys
import time

port, prefix, model, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
start = time.time()
sub = subprocess.Popen(
    ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", f"{prefix}/training/state",
     "-W", str(int(timeout))],
    stdout=subprocess.PIPE, text=True)
result = {"state": "timeout"}
for line in sub.stdout:
    try:
        st = json.loads(line)
    except ValueError:
        continue
    if (st.get("model") == model and st.get("kind") == "finetune"
            and st.get("ts", 0) >= start * 1000
            and st.get("state") in ("promoted", "rejected", "failed")
            and not st.get("queued")):
        result = {"state": st["state"], "reason": st.get("reason"),
                  "seconds": st.get("seconds") or 0.0, "elapsed": time.time() - start}
        break
sub.kill()
print(json.dumps(result))
