#!/usr/bin/env bash
# The amd64 .deb in a real systemd: boots systemd in systemd-nspawn over an overlay of this
# machine's root (nothing on the host changes), installs the package, and checks that
#   1. the service is enabled and becomes active (running), serving the shipped models on
#      replay sources (a replay config dropped into /etc/lsskd-edge/config.toml);
#   2. when a pipeline hangs (its camera source blocked in a read), the daemon withholds
#      the watchdog ping, and systemd kills and restarts it;
#   3. `dpkg --purge` removes it cleanly: unit, binary, conffile, state and group gone.
# It also checks that the settings are installed 0640 root:lsskd-config (they may hold the
# MQTT password) and that the service, a dynamic user in that group, still reads them.
# Root and systemd-nspawn (package systemd-container) are needed; without them it says so
# and exits 0. Usage: scripts/test-package.sh PATH/TO/lsskd-edge_*_amd64.deb
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(realpath "$1")
if [ "$(id -u)" -ne 0 ] || ! command -v systemd-nspawn >/dev/null; then
  echo "SKIP package test: needs root and systemd-nspawn (apt package systemd-container)"
  exit 0
fi
if [ -z "${LSSKD_IN_NS:-}" ]; then
  # A private mount namespace: the overlay disappears with it.
  exec env LSSKD_IN_NS=1 unshare -m --propagation private "$0" "$@"
fi

work=$(mktemp -d /tmp/lsskd-pkg.XXXXXX)
mount -t tmpfs tmpfs "$work"
mkdir -p "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
root=$work/root
# Inside the overlay only: let maintainer scripts start services, and use a hostname of
# its own.
rm -f "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/opt/lsskd-pkg" && cp "$deb" "$root/opt/lsskd-pkg/lsskd-edge.deb"
mkdir -p "$root/opt/lsskd-replay"
cp -r demo/samples/vision demo/samples/audio "$root/opt/lsskd-replay/"

systemd-nspawn -D "$root" -b --register=no --keep-unit --console=pipe \
  --machine=lsskd-pkg-test </dev/null >"$work/console.log" 2>&1 &
nspawn=$!
cleanup() {
  kill "$nspawn" 2>/dev/null || true
  wait "$nspawn" 2>/dev/null || true
}
trap cleanup EXIT

# The container's PID 1 is the child of nspawn that runs systemd. (nspawn first forks a
# short-lived helper, so its first child is not necessarily PID 1: wait for `systemd`.)
pid1=""
for _ in $(seq 300); do
  for c in $(pgrep -P "$nspawn" || true); do
    [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && pid1=$c
  done
  [ -n "$pid1" ] && break
  kill -0 "$nspawn" 2>/dev/null || break
  sleep 0.1
done
[ -n "$pid1" ] || { echo "FAIL: systemd-nspawn did not start systemd"; cat "$work/console.log"; exit 1; }
in_c() { nsenter -t "$pid1" -a -- "$@"; }
# Whether the output of a command in the container matches a pattern. (Not `cmd | grep -q`:
# grep stops at the first match, the command gets SIGPIPE, and with pipefail a long
# journal then reads as no match.)
in_c_has() {
  local pattern=$1; shift
  in_c "$@" > "$work/out.txt" 2>&1 || true
  grep -qi -- "$pattern" "$work/out.txt"
}
state=""
for _ in $(seq 120); do
  state=$(in_c systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.5
done
case "$state" in
  running|degraded) ;;
  *) echo "FAIL: the container's systemd did not come up (state '$state')"; cat "$work/console.log"; exit 1 ;;
esac
echo "container systemd: $state"

fail() {
  echo "FAIL: $*"
  in_c systemctl status lsskd-edge --no-pager || true
  in_c journalctl -u lsskd-edge --no-pager -n 60 || true
  exit 1
}

# 1. Install: enabled and started by the maintainer scripts.
in_c dpkg -i /opt/lsskd-pkg/lsskd-edge.deb
in_c_has '^enabled$' systemctl is-enabled lsskd-edge || fail "not enabled on install"
in_c test -f /usr/share/lsskd-edge/models/vision/model.onnx || fail "models missing"
in_c test -d /usr/share/lsskd-edge/models/vision/gate || fail "gate set missing"
# The settings may hold the MQTT password: 0640 root:lsskd-config, not for other users.
mode=$(in_c stat -c '%a %U:%G' /etc/lsskd-edge/config.toml)
[ "$mode" = "640 root:lsskd-config" ] || fail "config.toml is $mode, not 640 root:lsskd-config"
in_c setpriv --reuid=nobody --regid=nogroup --clear-groups cat /etc/lsskd-edge/config.toml \
  >/dev/null 2>&1 && fail "another user can read config.toml"
