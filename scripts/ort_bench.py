"""Peer for `lsskd-edge bench`: onnxruntime (CPU, one thread, like one pipeline thread)
on the same model.onnx, batch 1, same number of timed runs. Prints one JSON line."""
import json, sys, time
import numpy as np
import onnxruntime as ort

path, iterations, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
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
print(json.dumps({
    "onnxruntime": ort.__version__,
    "mean_ms": sum(times) / len(times),
    "p50_ms": times[len(times) // 2],
    "p95_ms": times[int(round((len(times) - 1) * 0.95))],
}))
