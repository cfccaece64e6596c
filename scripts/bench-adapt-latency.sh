#!/usr/bin/env bash
# Inference latency of a running daemon while the device adapts (BENCHMARKS.md): vision and
# audio pipelines on replay sources, an embedded broker; after an idle baseline, 15
# labelled digits are sent, which triggers imprinting and a cross-entropy fine-tune on the
# trainer thread. Prints per-pipeline latency (features + tract) idle vs while training.
# Usage: scripts/bench-adapt-latency.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-18841}
cargo build --bin lsskd-edge
bin=$PWD/target/debug/lsskd-edge
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
source scripts/replay-config.sh
replay_config "$work/config.toml" "$work/state" 50
cat >> "$work/config.toml" <<TOML
[mqtt]
port = $port
embedded_broker = true
homeassistant_prefix = ""
TOML
RUST_LOG=warn "$bin" run --config "$work/config.toml" &
sleep 3
"$bin" watch --config "$work/config.toml" --raw > "$work/watch.txt" &
sleep 20
for d in 3 5 7; do
  "$bin" sample send --config "$work/config.toml" --model vision --label "digit_$d" \
    ../shared/data/mnist-fewshot/preview/$d/*.png > /dev/null
done
for _ in $(seq 240); do
  if grep -q '"kind":"finetune"' "$work/watch.txt" && grep -qE '"state":"(promoted|rejected|failed)","kind":"finetune"' "$work/watch.txt"; then break; fi
  sleep 1
done
sleep 5
python3 - "$work/watch.txt" <<'PY'
import json, sys
training = False
lat = {}
for line in open(sys.argv[1]):
    topic, _, payload = line.rstrip("\n").partition(" ")
    if topic.endswith("/training/state"):
        st = json.loads(payload)
        training = st["state"] in ("training", "gating")
        if st["state"] in ("promoted", "rejected"):
            print(f"adaptation: {st['state']} ({st.get('kind')}) {st.get('reason', '')} in {st.get('seconds', 0):.1f} s")
    elif topic.endswith("/prediction"):
        p = json.loads(payload)
        lat.setdefault((p["pipeline"], training), []).append(p["latency_ms"])
def stats(v):
    v = sorted(v)
    return sum(v) / len(v), v[int(round((len(v) - 1) * 0.95))], len(v)
for pipe in sorted({k[0] for k in lat}):
    idle, busy = lat.get((pipe, False), []), lat.get((pipe, True), [])
    if idle and busy:
        (mi, pi, ni), (mb, pb, nb) = stats(idle), stats(busy)
        print(f"{pipe:<10} idle mean {mi:.2f} ms p95 {pi:.2f} (n={ni})   training mean {mb:.2f} ms p95 {pb:.2f} (n={nb})   ratio {mb/mi:.2f}x")
    else:
        print(f"{pipe}: not enough predictions in both phases")
PY
