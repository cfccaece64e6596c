"""What the end-to-end timeline scripts share (scripts/scene-timelines.py,
scripts/sound-timelines.py): a real daemon (`lsskd-edge run`, its embedded broker on a free
loopback port), teaching it by `lsskd-edge sample send` and an `adapt` command, and reading
what it publishes with mosquitto_sub."""
import json
import os
import select
import socket
import subprocess
import time


def arguments(ap):
    """The arguments both timeline scripts take: the binary, the model package, the data
    set and its split, the samples a class is taught with, the work folder."""
    ap.add_argument("--bin", default="target/debug/lsskd-edge")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--shot", type=int, default=5, help="samples taught a class")
    ap.add_argument("--work", help="the folder of the daemons' state and logs (default: a new one)")
    return ap


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mqtt_section(port):
    return f"""[mqtt]
host = "127.0.0.1"
port = {port}
embedded_broker = true
homeassistant_prefix = ""
"""


def start(bin_, cfg_path, log_path):
    log = open(log_path, "a")
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    return subprocess.Popen([bin_, "run", "--config", cfg_path], stdout=log, stderr=log, env=env)


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the daemon's broker never listened on {port}")


def wait_card(port, device, model_name, timeout_s=60):
    """The broker listens before the daemon has subscribed (a sample published then reaches
    no one): wait for the model's card, which the daemon publishes after subscribing."""
    subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-C", "1", "-W", str(timeout_s),
                    "-t", f"lsskd/{device}/model/{model_name}/info"], capture_output=True)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def send(bin_, cfg, port, model_name, label, files):
    """Each file as a sample of `label` (`lsskd-edge sample send`, which waits for the acks)."""
    cmd = [bin_, "sample", "send", "--config", cfg, "--model", model_name,
           "--label", label, "--port", str(port)]
    r = subprocess.run(cmd + files, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"sample send failed for {label}:\n{r.stdout}{r.stderr}")


def adapt(port, device, model_name, timeout_s=600):
    """`adapt` (the fine-tune the first samples started may not have had them all), then
    wait for its outcome: "promoted", or "rejected (reason)" / "failed (reason)"."""
    asked = int(time.time() * 1000)
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-W", str(timeout_s),
                            "-t", f"lsskd/{device}/training/state"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port),
                    "-t", f"lsskd/{device}/model/{model_name}/cmd", "-m", "adapt"], check=True)
    for line in sub.stdout:
        st = json.loads(line)
        if st["ts"] >= asked and st["state"] in ("promoted", "rejected", "failed") and not st.get("queued"):
            sub.kill()
            return st["state"] + ("" if st["state"] == "promoted" else f" ({st.get('reason', '')[:80]})")
    raise SystemExit(f"no training outcome for {model_name}")


def subscribe(port, topics, wait_s, count):
    """mosquitto_sub -v on `topics`, for at most `wait_s` seconds and `count` messages."""
    cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-v", "-W", str(wait_s),
           "-C", str(count)]
    for t in topics:
        cmd += ["-t", t]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def collect(sub, quiet_s=3.0, until=None):
    """(topic, payload) of each message until none came for `quiet_s` after the first (a
    replay that played once), or `until()` says done."""
    messages, quiet, first = [], 0.0, None
    while quiet < quiet_s and not (until and first and until(first)):
        ready, _, _ = select.select([sub.stdout], [], [], 0.5)
        if not ready:
            quiet += 0.5 if messages else 0.0
            continue
        line = sub.stdout.readline()
        if not line:
            break
        quiet = 0.0
        first = first or time.time()
        topic, _, payload = line.strip().partition(" ")
        messages.append((topic, payload))
    sub.kill()
    return messages
