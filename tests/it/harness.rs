//! Real components for the daemon tests: a mosquitto broker on a free loopback port (with a
//! password file), the daemon binary as a child process, and subscriptions through
//! `mosquitto_sub`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "edge";
pub const PASSWORD: &str = "s3cret-pass";

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// mosquitto as a child process; killed on drop.
pub struct Mosquitto {
    pub port: u16,
    conf: PathBuf,
    tls: bool,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Start with `allow_anonymous false` and one user ([`USER`] / [`PASSWORD`]).
    pub fn start() -> Mosquitto {
        Self::start_with(false, None, &[])
    }

    /// Like [`Mosquitto::start`], with the ACL file `acl` and more users (name, password).
    pub fn start_with_acl(acl: &Path, users: &[(&str, &str)]) -> Mosquitto {
        Self::start_with(false, Some(acl), users)
    }

    /// Like [`Mosquitto::start`], bridged to `remote` (as a mosquitto bridge: one
    /// connection from this broker to it, with the password user) for `topic` both ways at
    /// QoS 1.
    pub fn start_bridged(remote: &Mosquitto, topic: &str) -> Mosquitto {
        let mut m = Self::start_with(false, None, &[]);
        m.stop();
        let bridge = format!(
            "connection bridge-{}\naddress 127.0.0.1:{}\nremote_username {USER}\nremote_password {PASSWORD}\ntopic {topic} both 1\ncleansession true\nrestart_timeout 1\n",
            remote.port, remote.port
        );
        let mut text = std::fs::read_to_string(&m.conf).expect("conf");
        text.push_str(&bridge);
        std::fs::write(&m.conf, text).expect("conf");
        m.spawn();
        m
    }

    /// Like [`Mosquitto::start`], with a TLS listener whose certificate (for `localhost`
    /// and 127.0.0.1) is signed by a fresh CA at [`Mosquitto::ca_file`].
    pub fn start_tls() -> Mosquitto {
        Self::start_with(true, None, &[])
    }

    /// The CA that signs the TLS listener's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self._dir.path().join("ca.pem"))
    }

    fn start_with(tls: bool, acl: Option<&Path>, users: &[(&str, &str)]) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let pw = dir.path().join("passwd");
        let made = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&pw)
            .args([USER, PASSWORD])
            .status()
            .expect("mosquitto_passwd (apt package mosquitto; scripts/setup.sh installs it)");
        assert!(made.success());
        for (user, password) in users {
            let added = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&pw)
                .args([user, password])
                .status()
                .expect("mosquitto_passwd");
            assert!(added.success());
        }
        let conf = dir.path().join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\nlog_dest file {}\n",
            pw.display(),
            dir.path().join("mosquitto.log").display()
        );
        if let Some(acl) = acl {
            text.push_str(&format!("acl_file {}\n", acl.display()));
        }
        if tls {
            // Started as root, mosquitto would switch to its own user, which cannot read
            // the key in this private temporary folder (no effect when not root).
            text.push_str("user root\n");
            make_certificates(dir.path());
            let p = |f: &str| dir.path().join(f).display().to_string();
            text.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                p("ca.pem"),
                p("server.pem"),
                p("server.key")
            ));
        }
        std::fs::write(&conf, text).expect("conf");
        let mut m = Mosquitto {
            port,
            conf,
            tls,
            child: None,
            _dir: dir,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt package mosquitto; scripts/setup.sh installs it)");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "mosquitto did not listen on {}",
            self.port
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn sub_command(&self, topic: &str, count: usize, timeout: Duration) -> Command {
        let mut cmd = Command::new("mosquitto_sub");
        if let Some(ca) = self.ca_file() {
            cmd.args(["-h", "localhost", "--cafile"]).arg(ca);
        } else {
            cmd.args(["-h", "127.0.0.1"]);
        }
        cmd.args(["-p", &self.port.to_string()])
            .args(["-u", USER, "-P", PASSWORD, "-t", topic, "-v"])
            .args(["-C", &count.to_string()])
            .args(["-W", &timeout.as_secs().max(1).to_string()]);
        cmd
    }

    /// `mosquitto_sub` for up to `count` messages on `topic` within `timeout`; returns
    /// `(topic, payload)` pairs (retained messages included).
    pub fn sub(&self, topic: &str, count: usize, timeout: Duration) -> Vec<(String, String)> {
        let out = self
            .sub_command(topic, count, timeout)
            .output()
            .expect("mosquitto_sub (apt package mosquitto-clients)");
        parse_lines(&out.stdout)
    }

    /// Like [`Mosquitto::sub`], but subscribed now and collected later with [`collect`]
    /// (for messages published before the caller looks).
    pub fn sub_background(&self, topic: &str, count: usize, timeout: Duration) -> Child {
        let child = self
            .sub_command(topic, count, timeout)
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (apt package mosquitto-clients)");
        std::thread::sleep(Duration::from_millis(500));
        child
    }

    /// Poll a retained topic until its payload satisfies `pred` (or the timeout passes).
    pub fn wait_retained(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some((_, p)) = self.sub(topic, 1, Duration::from_secs(2)).pop()
                && pred(&p)
            {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The daemon binary running a config file; killed on drop. Its log is kept in a file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `config` is TOML; `state_dir` is set to a fresh temporary folder.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        Self::start_with_state(dir, &state, config, env)
    }

    /// Like [`Daemon::start`] with a given `state_dir` (kept across restarts).
    pub fn start_in(state: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_with_state(dir, state, config, env)
    }

    fn start_with_state(
        dir: tempfile::TempDir,
        state: &std::path::Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let conf = dir.path().join("config.toml");
        let _ = std::fs::create_dir_all(state);
        std::fs::write(state.join(".marker"), b"").expect("state dir");
        let state = state.to_path_buf();
        std::fs::write(
            &conf,
            format!("state_dir = \"{}\"\n{config}", state.display()),
        )
        .expect("config");
        let log = dir.path().join("daemon.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lsskd-edge"));
        cmd.arg("run")
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn lsskd-edge run");
        Daemon {
            child,
            log,
            state,
            _dir: dir,
        }
    }

    /// The daemon's `state_dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_pub` one message (QoS 1).
