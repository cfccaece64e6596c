//! Offers on disk, between their arrival and their outcome, and the device's own offer
//! counter.
//!
//! `<state_dir>/fleet/offers/<id>/` holds an offer that was opened and put together: the
//! envelope as it arrived (`envelope.json`, so its signature can be checked again when it is
//! read back) and each part's bytes (`part-<n>`). It is written into `.tmp-<id>/` and
//! renamed into place, so a folder that exists is whole; the trainer reads it back, checks
//! every part against the signed manifest again, and removes it once the offer's outcome is
//! decided. An offer waiting for a person (policy `ask`) stays here across restarts.
//!
//! `<state_dir>/fleet/counter` holds the counter of the last offer this device made: each
//! offer's counter is one above it, written before the offer is published, so that
//! receivers never see a counter twice.

use std::fs;
use std::path::{Path, PathBuf};

use super::offer::{OfferBody, Parts, Refusal, Trust};
use super::{FleetError, io};
use crate::durable::{Fs, StdFs, create_dir_all, parent_of, write_atomic};

/// An offer kept on disk.
#[derive(Debug, Clone)]
pub struct StoredOffer {
    /// Its folder's name: `<origin device>.<label>.<counter>`.
    pub id: String,
    /// The model here that it is for.
    pub model: String,
    pub body: OfferBody,
}

/// A kept offer as [`OfferStore::list`] reads it back: opened, or its id and why not.
pub type Listed = Result<StoredOffer, (String, Refusal)>;

/// The offers kept in a state directory.
#[derive(Debug, Clone)]
pub struct OfferStore {
    root: PathBuf,
}

const ENVELOPE: &str = "envelope.json";
const MODEL: &str = "model";

fn corrupt(path: &Path, message: impl ToString) -> FleetError {
    FleetError::Corrupt {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// A name made of `[A-Za-z0-9_-]` from any text (a device id may hold other characters).
pub fn safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .collect()
}

impl OfferStore {
    /// The store of `state_dir`; folders left half-written by a killed daemon are removed.
    pub fn open(state_dir: &Path) -> Result<OfferStore, FleetError> {
        let root = state_dir.join("fleet").join("offers");
        create_dir_all(&StdFs, &root).map_err(io(&root))?;
        for entry in fs::read_dir(&root).map_err(io(&root))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(OfferStore { root })
    }

    /// The folder name of an offer.
    pub fn id_of(body: &OfferBody) -> String {
        format!(
            "{}.{}.{}",
            safe(&body.origin.device),
            safe(&body.label),
            body.counter
        )
    }

    /// Whether the offer is kept here.
    pub fn contains(&self, body: &OfferBody) -> bool {
        self.root.join(Self::id_of(body)).is_dir()
    }

    /// Keep an opened offer (its envelope's bytes, its checked parts) for `model`.
    pub fn save(
        &self,
        model: &str,
        envelope: &[u8],
        body: &OfferBody,
        parts: &Parts,
    ) -> Result<StoredOffer, FleetError> {
        let id = Self::id_of(body);
        let tmp = self.root.join(format!(".tmp-{id}"));
        let dir = self.root.join(&id);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        create_dir_all(&StdFs, &tmp).map_err(io(&tmp))?;
        let mut files: Vec<(String, &[u8])> = vec![
            (ENVELOPE.into(), envelope),
            (MODEL.into(), model.as_bytes()),
        ];
        for (i, (_, bytes)) in parts.iter().enumerate() {
            files.push((format!("part-{i}"), bytes));
        }
        for (name, bytes) in files {
            let path = tmp.join(&name);
            write_atomic(&StdFs, &path, &tmp.join(format!("{name}.tmp")), bytes)
                .map_err(io(&path))?;
        }
        StdFs.sync_dir(&tmp).map_err(io(&tmp))?;
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        StdFs.rename(&tmp, &dir).map_err(io(&dir))?;
        StdFs.sync_dir(&self.root).map_err(io(&self.root))?;
        Ok(StoredOffer {
            id,
            model: model.into(),
            body: body.clone(),
        })
    }

    /// Every offer kept, oldest first (by the time it was issued); the envelope of each is
    /// opened again with `trust` (a key no longer trusted, or an offer that has expired
    /// since, is refused: `Err` per offer, with its id).
    pub fn list(
        &self,
        trust: &Trust,
        family_of: &dyn Fn(&str) -> Option<String>,
        now_ms: u64,
    ) -> Result<Vec<Listed>, FleetError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))?.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            if id.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            out.push(self.read(&id, trust, family_of, now_ms)?);
        }
        out.sort_by_key(|o| match o {
            Ok(s) => (s.body.issued_ms, s.id.clone()),
            Err((id, _)) => (0, id.clone()),
        });
        Ok(out)
    }

    fn read(
        &self,
        id: &str,
        trust: &Trust,
        family_of: &dyn Fn(&str) -> Option<String>,
        now_ms: u64,
    ) -> Result<Listed, FleetError> {
        let dir = self.root.join(id);
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read(&path).map_err(io(&path))
        };
        let model = String::from_utf8(read(MODEL)?).map_err(|e| corrupt(&dir.join(MODEL), e))?;
        let Some(family) = family_of(&model) else {
            return Ok(Err((
                id.into(),
                Refusal::Malformed(format!("kept for model `{model}`, which is not loaded")),
            )));
        };
        Ok(trust
            .open(&read(ENVELOPE)?, &family, now_ms)
            .map(|body| StoredOffer {
                id: id.into(),
                model,
                body,
            })
            .map_err(|r| (id.to_string(), r)))
    }

    /// The parts of a kept offer, each checked again against its signed manifest.
    pub fn parts(&self, offer: &StoredOffer) -> Result<Result<Parts, Refusal>, FleetError> {
        let dir = self.root.join(&offer.id);
        let mut assembly = super::offer::Assembly::new(offer.body.clone());
        for (i, part) in offer.body.parts.iter().enumerate() {
            let path = dir.join(format!("part-{i}"));
            let bytes = fs::read(&path).map_err(io(&path))?;
            for (c, chunk) in super::offer::chunks(&bytes).into_iter().enumerate() {
                if c < part.chunks
                    && let Err(r) = assembly.add(i, c, chunk.to_vec())
                {
                    return Ok(Err(r));
                }
            }
        }
        Ok(assembly.parts().unwrap_or_else(|| {
            Err(Refusal::Malformed(
                "a kept part has fewer chunks than its manifest".into(),
            ))
        }))
    }

    /// Forget a kept offer (its outcome is decided).
    pub fn remove(&self, id: &str) -> Result<(), FleetError> {
        let dir = self.root.join(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => StdFs.sync_dir(&self.root).map_err(io(&self.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir)(e)),
        }
    }
}

