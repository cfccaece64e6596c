"""Peer for `lsskd-edge bench`: onnxruntime (CPU, one thread, like one pipeline thread)
on the same model.onnx, batch 1, same number of timed runs. Prints one JSON line.

Usage: ort_bench.py MODEL ITERATIONS WARMUP [--profile]
With --profile, onnxruntime's own per-node profile of a second series of runs is added:
mean microseconds per node and op type (its graph after onnxruntime's fusions)."""
import json, os, sys, tempfile, time
import numpy as np
import onnxruntime as ort

path, iterations, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
profile = "--profile" in sys.argv[4:]


def session(profiling):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    if profiling:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


sess = session(False)
inp = sess.get_inputs()[0]
shape = [d if isinstance(d, int) else 1 for d in inp.shape]
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
times = []
for i in range(warmup + iterations):
    t0 = time.perf_counter()
    sess.run(None, {inp.name: x})
    t1 = time.perf_counter()
    if i >= warmup:
        times.append((t1 - t0) * 1e3)
times.sort()
out = {
    "onnxruntime": ort.__version__,
    "mean_ms": sum(times) / len(times),
    "p50_ms": times[len(times) // 2],
    "p95_ms": times[int(round((len(times) - 1) * 0.95))],
}
if profile:
    prof = session(True)
    for _ in range(warmup + iterations):
        prof.run(None, {inp.name: x})
    events = json.load(open(prof.end_profiling()))
    nodes = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            n = nodes.setdefault(name, {"op": e["args"].get("op_name", ""), "us": 0.0, "runs": 0})
            n["us"] += e["dur"]
            n["runs"] += 1
    out["nodes"] = [
        {"node": k, "op": v["op"], "mean_us": v["us"] / max(v["runs"], 1)} for k, v in nodes.items()
    ]
print(json.dumps(out))