pub fn publish(port: u16, topic: &str, payload: &str) -> bool {
    publish_with(port, topic, payload, &[])
}

/// `mosquitto_pub` one message (QoS 1) with extra flags (`-r`: retained; an empty retained
/// message clears the topic).
pub fn publish_with(port: u16, topic: &str, payload: &str, flags: &[&str]) -> bool {
    let mut cmd = std::process::Command::new("mosquitto_pub");
    if payload.is_empty() {
        cmd.arg("-n");
    } else {
        cmd.args(["-m", payload]);
    }
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", USER, "-P", PASSWORD, "-q", "1", "-t", topic])
        .args(flags)
        .status()
        .expect("mosquitto_pub (apt package mosquitto-clients)")
        .success()
}

/// Device `it` with one pipeline `name`: the shipped vision model on images replayed from
/// `path` every 100 ms, publishing to the test broker on `port`.
pub fn replay_vision_config(name: &str, path: &str, port: u16) -> String {
    format!(
        "device_id = \"it\"\n[[pipeline]]\nname = \"{name}\"\nmodel = \"{}\"\n[pipeline.source]\nkind = \"replay_images\"\npath = \"{path}\"\ninterval_ms = 100\n\n{}",
        model("vision"),
        mqtt_section(port)
    )
}

/// `[mqtt]` for a test broker with the password user.
pub fn mqtt_section(port: u16) -> String {
    format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nreconnect_max_secs = 2\nhomeassistant_prefix = \"\"\n"
    )
}

pub fn model(kind: &str) -> String {
    crate::common::repo()
        .join("models")
        .join(kind)
        .display()
        .to_string()
}

pub fn samples(kind: &str) -> String {
    crate::common::repo()
        .join("demo/samples")
        .join(kind)
        .display()
        .to_string()
}

/// Every file under `dir` (none when it does not exist).
pub fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Milliseconds since the Unix epoch (the `ts` of the daemon's messages).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn parse_lines(stdout: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

/// Wait for a [`Mosquitto::sub_background`] subscriber and return what it received.
pub fn collect(child: Child) -> Vec<(String, String)> {
    let out = child.wait_with_output().expect("mosquitto_sub");
    parse_lines(&out.stdout)
}

/// A CA, and a server certificate for `localhost` / 127.0.0.1 signed by it (openssl).
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lsskd-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// The stable state shown after each of the last `frames` predictions (frames or audio
/// windows, by capture id): the last `state` message at or before it.
pub fn shown_states(messages: &[(String, String)], frames: usize) -> Vec<String> {
    let preds: Vec<serde_json::Value> = messages
        .iter()
        .filter(|(t, _)| t.ends_with("/prediction"))
        .map(|(_, p)| json(p))
        .collect();
    let last = preds
        .iter()
        .filter_map(|p| p["capture_id"].as_u64())
        .max()
        .expect("predictions");
    let mut preds: Vec<_> = preds
        .into_iter()
        .filter(|p| {
            p["capture_id"]
                .as_u64()
                .is_some_and(|id| id + frames as u64 > last)
        })
        .collect();
    preds.sort_by_key(|p| p["capture_id"].as_u64());
    assert_eq!(preds.len(), frames, "a prediction for every frame");
    let states: Vec<serde_json::Value> = messages
        .iter()
        .filter(|(t, _)| t.ends_with("/state"))
        .map(|(_, p)| json(p))
        .collect();
    let (mut k, mut shown) = (0, String::new());
    preds
        .iter()
        .map(|p| {
            while k < states.len() && states[k]["ts"].as_u64() <= p["ts"].as_u64() {
                shown = states[k]["label"].as_str().unwrap_or_default().to_string();
                k += 1;
            }
            shown.clone()
        })
        .collect()
}
