//! A class offer: what one device sends the fleet so that others can learn a label, and
//! the checks a receiver makes before it uses any of it.
//!
//! On the wire (topics in `mqtt::topics`, all retained, QoS 1): a signed [`Envelope`]
//! around the manifest ([`OfferBody`]: label, origin, counter, expiry, and each part's size
//! and SHA-256), then each part in chunks of at most [`MAX_CHUNK`] bytes, so that no
//! message comes near a broker's packet limit (EMQX: 1 MiB by default; ours stay under
//! 256 KiB with the topic). Parts are the label's samples as the origin stored them (PNG,
//! JPEG or WAV) and, optionally, its imprint rows.
//!
//! A receiver opens an envelope in this order, refusing at the first failed check with a
//! [`Refusal`]: the key is one it trusts; `verify_strict` of the signature over the body's
//! exact bytes; only then the body is parsed; it names that key as its origin, the
//! receiver's family, an unexpired time; its counter is above every counter seen from that
//! origin for that label ([`ReplayGuard`]). The parts are then checked against the
//! manifest's digests as they are put together ([`Assembly`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::{DeviceKey, PublicKey};
use super::{FleetError, io};
use crate::durable::{Fs, StdFs, create_dir_all, parent_of, write_atomic};

/// Bytes of one chunk at most.
pub const MAX_CHUNK: usize = 192 * 1024;
/// Bytes of an envelope at most (a manifest of many parts is a few KiB).
pub const MAX_ENVELOPE: usize = 64 * 1024;
/// The manifest's format.
pub const OFFER_VERSION: u32 = 1;

/// What a part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    /// One stored sample of the label (its file's bytes; `name` keeps the extension).
    Sample,
    /// The label's rows of the origin's imprinted head (JSON).
    Imprint,
}

/// One part of an offer, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub name: String,
    pub kind: PartKind,
    pub bytes: usize,
    pub sha256: String,
    pub chunks: usize,
}

impl Part {
    /// The manifest's entry for `bytes`.
    pub fn of(name: &str, kind: PartKind, bytes: &[u8]) -> Part {
        Part {
            name: name.into(),
            kind,
            bytes: bytes.len(),
            sha256: hex::encode(Sha256::digest(bytes)),
            chunks: bytes.len().div_ceil(MAX_CHUNK).max(1),
        }
    }
}

/// Where an offer comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub device: String,
    /// Its public key (`ed25519:…`): must be the key that signed.
    pub key: String,
    /// The origin's model version that holds the label.
    pub version: u32,
}

/// The signed manifest of an offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferBody {
    pub v: u32,
    /// The shipped model's family (the shipped `model.onnx`'s SHA-256, hex).
    pub family: String,
    /// The model's name on the origin (receivers use theirs of the same family).
    pub model: String,
    pub label: String,
    pub origin: Origin,
    /// The origin's offer counter: higher than every offer it made before.
    pub counter: u64,
    pub issued_ms: u64,
    pub expires_ms: u64,
    /// `true`: the origin forgot the label; receivers roll it out through their own gate.
    #[serde(default)]
    pub retract: bool,
    pub parts: Vec<Part>,
    /// The origin's own gate evidence for the version (as its verdict reported it).
    #[serde(default)]
    pub evidence: serde_json::Value,
}

/// The message on the manifest topic: the key, the body's exact bytes and the signature
/// over them (both base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub key: String,
    pub body: String,
    pub sig: String,
}

