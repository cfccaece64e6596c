# Sourced by the daemon benchmarks: `replay_config FILE STATE_DIR INTERVAL_MS` writes a
# daemon config with the two shipped models on replay sources — the camera pipeline
# replaying demo images every INTERVAL_MS, the microphone pipeline 1 s windows every
# 250 ms (4 windows/s) — that fine-tunes by itself after 15 samples. Append `[mqtt]` and
# whatever else the benchmark needs.
replay_config() {
  cat > "$1" <<TOML
device_id = "bench"
state_dir = "$2"
[[pipeline]]
name = "camera"
model = "$PWD/models/vision"
[pipeline.source]
kind = "replay_images"
path = "$PWD/demo/samples/vision"
interval_ms = $3
[[pipeline]]
name = "microphone"
model = "$PWD/models/audio"
[pipeline.source]
kind = "replay_audio"
path = "$PWD/demo/samples/audio"
window_ms = 1000
hop_ms = 250
[adapt]
auto_after = 15
cooldown_secs = 0
TOML
}
