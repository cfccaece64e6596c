#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that sees outside input (FUZZ-REPORT.md).
#
#   scripts/fuzz.sh [TARGET...] [--execs N | --minutes M] [--mem-mb MB] [--no-build] [--resume]
#
# TARGETs: sample image wav config manifest onnx (default: all). Installs cargo-afl (pinned,
# `--locked`) and AFL++ when missing, builds the targets (fuzz/, instrumented, release),
# then per target: AFL++ (one instance, `-M main`, persistent mode) from fuzz/corpus/<target>
# (plus fuzz/corpus/bombs for the decoders) for N executions or M minutes (default:
# --minutes 1), under an address-space limit of MB MiB (default 2048: an allocation past it
# aborts, which AFL++ saves as a crash). Then every file of the seeds, the bombs, the files
# over AFL++'s 1 MiB input limit (fuzz/corpus/large; the shipped models/*/model.onnx for
# `onnx`) and the queue AFL++ built is replayed once in its own process under the same
# limit, for the peak RSS per input. Prints per target: executions, exec/s, edges found /
# coverage of the map, corpus, saved crashes and hangs, replay failures and peak RSS; exits
# 1 when any crash, hang or replay failure was seen.
#
# Environment: LSSKD_FUZZ_TARGET_DIR (cargo target folder of the instrumented build, default
# fuzz/target), LSSKD_FUZZ_OUT (AFL++'s output, default fuzz/out; both are git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_AFL_VERSION=0.18.2
ALL=(sample image wav config manifest onnx)
targets=()
execs=""
minutes=""
mem_mb=2048
build=1
resume=0
while (($#)); do
    case "$1" in
    --execs) execs="$2"; shift 2 ;;
    --minutes) minutes="$2"; shift 2 ;;
    --mem-mb) mem_mb="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --resume) resume=1; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *)
        [[ " ${ALL[*]} " == *" $1 "* ]] || { echo "unknown target $1 (${ALL[*]})" >&2; exit 2; }
        targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${ALL[@]}")
[[ -n "$execs" || -n "$minutes" ]] || minutes=1

target_dir="$(realpath -m "${LSSKD_FUZZ_TARGET_DIR:-fuzz/target}")"
out="$(realpath -m "${LSSKD_FUZZ_OUT:-fuzz/out}")"
mkdir -p "$out"

if ! cargo afl --version 2>/dev/null | grep -q "cargo-afl $CARGO_AFL_VERSION"; then
    echo "== installing cargo-afl $CARGO_AFL_VERSION"
    cargo install cargo-afl --version "$CARGO_AFL_VERSION" --locked
fi
# Builds AFL++ and its runtime for this rustc once; says so and fails when already built.
cargo afl config --build >/dev/null 2>&1 || true

bin="$target_dir/release"
if ((build)); then
    echo "== building the targets (instrumented, release) into $target_dir"
    start=$(date +%s)
    # fuzz/rustc-wrapper.sh: the crates no target runs are built unoptimised (its comment).
    if ! (cd fuzz && CARGO_TARGET_DIR="$target_dir" RUSTC_WRAPPER="$PWD/rustc-wrapper.sh" \
        cargo afl build --release --locked --bins) >"$out/build.log" 2>&1; then
        tail -40 "$out/build.log" >&2
        echo "the build failed (log: $out/build.log)" >&2
        exit 1
    fi
    for t in "${targets[@]}"; do
        [[ -x "$bin/$t" ]] || { echo "build failed: no $bin/$t" >&2; exit 1; }
    done
    echo "== build: $(($(date +%s) - start)) s"
fi