impl Envelope {
    /// Sign `body` with `key`.
    pub fn seal(key: &DeviceKey, body: &OfferBody) -> Envelope {
        let bytes = serde_json::to_vec(body).expect("an offer body serialises");
        Envelope {
            key: key.public().to_string(),
            sig: STANDARD.encode(key.sign(&bytes).to_bytes()),
            body: STANDARD.encode(bytes),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope serialises")
    }
}

/// Why an offer was refused; each is counted and logged by its [`Refusal::kind`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("not a signed offer: {0}")]
    Malformed(String),
    #[error("signed by {0}, which is not among this device's trusted keys (fleet.trusted)")]
    UnknownKey(String),
    #[error("the signature does not verify with {0}: the offer was altered or not signed by it")]
    BadSignature(String),
    #[error("for the model family {got}, not this device's ({want})")]
    OtherFamily { got: String, want: String },
    #[error("expired at {expires_ms} (now {now_ms})")]
    Expired { expires_ms: u64, now_ms: u64 },
    #[error("replayed: counter {counter} of `{label}` from {key}, which already offered {seen}")]
    Replayed {
        key: String,
        label: String,
        counter: u64,
        seen: u64,
    },
    #[error("part `{part}` does not match the signed manifest: {why}")]
    Tampered { part: String, why: String },
}

impl Refusal {
    /// A short name per kind, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownKey(_) => "unknown_key",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::OtherFamily { .. } => "other_family",
            Refusal::Expired { .. } => "expired",
            Refusal::Replayed { .. } => "replayed",
            Refusal::Tampered { .. } => "tampered",
        }
    }
}

/// The keys a device accepts offers from.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: BTreeSet<[u8; 32]>,
}

impl Trust {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Trust {
        Trust {
            keys: keys.into_iter().map(|k| k.0.to_bytes()).collect(),
        }
    }

    fn trusts(&self, k: &PublicKey) -> bool {
        self.keys.contains(&k.0.to_bytes())
    }

    /// The envelope's body, if every check passes (see the module's doc), for `family` at
    /// `now_ms`. Replay is checked apart ([`ReplayGuard`]): it needs the device's memory.
    pub fn open(&self, message: &[u8], family: &str, now_ms: u64) -> Result<OfferBody, Refusal> {
        if message.len() > MAX_ENVELOPE {
            return Err(Refusal::Malformed(format!(
                "{} bytes, an envelope has at most {MAX_ENVELOPE}",
                message.len()
            )));
        }
        let env: Envelope =
            serde_json::from_slice(message).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let key: PublicKey = env.key.parse().map_err(Refusal::Malformed)?;
        if !self.trusts(&key) {
            return Err(Refusal::UnknownKey(env.key));
        }
        let bad_sig = || Refusal::BadSignature(env.key.clone());
        let sig = STANDARD.decode(&env.sig).map_err(|_| bad_sig())?;
        let sig = Signature::from_slice(&sig).map_err(|_| bad_sig())?;
        let body = STANDARD.decode(&env.body).map_err(|_| bad_sig())?;
        key.verifying_key()
            .verify_strict(&body, &sig)
            .map_err(|_| bad_sig())?;
        // Signed by a trusted key: now the body may be read.
        let body: OfferBody =
            serde_json::from_slice(&body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if body.v != OFFER_VERSION {
            return Err(Refusal::Malformed(format!(
                "manifest version {}, this device reads {OFFER_VERSION}",
                body.v
            )));
        }
        if body.origin.key != env.key {
            return Err(Refusal::Malformed(format!(
                "the manifest names {} as its origin but {} signed it",
                body.origin.key, env.key
            )));
        }
        if body.family != family {
            return Err(Refusal::OtherFamily {
                got: body.family,
                want: family.into(),
            });
        }
        if now_ms >= body.expires_ms {
            return Err(Refusal::Expired {
                expires_ms: body.expires_ms,
                now_ms,
            });
        }
        Ok(body)
    }
}

/// The highest counter seen per origin and label, kept in `<state_dir>/fleet/seen.json`
/// (written atomically), so that a replayed older offer is refused after a restart too.
#[derive(Debug)]
pub struct ReplayGuard {
    path: PathBuf,
    seen: BTreeMap<String, u64>,
}

impl ReplayGuard {
    pub fn open(state_dir: &Path) -> Result<ReplayGuard, FleetError> {
        let path = state_dir.join("fleet").join("seen.json");
        let seen = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| FleetError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(ReplayGuard { path, seen })
    }

    fn key_of(body: &OfferBody) -> String {
        format!("{} {}", body.origin.key, body.label)
    }

