#!/usr/bin/env bash
# RUSTC_WRAPPER of the fuzz build (scripts/fuzz.sh). cargo-afl builds every crate at
# opt-level 3, in one codegen unit, with AFL++'s coverage passes; most of the daemon's
# dependency graph (burn, the MQTT and TLS stack, tokio, cameras, sound cards, the command
# line) never runs in a fuzz target, and built that way it made a cold build take hours on
# two cores. Those crates are built unoptimised and uninstrumented; the crate under test
# (`lsskd_edge`) at opt-level 1 (its own code is glue around the decoders; burn's generic
# code it instantiates is most of its build time). Everything on a target's path (image,
# png, zune-jpeg, hound, rubato, realfft, serde_json, base64, toml, config, prost, tract,
# lsskd-kernels) keeps cargo-afl's flags.
rustc="$1"
shift
crate=""
prev=""
for a in "$@"; do
    [[ "$prev" == --crate-name ]] && crate="$a"
    prev="$a"
done
case "$crate" in
burn* | cubecl* | gemm* | tokio* | hyper* | h2 | rustls* | ring | rumqttc | nokhwa* | cpal | alsa* | \
    v4l* | clap* | indicatif | console | tracing_subscriber | mozjpeg* | csv* | tar | metrics* | \
    flume | sd_notify | reqwest | axum* | tower* | webpki* | sharded_slab | matchers)
    level=0 ;;
lsskd_edge) level=1 ;;
*) exec "$rustc" "$@" ;;
esac
args=()
after_c=0
for a in "$@"; do
    if ((after_c)); then
        after_c=0
        case "$a" in
        passes=sancov* | llvm-args=-sanitizer-coverage* | opt-level=* | codegen-units=*) continue ;;
        esac
        args+=(-C "$a")
    elif [[ "$a" == -C ]]; then
        after_c=1
    else
        args+=("$a")
    fi
done
if [[ "$level" == 1 ]]; then
    # The crate under test keeps its coverage passes.
    args+=(-C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=3
        -C llvm-args=-sanitizer-coverage-trace-pc-guard
        -C llvm-args=-sanitizer-coverage-prune-blocks=0
        -C llvm-args=-sanitizer-coverage-trace-compares)
fi
exec "$rustc" "${args[@]}" -C opt-level="$level" -C codegen-units=1