# The config and manifest targets write a file per input: into a folder of this run.
LSSKD_FUZZ_SCRATCH="$(mktemp -d "$([[ -d /dev/shm ]] && echo /dev/shm || echo /tmp)/lsskd-fuzz.XXXXXX")"
export LSSKD_FUZZ_SCRATCH
trap 'rm -rf "$LSSKD_FUZZ_SCRATCH"' EXIT
# A panic the daemon catches (tract's, `inference::classifier`) prints its message; a
# backtrace would be symbolised from the debug info each time (slow, and 250 MiB of RSS).
export RUST_BACKTRACE=0
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_NO_UI=1 AFL_QUIET=1
for t in "${targets[@]}"; do
    seeds="$out/$t/seeds"
    rm -rf "$seeds"
    mkdir -p "$seeds"
    cp fuzz/corpus/"$t"/* "$seeds"/
    case "$t" in
    sample | image | wav) cp fuzz/corpus/bombs/* "$seeds"/ ;;
    esac
    # AFL++ reads at most 1 MiB of a test case: larger seeds are replayed only.
    find "$seeds" -type f -size +1024k -delete
    timeout_ms=2000
    [[ "$t" == onnx ]] && timeout_ms=10000
    stop=(-V "$((${minutes:-0} * 60))")
    [[ -n "$execs" ]] && stop=(-E "$execs")
    input=(-i "$seeds")
    if ((resume)) && [[ -d "$out/$t/afl/main/queue" ]]; then
        input=(-i -)
    else
        rm -rf "$out/$t/afl"
    fi
    echo "== $t: afl-fuzz ${stop[*]} -m $mem_mb -t $timeout_ms"
    cargo afl fuzz "${input[@]}" -o "$out/$t/afl" -M main -m "$mem_mb" -t "$timeout_ms" \
        "${stop[@]}" -- "$bin/$t" >"$out/$t/afl.log" 2>&1 || {
        echo "afl-fuzz failed for $t; its log:" >&2
        tail -30 "$out/$t/afl.log" >&2
        exit 1
    }
done

python3 - "$out" "$bin" "$mem_mb" "${targets[@]}" <<'PY'
import os, resource, subprocess, sys, time
out, bin_dir, mem_mb, targets = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]

def stats(path):
    fields = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
    return fields

def limit():
    lim = mem_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

def replay(binary, files):
    """Each file once, in its own process: (peak RSS KiB, its file, failures)."""
    peak, worst, failures = 0, "", []
    for path in files:
        with open(path, "rb") as f:
            p = subprocess.Popen([binary], stdin=f, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, preexec_fn=limit)
            err = p.stderr.read()
            _, status, ru = os.wait4(p.pid, 0)
        if ru.ru_maxrss > peak:
            peak, worst = ru.ru_maxrss, path
        if status != 0:
            failures.append((path, status, err.decode(errors="replace")[-400:]))
    return peak, worst, failures

failed = False
rows = []
for t in targets:
    s = stats(os.path.join(out, t, "afl", "main", "fuzzer_stats"))
    afl_dir = os.path.join(out, t, "afl", "main")
    files = []
    for d in [os.path.join(out, t, "seeds"), os.path.join(afl_dir, "queue")]:
        if os.path.isdir(d):
            files += sorted(os.path.join(d, n) for n in os.listdir(d)
                            if os.path.isfile(os.path.join(d, n)))
    # The files over AFL++'s input limit, by the target that reads their format; the shipped
    # models (700 KB: tract takes ~0.1 s to optimise one) are replayed, not mutated.
    large = {"sample": ["png-1.9MiB.png", "req-png-1.9MiB.json", "wav-1MiB-44k-stereo.wav"],
             "image": ["png-1.9MiB.png"], "wav": ["wav-1MiB-44k-stereo.wav"]}
    files += [os.path.join("fuzz/corpus/large", n) for n in large.get(t, [])]
    if t == "onnx":
        files += [f"models/{m}/model.onnx" for m in ("vision", "audio", "scenes")]
    start = time.time()
    peak, worst, failures = replay(os.path.join(bin_dir, t), files)
    crashes, hangs = int(s.get("saved_crashes", 0)), int(s.get("saved_hangs", 0))
    failed |= bool(crashes or hangs or failures)
    rows.append((t, s, len(files), peak, worst, failures, time.time() - start))
    for path, status, err in failures:
        print(f"!! {t}: replaying {path} ended with status {status}:\n{err}", file=sys.stderr)

print()
print(f"{'target':9} {'execs':>11} {'exec/s':>8} {'edges':>13} {'map cvg':>8} {'corpus':>6} "
      f"{'crashes':>7} {'hangs':>5} {'replayed':>8} {'peak RSS':>9}  the input at the peak")
for t, s, n, peak, worst, failures, secs in rows:
    execs, secs_run = int(s.get("execs_done", 0)), int(s.get("run_time", 0)) or 1
    print(f"{t:9} {execs:>11,} {execs / secs_run:>8,.0f} "
          f"{s.get('edges_found', '?'):>6}/{s.get('total_edges', '?'):<6} {s.get('bitmap_cvg', '?'):>8} "
          f"{s.get('corpus_count', '?'):>6} {s.get('saved_crashes', '?'):>7} {s.get('saved_hangs', '?'):>5} "
          f"{n - len(failures):>4}/{n:<3} {peak / 1024:>6.1f} MiB  {os.path.relpath(worst)}")
print(f"\n(address space limited to {mem_mb} MiB per target process; AFL++'s own stats in "
      f"{out}/<target>/afl/main/fuzzer_stats, crashes in .../crashes)")
sys.exit(1 if failed else 0)
PY