    /// Whether the offer is new (`Ok(true)`) or the one of this origin and label already
    /// acted on (`Ok(false)`: the same counter, as a broker delivers a retained offer again
    /// after a restart); refused when a higher counter was acted on before.
    pub fn check(&self, body: &OfferBody) -> Result<bool, Refusal> {
        match self.seen.get(&Self::key_of(body)) {
            Some(&seen) if body.counter < seen => Err(Refusal::Replayed {
                key: body.origin.key.clone(),
                label: body.label.clone(),
                counter: body.counter,
                seen,
            }),
            Some(&seen) => Ok(body.counter > seen),
            None => Ok(true),
        }
    }

    /// Remember `body`'s counter (durably, before the offer is acted on).
    pub fn record(&mut self, body: &OfferBody) -> Result<(), FleetError> {
        let k = Self::key_of(body);
        let top = self.seen.get(&k).copied().unwrap_or(0).max(body.counter);
        self.seen.insert(k, top);
        // Not a secret: the store's own atomic write (`durable`).
        let dir = parent_of(&self.path);
        let bytes = serde_json::to_vec(&self.seen).expect("a map of counters serialises");
        create_dir_all(&StdFs, dir).map_err(io(dir))?;
        write_atomic(&StdFs, &self.path, &self.path.with_extension("tmp"), &bytes)
            .map_err(io(&self.path))?;
        StdFs.sync_dir(dir).map_err(io(dir))
    }
}

/// An offer ready for the broker: its manifest, the envelope's bytes and every chunk of
/// every part as (part, chunk, bytes).
#[derive(Debug, Clone)]
pub struct Sealed {
    pub body: OfferBody,
    pub envelope: Vec<u8>,
    pub chunks: Vec<(usize, usize, Vec<u8>)>,
}

/// `body` (its `parts` replaced by the manifest of `parts`) signed by `key`, with its chunks.
pub fn seal(key: &DeviceKey, mut body: OfferBody, parts: &[(String, PartKind, Vec<u8>)]) -> Sealed {
    body.parts = parts
        .iter()
        .map(|(name, kind, bytes)| Part::of(name, *kind, bytes))
        .collect();
    let chunks = parts
        .iter()
        .enumerate()
        .flat_map(|(p, (_, _, bytes))| {
            chunks(bytes)
                .into_iter()
                .enumerate()
                .map(move |(c, chunk)| (p, c, chunk.to_vec()))
        })
        .collect();
    Sealed {
        envelope: Envelope::seal(key, &body).to_bytes(),
        body,
        chunks,
    }
}

/// `bytes` cut into the chunks of [`Part::of`]'s count (at least one, maybe empty).
pub fn chunks(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    bytes.chunks(MAX_CHUNK).collect()
}

/// An offer's parts with their bytes, each checked against the manifest.
pub type Parts = Vec<(Part, Vec<u8>)>;

/// An opened offer's parts as their chunks arrive, in any order.
#[derive(Debug)]
pub struct Assembly {
    pub body: OfferBody,
    chunks: Vec<Vec<Option<Vec<u8>>>>,
}

impl Assembly {
    pub fn new(body: OfferBody) -> Assembly {
        let chunks = body.parts.iter().map(|p| vec![None; p.chunks]).collect();
        Assembly { body, chunks }
    }

    /// Chunk `chunk` of part `part`; refused when the manifest has no such chunk or the
    /// chunk is larger than any chunk can be.
    pub fn add(&mut self, part: usize, chunk: usize, bytes: Vec<u8>) -> Result<(), Refusal> {
        let name = |p: usize| {
            self.body
                .parts
                .get(p)
                .map_or_else(|| format!("#{p}"), |p| p.name.clone())
        };
        let slot = self
            .chunks
            .get_mut(part)
            .and_then(|c| c.get_mut(chunk))
            .ok_or_else(|| Refusal::Tampered {
                part: name(part),
                why: format!("the manifest has no chunk {chunk} of it"),
            })?;
        if bytes.len() > MAX_CHUNK {
            return Err(Refusal::Tampered {
                part: name(part),
                why: format!("a chunk of {} bytes (at most {MAX_CHUNK})", bytes.len()),
            });
        }
        *slot = Some(bytes);
        Ok(())
    }

