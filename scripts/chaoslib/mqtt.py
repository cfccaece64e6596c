"""A minimal MQTT 3.1.1 client on the standard library: one socket, one reader thread that
stamps every PUBLISH with `time.time()` the moment it is parsed (no subprocess pipe in
between), the retain flag kept, and reconnection every 10 ms while the broker is away.

Only what the harness needs: clean sessions, no keep-alive, SUBSCRIBE at QoS 1 (PUBACKs
sent), PUBLISH at QoS 0 or 1 (PUBACKs read and ignored: the daemon acks samples itself).
"""
import socket
import struct
import threading
import time
from dataclasses import dataclass
from itertools import count


@dataclass
class Msg:
    at: float          # arrival, time.time()
    topic: str
    payload: str
    retain: bool


def _enc_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _enc_len(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


_ids = count(1)


class Client:
    """Subscribes to `topics` on every (re)connection; `messages` grows as they arrive."""

    def __init__(self, port, topics=(), reconnect=True, name="chaos"):
        self.port = port
        self.topics = list(topics)
        self.reconnect = reconnect
        self.client_id = f"{name}-{next(_ids)}-{time.monotonic_ns() % 100000}"
        self.messages = []
        self.lock = threading.Lock()
        self.sock = None
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.closed = False
        self.connects = 0
        self._pid = 1
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # ---- connection -------------------------------------------------------------------
    def _connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        var = _enc_str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)
        body = var + _enc_str(self.client_id)
        s.sendall(bytes([0x10]) + _enc_len(len(body)) + body)
        head = _recv_exact(s, 4)
        if head[0] != 0x20 or head[3] != 0:
            s.close()
            raise ConnectionError(f"CONNACK refused: {head!r}")
        s.settimeout(None)
        self.sock = s
        self.connects += 1
        self.subscribed.clear()
        if self.topics:
            pid = self._next_pid()
            body = struct.pack("!H", pid) + b"".join(_enc_str(t) + b"\x01" for t in self.topics)
            self._send(bytes([0x82]) + _enc_len(len(body)) + body)
        else:
            self.subscribed.set()
        self.connected.set()

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _send(self, data):
        with self._send_lock:
            self.sock.sendall(data)

    def _run(self):
        while not self.closed:
            try:
                self._connect()
            except OSError:
                if not self.reconnect:
                    self.closed = True
                    return
                time.sleep(0.01)
                continue
            try:
                self._read(self.sock)
            except (OSError, ConnectionError):
                pass
            self.connected.clear()
            self.subscribed.clear()
            try:
                self.sock.close()
            except OSError:
                pass
            if not self.reconnect:
                self.closed = True
                return

    def _read(self, s):
        while not self.closed:
            first = _recv_exact(s, 1)[0]
            mult, length = 1, 0
            while True:
                b = _recv_exact(s, 1)[0]
                length += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    break
            body = _recv_exact(s, length) if length else b""
            kind = first >> 4
            if kind == 3:  # PUBLISH
                at = time.time()
                qos = (first >> 1) & 3
                tlen = struct.unpack("!H", body[:2])[0]
                topic = body[2:2 + tlen].decode(errors="replace")
                pos = 2 + tlen
                if qos:
                    pid = body[pos:pos + 2]
                    pos += 2
                    self._send(bytes([0x40, 2]) + pid)
                msg = Msg(at, topic, body[pos:].decode(errors="replace"), bool(first & 1))
                with self.lock:
                    self.messages.append(msg)
            elif kind == 9:  # SUBACK
                self.subscribed.set()

    # ---- use --------------------------------------------------------------------------
    def wait_ready(self, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            if self.subscribed.wait(0.05):
                return True
        return False

    def publish(self, topic, payload, qos=1, retain=False):
        """Send one message; False when not connected (nothing is queued)."""
        if not self.connected.is_set():
            return False
        p = payload.encode() if isinstance(payload, str) else payload
        var = _enc_str(topic) + (struct.pack("!H", self._next_pid()) if qos else b"")
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        try:
            self._send(bytes([first]) + _enc_len(len(var) + len(p)) + var + p)
            return True
        except OSError:
            return False

    def since(self, t, suffix=None, pred=None):
        with self.lock:
            msgs = list(self.messages)
        return [m for m in msgs if m.at >= t and (suffix is None or m.topic.endswith(suffix))
                and (pred is None or pred(m))]

    def wait(self, t, suffix, pred=None, timeout=10.0):
        """The first message arrived at or after `t` on a topic ending in `suffix` that
        satisfies `pred`; None after `timeout`."""
        end = time.time() + timeout
        seen = 0
        while True:
            with self.lock:
                fresh = self.messages[seen:]
                seen = len(self.messages)
            for m in fresh:
                if m.at >= t and m.topic.endswith(suffix) and (pred is None or pred(m)):
                    return m
            if time.time() >= end:
                return None
            time.sleep(0.005)

    def drop_before(self, t):
        """Forget messages that arrived before `t` (long runs)."""
        with self.lock:
            self.messages = [m for m in self.messages if m.at >= t]

    def close(self):
        self.closed = True
        self.reconnect = False
        s = self.sock
        if s is not None:
            try:
                s.sendall(b"\xe0\x00")
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