echo "settings: $mode, unreadable by other users"
cat >"$root/etc/lsskd-edge/config.toml" <<'TOML'
device_id = "pkgtest"
state_dir = "/var/lib/lsskd-edge"
models_dir = "/usr/share/lsskd-edge/models"
[[pipeline]]
name = "camera"
model = "vision"
[pipeline.source]
kind = "replay_images"
path = "/opt/lsskd-replay/vision"
interval_ms = 200
[[pipeline]]
name = "microphone"
model = "audio"
[pipeline.source]
kind = "replay_audio"
path = "/opt/lsskd-replay/audio"
[mqtt]
host = "127.0.0.1"
port = 1
TOML
in_c systemctl restart lsskd-edge
for _ in $(seq 60); do
  status=$(in_c systemctl show lsskd-edge -p StatusText --value || true)
  case "$status" in *camera*inferences*) [ "${status#*(0 inferences}" = "$status" ] && break ;; esac
  sleep 1
done
in_c_has '^active$' systemctl is-active lsskd-edge || fail "not active"
in_c_has "active (running)" systemctl status lsskd-edge --no-pager || fail "not running"
echo "running: $status"
case "$status" in *"camera running ("[1-9]*) ;; *) fail "no inferences: $status" ;; esac

# 2. A hung pipeline: the camera's source blocks in a read that never returns (a FIFO
#    without a writer among the replay images, like a camera stuck in a device call); the
#    daemon sees it stalled and withholds WATCHDOG=1, so systemd kills it and starts it
#    again. The FIFO goes once the stall is reported, so the restarted daemon serves.
restarts0=$(in_c systemctl show lsskd-edge -p NRestarts --value)
mkfifo "$root/opt/lsskd-replay/vision/zz-hang.png"
in_c systemctl restart lsskd-edge
for _ in $(seq 30); do
  in_c_has "withholding the watchdog ping" journalctl -u lsskd-edge --no-pager && break
  sleep 1
done
in_c_has "withholding the watchdog ping" journalctl -u lsskd-edge --no-pager ||
  fail "the hung camera pipeline was not reported as stalled"
rm "$root/opt/lsskd-replay/vision/zz-hang.png"
for _ in $(seq 90); do
  restarts=$(in_c systemctl show lsskd-edge -p NRestarts --value)
  [ "$restarts" -gt "$restarts0" ] && break
  sleep 1
done
[ "$restarts" -gt "$restarts0" ] || fail "not restarted after its pipeline hung"
in_c_has "watchdog timeout" journalctl -u lsskd-edge --no-pager || fail "no watchdog timeout in the journal"
for _ in $(seq 30); do
  status=$(in_c systemctl show lsskd-edge -p StatusText --value || true)
  case "$status" in *"camera running ("[1-9]*) break ;; esac
  sleep 1
done
in_c_has '^active$' systemctl is-active lsskd-edge || fail "not active after the watchdog restart"
case "$status" in *"camera running ("[1-9]*) ;; *) fail "not serving after the watchdog restart: $status" ;; esac
echo "watchdog restart of a hung pipeline: NRestarts $restarts0 -> $restarts, serving again ($status)"

# 3. Purge: everything of it gone.
in_c test -d /var/lib/private/lsskd-edge -o -d /var/lib/lsskd-edge || fail "no state directory while running"
in_c dpkg --purge lsskd-edge
for f in /usr/bin/lsskd-edge /etc/lsskd-edge/config.toml /var/lib/lsskd-edge \
  /var/lib/private/lsskd-edge /usr/share/lsskd-edge; do
  in_c test -e "$f" && fail "$f left after purge"
done
in_c systemctl cat lsskd-edge >/dev/null 2>&1 && fail "unit left after purge"
in_c getent group lsskd-config >/dev/null && fail "group lsskd-config left after purge"
echo "PASS package test: installed, running, restarted by the watchdog, purged"