    /// Whether every chunk of every part has arrived.
    pub fn is_complete(&self) -> bool {
        self.chunks.iter().flatten().all(Option::is_some)
    }

    /// The parts, each checked against the manifest's size and digest; None while chunks
    /// are missing.
    pub fn parts(&self) -> Option<Result<Parts, Refusal>> {
        if !self.is_complete() {
            return None;
        }
        Some(
            self.body
                .parts
                .iter()
                .zip(&self.chunks)
                .map(|(p, c)| {
                    let bytes: Vec<u8> = c.iter().flatten().flatten().copied().collect();
                    let tampered = |why: String| Refusal::Tampered {
                        part: p.name.clone(),
                        why,
                    };
                    if bytes.len() != p.bytes {
                        return Err(tampered(format!(
                            "{} bytes, the manifest says {}",
                            bytes.len(),
                            p.bytes
                        )));
                    }
                    if hex::encode(Sha256::digest(&bytes)) != p.sha256 {
                        return Err(tampered("its SHA-256 differs from the manifest's".into()));
                    }
                    Ok((p.clone(), bytes))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAMILY: &str = "f00d";
    const NOW: u64 = 1_000_000;

    fn body(key: &DeviceKey, counter: u64, parts: &[(&str, &[u8])]) -> OfferBody {
        OfferBody {
            v: OFFER_VERSION,
            family: FAMILY.into(),
            model: "vision".into(),
            label: "cat".into(),
            origin: Origin {
                device: "porch".into(),
                key: key.public().to_string(),
                version: 3,
            },
            counter,
            issued_ms: NOW - 10,
            expires_ms: NOW + 1000,
            retract: false,
            parts: parts
                .iter()
                .map(|(n, b)| Part::of(n, PartKind::Sample, b))
                .collect(),
            evidence: serde_json::Value::Null,
        }
    }

    fn assemble(b: OfferBody, parts: &[&[u8]]) -> Result<Parts, Refusal> {
        let mut a = Assembly::new(b);
        for (p, bytes) in parts.iter().enumerate().rev() {
            for (c, chunk) in chunks(bytes).into_iter().enumerate().rev() {
                a.add(p, c, chunk.to_vec())?;
            }
        }
        a.parts().expect("complete")
    }

    #[test]
    fn a_signed_offer_from_a_trusted_key_opens_and_its_parts_assemble() {
        let porch = DeviceKey::from_seed([1; 32]);
        let big = vec![7u8; MAX_CHUNK * 2 + 5];
        let b = body(&porch, 1, &[("0.png", b"png bytes"), ("1.wav", &big)]);
        assert_eq!(b.parts[1].chunks, 3);
        let msg = Envelope::seal(&porch, &b).to_bytes();
        let trust = Trust::new([porch.public()]);
        let opened = trust.open(&msg, FAMILY, NOW).expect("opens");
        assert_eq!(opened, b);
        let parts = assemble(opened, &[b"png bytes", &big]).expect("assembles");
        assert_eq!(parts[1].1, big);
        assert!(chunks(&big).iter().all(|c| c.len() <= MAX_CHUNK));
    }

    #[test]
    fn an_untrusted_key_a_flipped_byte_another_family_and_an_expired_offer_are_refused() {
        let porch = DeviceKey::from_seed([1; 32]);
        let stranger = DeviceKey::from_seed([2; 32]);
        let trust = Trust::new([porch.public()]);
        let b = body(&porch, 1, &[("0.png", b"png bytes")]);

        let foreign = Envelope::seal(&stranger, &body(&stranger, 1, &[])).to_bytes();
        let e = trust.open(&foreign, FAMILY, NOW).expect_err("untrusted");
        assert_eq!(e.kind(), "unknown_key", "{e}");

        // Every single flipped bit of the signed body is caught by the signature.
        let env = Envelope::seal(&porch, &b);
        let mut raw = STANDARD.decode(&env.body).expect("b64");
        for i in [0, raw.len() / 2, raw.len() - 1] {
            raw[i] ^= 1;
            let forged = Envelope {
                body: STANDARD.encode(&raw),
                ..env.clone()
            };
            let e = trust
                .open(&forged.to_bytes(), FAMILY, NOW)
                .expect_err("flipped");
            assert_eq!(e.kind(), "bad_signature", "{e}");
            raw[i] ^= 1;
        }
        // A signature lifted onto another key's envelope does not verify either.
        let swapped = Envelope {
            key: stranger.public().to_string(),
            ..env.clone()
        };
        let both = Trust::new([porch.public(), stranger.public()]);
        let e = both
            .open(&swapped.to_bytes(), FAMILY, NOW)
            .expect_err("swapped");
        assert_eq!(e.kind(), "bad_signature", "{e}");

        let e = trust
            .open(&env.to_bytes(), "beef", NOW)
            .expect_err("family");
        assert_eq!(e.kind(), "other_family", "{e}");
        let e = trust
            .open(&env.to_bytes(), FAMILY, NOW + 1000)
            .expect_err("expired");
        assert_eq!(e.kind(), "expired", "{e}");
        let e = trust
            .open(b"{\"key\":1}", FAMILY, NOW)
            .expect_err("garbage");
        assert_eq!(e.kind(), "malformed", "{e}");
    }

    #[test]
    fn a_manifest_naming_another_origin_than_its_signer_is_refused() {
        let porch = DeviceKey::from_seed([1; 32]);
        let garden = DeviceKey::from_seed([3; 32]);
        let mut b = body(&porch, 1, &[]);
        b.origin.key = garden.public().to_string();
        let msg = Envelope::seal(&porch, &b).to_bytes();
        let e = Trust::new([porch.public(), garden.public()])
            .open(&msg, FAMILY, NOW)
            .expect_err("mismatch");
        assert_eq!(e.kind(), "malformed", "{e}");
        assert!(e.to_string().contains("signed it"), "{e}");
    }

    #[test]
    fn a_replayed_older_offer_is_refused_even_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let porch = DeviceKey::from_seed([1; 32]);
        let mut guard = ReplayGuard::open(dir.path()).expect("open");
        let (old, new) = (body(&porch, 4, &[]), body(&porch, 5, &[]));
        assert_eq!(guard.check(&new), Ok(true), "first");
        guard.record(&new).expect("record");
        let guard = ReplayGuard::open(dir.path()).expect("reopen");
        let e = guard.check(&old).expect_err("older");
        assert_eq!(e.kind(), "replayed", "{e}");
        assert_eq!(
            guard.check(&new),
            Ok(false),
            "the same offer again: already acted on"
        );
        let mut other = body(&porch, 1, &[]);
        other.label = "dog".into();
        assert_eq!(
            guard.check(&other),
            Ok(true),
            "another label has its own counter"
        );
    }

    #[test]
    fn a_part_that_differs_from_the_manifest_is_refused_by_name() {
        let porch = DeviceKey::from_seed([1; 32]);
        let b = body(&porch, 1, &[("0.png", b"png bytes"), ("1.png", b"other")]);
        let e = assemble(b.clone(), &[b"png bytes", b"otheR"]).expect_err("digest");
        assert_eq!(e.kind(), "tampered");
        assert!(e.to_string().contains("`1.png`"), "{e}");
        let e = assemble(b.clone(), &[b"png byte", b"other"]).expect_err("size");
        assert!(
            e.to_string().contains("8 bytes, the manifest says 9"),
            "{e}"
        );
        let mut a = Assembly::new(b);
        assert!(a.parts().is_none(), "incomplete");
        let e = a.add(0, 5, vec![]).expect_err("no such chunk");
        assert!(e.to_string().contains("no chunk 5"), "{e}");
    }
}
