"""What every part stands on: mosquitto on a loopback port, the daemon binary in its own
state folder, the data the parts send, and `Checks` (each part's pass/fail verdicts with
the measured figure)."""
import base64
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
DATA = REPO.parent / "shared" / "data"
DEV = "chaos"
PREFIX = "lsskd"
BASE = f"{PREFIX}/{DEV}"


def binary():
    if os.environ.get("LSSKD_EDGE_BIN"):
        return os.environ["LSSKD_EDGE_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "lsskd-edge")


# Every child process a part started, stopped by `reap` when the part ends, however it ends.
CHILDREN = []


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    CHILDREN.append(p)
    return p


def reap():
    while CHILDREN:
        p = CHILDREN.pop()
        if p.poll() is None:
            p.kill()
            p.wait(10)


def log(msg):
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jload(p):
    try:
        return json.loads(p)
    except (ValueError, TypeError):
        return None


class Checks:
    """A part's checks: each a name, the measured figure, what is required, and a verdict,
    printed as it is decided."""

    def __init__(self, part):
        self.part = part
        self.items = []

    def check(self, name, ok, figure, required):
        ok = bool(ok)
        self.items.append({"name": name, "ok": ok, "figure": figure, "required": required})
        print(f"{'PASS' if ok else 'FAIL'} {self.part}/{name}: {figure} (required: {required})",
              flush=True)
        return ok

    @property
    def ok(self):
        return all(c["ok"] for c in self.items)


def median_max(xs):
    return (statistics.median(xs), max(xs)) if xs else (None, None)


class Broker:
    """mosquitto on a loopback port (anonymous, no persistence), restartable on that port."""

    def __init__(self, tmp):
        self.port = free_port()
        self.conf = Path(tmp) / "mosquitto.conf"
        text = f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        if os.geteuid() == 0:
            text += "user root\n"
        self.conf.write_text(text)
        self.proc = None
        self.up_at = None
        self.start()

    def start(self):
        """Start it; returns (and keeps in `up_at`) the moment it first accepted a TCP
        connection, polled every 5 ms."""
        self.proc = spawn(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                self.up_at = time.time()
                return self.up_at
            except OSError:
                time.sleep(0.005)
        raise RuntimeError("mosquitto did not start")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


def write_config(tmp, port, pipelines, extra=""):
    conf = Path(tmp) / "config.toml"
    conf.write_text(f"""device_id = "{DEV}"
state_dir = "{Path(tmp) / 'state'}"
{pipelines}
[publish]
debounce_count = 1

[mqtt]
host = "127.0.0.1"
port = {port}
homeassistant_prefix = ""
{extra}""")
    return conf


def replay_pipeline(name="door", interval_ms=100):
    return f"""[[pipeline]]
name = "{name}"
model = "{REPO / 'models' / 'vision'}"
[pipeline.source]
kind = "replay_images"
path = "{REPO / 'demo' / 'samples' / 'vision'}"
interval_ms = {interval_ms}
"""


class Daemon:
    """`lsskd-edge run` in the part's folder; its log appended to `daemon.log`, its
    temporary files in `tmp/daemon-tmp`."""

    def __init__(self, conf, tmp):
        self.logpath = Path(tmp) / "daemon.log"
        self.log = open(self.logpath, "ab")
        tmpdir = Path(tmp) / "daemon-tmp"
        tmpdir.mkdir(exist_ok=True)
        env = dict(os.environ, RUST_LOG="info", TMPDIR=str(tmpdir))
        env.pop("NOTIFY_SOCKET", None)
        self.started = time.time()
        self.proc = spawn([binary(), "run", "--config", str(conf)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
        self.proc.wait(30)
        self.log.close()

    def stop(self):
        self.kill(signal.SIGTERM)

    def proc_status(self, key):
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def rss_kib(self):
        return self.proc_status("VmRSS")

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None


def digit_pngs():
    """Preview PNGs of the MNIST few-shot pool: {digit: [bytes, ...]}."""
    out = {}
    for d in sorted((DATA / "mnist-fewshot" / "preview").iterdir()):
        out[d.name] = [f.read_bytes() for f in sorted(d.glob("*.png"))]
    return out


def shipped_pngs():
    """The demo's images of shipped vision classes: [(label, bytes)] (samples of a class
    the model has: stored, never a new label to imprint)."""
    return [(f.stem, f.read_bytes()) for f in sorted((REPO / "demo" / "samples" / "vision").glob("*.png"))]


def sample(id_, label, png):
    return json.dumps({"id": id_, "label": label, "data": base64.b64encode(png).decode()})


def state_of(m):
    return (jload(m.payload) or {}) if m else {}


def is_training(states, kind=None, since_ms=0):
    def pred(m):
        s = jload(m.payload) or {}
        return (s.get("state") in states and (kind is None or s.get("kind") == kind)
                and s.get("ts", 0) >= since_ms)
    return pred


def current_version(state_dir, model="vision"):
    """The registry's `current` pointer (0: nothing promoted, the shipped package)."""
    p = Path(state_dir) / "models" / model / "current"
    try:
        return int(p.read_text().strip())
    except (OSError, ValueError):
        return 0


def temporaries(state_dir):
    """Files and folders under the state folder whose name marks them temporary."""
    out = []
    for root, dirs, files in os.walk(state_dir):
        for n in dirs + files:
            if ".tmp" in n:
                out.append(str(Path(root, n).relative_to(state_dir)))
    return sorted(out)


def git_commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":!RELIABILITY.md"],
                               cwd=REPO).returncode != 0
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pick(rng, xs):
    return xs[rng.randrange(len(xs))]


RNG = random.Random(1)
