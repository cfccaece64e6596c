"""Peer for `lsskd-edge bench-train`: the same training step in PyTorch on the CPU.

The network, heads, transforms, losses and optimizer follow src/lsskd (net.rs, loss.rs,
transforms.rs, train.rs; ARCHITECTURE.md "LSSKD"):
- student: stem conv3x3 + BN + ReLU, 3 stages of 2 BasicBlocks (widths 16/32/64, strides
  1/2/2, 1x1 conv + BN shortcut where the shape changes), GAP, cosine classifier
  (scale 16, no bias);
- auxiliary head l (lsskd): fresh copies of stages l+1..L (head L: one extra stride-1
  block), GAP, N*M-way cosine classifier;
- rot4 joint labels y*M + j; `sampled` = identity row + 1 random non-identity rotation per
  sample (2 rows), `all` = 4 rows;
- losses: soft CE of the final head on the untransformed rows, soft CE of every auxiliary
  head on its joint labels, tau^2 * KL (tau 3) from the deepest auxiliary head to the
  shallower ones (teacher detached), MSE of every auxiliary feature map to the detached
  f_L; progressive soft targets from a per-sample store of the previous predictions
  (`ce`: hard labels, no auxiliary heads);
- SGD, Nesterov momentum 0.9, weight decay 5e-4.
Same fixed synthetic batch shape (B x 1 x 28 x 28, 10 classes), torch.set_num_threads.
Prints one JSON line.

--finetune: the adaptation's step (src/adapt/job.rs): the stem and the first two stages
frozen (no gradient, BatchNorm on running statistics, run under no_grad), only the last
stage, the classifier and the last stage's auxiliary head train (the heads of frozen
stages cannot move the student and are skipped, as in lsskd-edge).

Usage: torch_train_bench.py --method ce|lsskd [--transforms sampled|all] [--batch 64]
       [--steps 20] [--warmup 3] [--threads 2] [--finetune]
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

M = 4  # rot4
CLASSES = 10
WIDTHS = (16, 32, 64)
BLOCKS = 2
SCALE = 16.0
TAU = 3.0


def conv(cin, cout, k, stride):
    c = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
    nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")
    return c


class ConvBn(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.conv = conv(cin, cout, k, stride)
        self.bn = nn.BatchNorm2d(cout)  # eps 1e-5, momentum 0.1 as burn's defaults

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = ConvBn(cin, cout, 3, stride)
        self.c2 = ConvBn(cout, cout, 3, 1)
        self.shortcut = ConvBn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        y = F.relu(self.c1(x))
        return F.relu(self.c2(y) + identity)


def stage(cin, cout, stride, blocks):
    return [Block(cin, cout, stride) if b == 0 else Block(cout, cout, 1) for b in range(blocks)]


def l2_normalize(x):
    return x / x.pow(2).sum(1, keepdim=True).sqrt().clamp_min(1e-6)


class Cosine(nn.Module):
    def __init__(self, dim, classes):
        super().__init__()
        k = (1.0 / dim) ** 0.5
        self.weight = nn.Parameter(torch.empty(classes, dim).uniform_(-k, k))

    def forward(self, h):
        return l2_normalize(h) @ l2_normalize(self.weight).t() * SCALE


def gap(x):
    return x.mean(3).mean(2)


class Student(nn.Module):
    def __init__(self, in_channels=1):
        super().__init__()
        self.stem = ConvBn(in_channels, WIDTHS[0], 3, 1)
        stages, cin = [], WIDTHS[0]
        for i, w in enumerate(WIDTHS):
            stages.append(nn.Sequential(*stage(cin, w, 1 if i == 0 else 2, BLOCKS)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.classifier = Cosine(WIDTHS[-1], CLASSES)

    def forward(self, x):
        f = F.relu(self.stem(x))
        outs = []
        for st in self.stages:
            f = st(f)
            outs.append(f)
        h = gap(f)
        return self.classifier(h), outs


class AuxHead(nn.Module):
    def __init__(self, i):
        super().__init__()
        L = len(WIDTHS)
        if i + 1 < L:
            blocks, cin = [], WIDTHS[i]
            for w in WIDTHS[i + 1:]:
                blocks += stage(cin, w, 2, BLOCKS)
                cin = w
        else:
            blocks = [Block(WIDTHS[-1], WIDTHS[-1], 1)]
        self.blocks = nn.Sequential(*blocks)
        self.classifier = Cosine(WIDTHS[-1], CLASSES * M)

    def forward(self, f):
        a = self.blocks(f)
        return self.classifier(gap(a)), a


class TrainNet(nn.Module):
    def __init__(self, aux_heads):
        super().__init__()
        self.student = Student()
        self.aux = nn.ModuleList([AuxHead(i) for i in range(len(WIDTHS))] if aux_heads else [])

    def forward(self, x):
        logits, stages = self.student(x)
        return logits, stages, [head(f) for head, f in zip(self.aux, stages)]


def soft_ce(z, t):
    return -(t * F.log_softmax(z, 1)).sum() / z.shape[0]


def kl(teacher, student, tau):
    lt = F.log_softmax(teacher.detach() / tau, 1)
    ls = F.log_softmax(student / tau, 1)
    return (lt.exp() * (lt - ls)).sum() / student.shape[0]


def feature_mse(a, t):
    return (a - t.detach()).pow(2).mean()


def progressive(onehot, alpha, prev):
    """(1 - alpha) * onehot + alpha * prev where prev was recorded, else onehot."""
    seen = ~torch.isnan(prev[:, :1])
    return torch.where(seen, (1 - alpha) * onehot + alpha * torch.nan_to_num(prev), onehot)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["ce", "lsskd"], default="lsskd")
    ap.add_argument("--transforms", choices=["sampled", "all"], default="sampled")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    lsskd = a.method == "lsskd"
    b = a.batch
    net = TrainNet(aux_heads=lsskd).train()
    # Counted as burn's num_params: parameters plus BatchNorm running statistics.
    params = sum(p.numel() for p in net.parameters()) + sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    frozen = len(WIDTHS) - 1 if a.finetune else 0
    if a.finetune:
        for part in [net.student.stem, *net.student.stages[:frozen], *net.aux[:frozen]]:
            part.eval()
            for p in part.parameters():
                p.requires_grad_(False)
    trained = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trained, lr=0.01, momentum=0.9, dampening=0.0,
                          nesterov=True, weight_decay=5e-4)
    x = torch.rand(b, 1, 28, 28) * 2 - 1
    y = torch.arange(b) % CLASSES
    per_sample = (2 if a.transforms == "sampled" else M) if lsskd else 1
    rows = b * per_sample
    heads = len(net.aux)
    k = CLASSES * M
    # Previous-epoch predictions per sample (NaN: never recorded), as lsskd::SoftStore.
    final_prev = torch.full((b, CLASSES), float("nan"))
    aux_prev = torch.full((b, heads, M, k), float("nan"))
    alpha = 0.5
    onehot_final = F.one_hot(y, CLASSES).float()

    def step():
        # Batch expansion (rot4, sample-major, identity row first) and joint labels.
        if lsskd:
            rots = torch.stack([torch.rot90(x, j, dims=(2, 3)) for j in range(M)], 1)
            if a.transforms == "sampled":
                j = torch.randint(1, M, (b,))
                js = torch.stack([torch.zeros_like(j), j], 1)  # [B, 2]
                inp = torch.stack([x, rots[torch.arange(b), j]], 1)
            else:
                js = torch.arange(M).repeat(b, 1)
                inp = rots
            inp = inp.reshape(rows, 1, 28, 28)
            js = js.reshape(rows)
            sample = torch.arange(rows) // per_sample
            joint = y[sample] * M + js
        else:
            inp = x
        if a.finetune:
            with torch.no_grad():
                f = F.relu(net.student.stem(inp))
                for st in net.student.stages[:frozen]:
                    f = st(f)
            stages = []
            for st in net.student.stages[frozen:]:
                f = st(f)
                stages.append(f)
            logits = net.student.classifier(gap(f))
            aux = [head(g) for head, g in zip(net.aux[frozen:], stages)]
        else:
            logits, stages, aux = net(inp)
        z = logits[::per_sample]
        if lsskd:
            target = progressive(onehot_final, alpha, final_prev)
            final_prev.copy_(torch.softmax(z.detach(), 1))
        else:
            target = onehot_final
        loss = soft_ce(z, target)
        if lsskd:
            onehot = F.one_hot(joint, k).float()
            for h, (al, _) in enumerate(aux):
                prev = aux_prev[sample, h, js]
                t = progressive(onehot, alpha, prev)
                aux_prev[sample, h, js] = torch.softmax(al.detach(), 1)
                loss = loss + soft_ce(al, t)
            deepest = aux[-1][0]
            loss = loss + TAU * TAU * sum(kl(deepest, al, TAU) for al, _ in aux[:-1])
            f_l = stages[-1]
            loss = loss + sum(feature_mse(feat, f_l) for _, feat in aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    times = []
    for i in range(a.warmup + max(a.steps, 1)):
        if i == a.warmup:
            cpu0 = time.process_time()
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        if i >= a.warmup:
            times.append((t1 - t0) * 1e3)
    times.sort()
    n = len(times)
    print(json.dumps({
        "torch": torch.__version__,
        "method": a.method,
        "transforms": a.transforms if lsskd else "-",
        "batch": b,
        "rows": rows,
        "params": params,
        "threads": a.threads,
        "finetune": a.finetune,
        "steps": n,
        "mean_ms": sum(times) / n,
        "p50_ms": times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2]),
        "cores_busy": (time.process_time() - cpu0) / (sum(times) / 1e3),
        "min_ms": times[0],
        "max_ms": times[-1],
        # Linux ru_maxrss is KiB; includes the interpreter and the torch libraries.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