/// The counter of this device's next offer: one above the last, written durably first.
pub fn next_counter(state_dir: &Path) -> Result<u64, FleetError> {
    let path = state_dir.join("fleet").join("counter");
    let last: u64 = match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| corrupt(&path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(&path)(e)),
    };
    let next = last + 1;
    let dir = parent_of(&path);
    create_dir_all(&StdFs, dir).map_err(io(dir))?;
    write_atomic(
        &StdFs,
        &path,
        &path.with_extension("tmp"),
        format!("{next}\n").as_bytes(),
    )
    .map_err(io(&path))?;
    StdFs.sync_dir(dir).map_err(io(dir))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::super::identity::DeviceKey;
    use super::super::offer::{Origin, PartKind, seal};
    use super::*;

    fn offer(key: &DeviceKey, counter: u64) -> super::super::offer::Sealed {
        let body = OfferBody {
            v: super::super::offer::OFFER_VERSION,
            family: "f00d".into(),
            model: "vision".into(),
            label: "cat".into(),
            origin: Origin {
                device: "porch/1".into(),
                key: key.public().to_string(),
                version: 2,
            },
            counter,
            issued_ms: 10,
            expires_ms: 1000,
            retract: false,
            parts: Vec::new(),
            evidence: serde_json::Value::Null,
        };
        seal(
            key,
            body,
            &[
                ("a.png".into(), PartKind::Sample, b"first".to_vec()),
                ("b.png".into(), PartKind::Sample, vec![3; 300_000]),
            ],
        )
    }

    #[test]
    fn a_kept_offer_reads_back_checked_and_is_gone_once_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = DeviceKey::from_seed([1; 32]);
        let sealed = offer(&key, 3);
        let parts: Parts = sealed
            .body
            .parts
            .iter()
            .cloned()
            .zip([b"first".to_vec(), vec![3; 300_000]])
            .collect();
        let store = OfferStore::open(dir.path()).expect("open");
        let kept = store
            .save("vision", &sealed.envelope, &sealed.body, &parts)
            .expect("save");
        assert_eq!(kept.id, "porch_1.cat.3");
        assert!(store.contains(&sealed.body));
        let trust = Trust::new([key.public()]);
        let family = |m: &str| (m == "vision").then(|| "f00d".to_string());
        let listed = store.list(&trust, &family, 20).expect("list");
        let first = listed[0].as_ref().expect("opens");
        assert_eq!(first.body, sealed.body);
        assert_eq!(store.parts(first).expect("read").expect("checked"), parts);

        // A kept part altered on disk is caught when it is read back.
        fs::write(
            dir.path().join("fleet/offers/porch_1.cat.3/part-0"),
            b"firsT",
        )
        .expect("w");
        let e = store.parts(first).expect("read").expect_err("tampered");
        assert_eq!(e.kind(), "tampered");
        // A key no longer trusted: refused when listed.
        let listed = store.list(&Trust::default(), &family, 20).expect("list");
        assert_eq!(
            listed[0].as_ref().expect_err("untrusted").1.kind(),
            "unknown_key"
        );

        store.remove(&kept.id).expect("remove");
        assert!(!store.contains(&sealed.body));
        assert!(store.list(&trust, &family, 20).expect("list").is_empty());
    }

    #[test]
    fn a_half_written_offer_is_removed_when_the_store_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let half = dir.path().join("fleet/offers/.tmp-porch.cat.3");
        fs::create_dir_all(&half).expect("mkdir");
        fs::write(half.join("part-0"), b"half").expect("write");
        OfferStore::open(dir.path()).expect("open");
        assert!(!half.exists());
    }

    #[test]
    fn counters_rise_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(next_counter(dir.path()).expect("1"), 1);
        assert_eq!(next_counter(dir.path()).expect("2"), 2);
        fs::write(dir.path().join("fleet/counter"), "x").expect("write");
        let e = next_counter(dir.path()).expect_err("corrupt");
        assert!(e.to_string().contains("fleet/counter"), "{e}");
    }
}
