#!/usr/bin/env python3
"""README's board table: what to expect on Raspberry Pi and Jetson boards, derived from a
`lsskd-edge bench --report` run on this machine and the boards' published core throughput.

Usage: scripts/board-table.py [REPORT.json]
  (without a file it runs `target/debug/lsskd-edge bench --report` on the shipped models,
  or LSSKD_EDGE_BIN's binary)

The model (assumptions, each stated in README beside the table):
- Our code reaches the same fraction of a core's peak multiply-add rate on a board as it
  does here. This machine's peak is measured (`matmul_gflops_one_thread`: a 512^3 matrix
  product on one thread); a board's is its theoretical one (clock x single-precision FLOP
  per cycle of its cores' NEON units), which no code quite reaches, so the estimates are
  optimistic, the in-order Cortex-A53 most of all.
- Inference runs on one thread: time scales with one core's peak.
- An adaptation trains on every core (rayon's pool): time scales with one core's peak times
  the cores.
- Memory is what the process took here (the same models and buffers on arm64).
"""
import json
import os
import subprocess
import sys

# name, SoC and cores, cores, GHz, single-precision FLOP per cycle per core, RAM.
# FLOP/cycle: one 128-bit FMA (4 lanes x 2) a cycle on Cortex-A53 and A72 (A72 measured at
# 15.9 GFLOP/s on one 2.0 GHz core by flatlib's VFP Benchmark); two on A76 and A78 (Arm's
# A76 and A78 software optimisation guides: two FP/ASIMD pipes with FMLA).
BOARDS = [
    ("Pi Zero 2 W", "BCM2710A1, 4x Cortex-A53", 4, 1.0, 8, "512 MiB"),
    ("Pi 3 B", "BCM2837, 4x Cortex-A53", 4, 1.2, 8, "1 GiB"),
    ("Pi 4 B", "BCM2711, 4x Cortex-A72", 4, 1.5, 8, "1-8 GiB"),
    ("Pi 5", "BCM2712, 4x Cortex-A76", 4, 2.4, 16, "2-16 GiB"),
    ("Jetson Orin Nano", "6x Cortex-A78AE", 6, 1.5, 16, "4-8 GiB"),
]
LIMIT_SECS = 600  # adapt.budget_secs by default


def report():
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            return json.load(f)
    binary = os.environ.get("LSSKD_EDGE_BIN", "target/debug/lsskd-edge")
    args = [binary, "bench", "--report", "--iterations", "300"]
    for m in ("vision", "audio", "scenes"):
        args += ["--model", f"models/{m}"]
    return json.loads(subprocess.check_output(args))


def main():
    r = report()
    here = r["machine"]
    peak1 = here["matmul_gflops_one_thread"]
    models = r["models"]
    names = [m["model"] for m in models]
    print(f"From `bench --report` on {here['cpu']} ({here['arch']}, {here['cores']} cores, "
          f"{here['vector_path']}, {peak1:.0f} GFLOP/s on one thread), "
          f"peak memory {r['peak_rss_mib']:.0f} MiB.\n")
    head = (["board", "cores", "peak GFLOP/s a core"]
            + [f"{n} inference, ms" for n in names]
            + [f"{n} adaptation, s" for n in names])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    rows = [("this machine (measured)", here["cpu"], here["cores"], None, None, "")] + BOARDS
    for name, soc, cores, ghz, flop, ram in rows:
        board_peak = peak1 if ghz is None else ghz * flop
        one = peak1 / board_peak
        many = peak1 * here["cores"] / (board_peak * cores)
        cells = [f"{name} ({soc})" if ghz is not None else name, str(cores),
                 f"{board_peak:.0f}"]
        cells += [f"{m['inference']['p50_ms'] * one:.1f}" for m in models]
        for m in models:
            a = m["adaptation"]
            secs = (a["train_secs"] + a["gate_secs"]) * many
            over = " (over the 600 s limit)" if secs > LIMIT_SECS else ""
            cells.append(f"{secs:.0f}{over}")
        print("| " + " | ".join(cells) + " |")
    print(f"\nMemory: {r['peak_rss_mib']:.0f} MiB at most for the models above, loaded, timed "
          "and adapted one after the other (the daemon with both demo pipelines and a "
          "fine-tune: 254 MiB, BENCHMARKS.md \"Slow boards and small memory, emulated\").")


if __name__ == "__main__":
    main()
