//! The sample store under the crash-point explorer (`durable::crash`): every crash state
//! of adds (the first into a new store, several, with quota eviction) and of a removal,
//! reopened with the real store. Invariants, in every state: the store opens; every
//! listed sample loads (its data matches its sha256); no temporary file is left; every
//! sample acknowledged before the crash is listed; a removal, once returned, stays done.
//!
//! `LSSKD_CRASH_STATES=all cargo test --lib samples::crash -- --nocapture` checks every
//! state (the figures in RELIABILITY.md); CI checks a few per crash point.

use std::path::Path;
use std::sync::Arc;

use super::{AddOutcome, SampleStore};
use crate::durable::crash::{Budget, Explored, Recorder, explore};
use crate::durable::{Fs, StdFs};

const MODEL: &str = "vision";

/// A distinct small PNG per `seed`.
fn png(seed: u8) -> Vec<u8> {
    let img =
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(3, 2, image::Luma([seed])));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

/// What a crash state must show after a number of acknowledgements.
#[derive(Debug, Clone, Default)]
struct Expect {
    /// Listed and loadable.
    present: Vec<&'static str>,
    /// Not listed.
    absent: Vec<&'static str>,
}

fn expect(present: &[&'static str], absent: &[&'static str]) -> Expect {
    Expect {
        present: present.to_vec(),
        absent: absent.to_vec(),
    }
}

/// The invariants of one crash state in `state_dir`.
fn check(state_dir: &Path, want: &Expect) -> Result<(), String> {
    let store = SampleStore::open(state_dir, MODEL, 1000).map_err(|e| format!("open: {e}"))?;
    let listed = store.list().map_err(|e| e.to_string())?;
    for m in &listed {
        store
            .load(m)
            .map_err(|e| format!("listed sample {} does not load: {e}", m.id))?;
    }
    let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    if let Some(lost) = want.present.iter().find(|id| !ids.contains(id)) {
        return Err(format!(
            "acknowledged sample {lost} is lost (listed: {ids:?})"
        ));
    }
    if let Some(back) = want.absent.iter().find(|id| ids.contains(id)) {
        return Err(format!("removed sample {back} is back"));
    }
    let tmp = std::fs::read_dir(store.root())
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
    match tmp {
        Some(e) => Err(format!("{:?} left after open", e.file_name())),
        None => Ok(()),
    }
}

/// A state folder holding `base` (stored and synced), and a recorder over it.
fn setup(base: &[&str]) -> (tempfile::TempDir, Arc<Recorder>) {
    let dir = tempfile::tempdir().expect("tempdir");
    if !base.is_empty() {
        let store = SampleStore::open(dir.path(), MODEL, 1000).expect("open");
        for (i, id) in base.iter().enumerate() {
            store
                .add(id, "x", &png(i as u8), "png", "mqtt")
                .expect("add");
        }
        // The recorded adds come later by the clock (eviction is oldest first).
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let rec = Arc::new(Recorder::new(dir.path()).expect("recorder"));
    (dir, rec)
}

fn open(rec: &Arc<Recorder>, dir: &Path, quota: usize) -> SampleStore {
    let fs: Arc<dyn Fs> = rec.clone();
    SampleStore::open_with(fs, dir, MODEL, quota).expect("open")
}

fn run(name: &str, rec: &Recorder, expects: &[Expect]) -> Explored {
    let explored = explore(rec, Budget::from_env(), |marks, dir| {
        check(dir, &expects[marks])
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("crash states: samples {name}: {explored:?}");
    assert_eq!(explored.capped_points, 0);
    assert!(explored.states >= explored.crash_points, "{explored:?}");
    explored
}

#[test]
fn the_first_add_into_a_new_store_survives_every_crash() {
    let (dir, rec) = setup(&[]);
    let store = open(&rec, dir.path(), 10);
    store.add("s1", "x", &png(1), "png", "mqtt").expect("add");
    rec.mark();
    run("first add", &rec, &[expect(&[], &[]), expect(&["s1"], &[])]);
}

#[test]
fn acknowledged_adds_survive_every_crash() {
    let (dir, rec) = setup(&["b1", "b2"]);
    let store = open(&rec, dir.path(), 10);
    let mut expects = vec![expect(&["b1", "b2"], &[])];
    let ids = ["n1", "n2", "n3"];
    for (i, id) in ids.iter().enumerate() {
        store
            .add(id, "y", &png(10 + i as u8), "png", "mqtt")
            .expect("add");
        rec.mark();
        let mut present = vec!["b1", "b2"];
        present.extend(&ids[..=i]);
        expects.push(expect(&present, &[]));
    }
    run("3 adds", &rec, &expects);
}

#[test]
fn adds_that_evict_lose_no_acknowledged_sample() {
    let (dir, rec) = setup(&["b1", "b2"]);
    let store = open(&rec, dir.path(), 2);
    let first = store.add("n1", "y", &png(7), "png", "mqtt").expect("add");
    rec.mark();
    let second = store.add("n2", "y", &png(8), "png", "mqtt").expect("add");
    rec.mark();
    assert_eq!(
        first,
        AddOutcome::Stored {
            evicted: vec!["b1".into()]
        }
    );
    assert_eq!(
        second,
        AddOutcome::Stored {
            evicted: vec!["b2".into()]
        }
    );
    // Evicted samples may come back after a crash (quota is enforced again by the next
    // add); acknowledged ones may not be lost.
    let expects = [
        expect(&["b2"], &[]),
        expect(&["n1"], &[]),
        expect(&["n1", "n2"], &[]),
    ];
    run("2 adds with eviction", &rec, &expects);
}

#[test]
fn a_returned_removal_stays_done_after_every_crash() {
    let (dir, rec) = setup(&["b1", "b2", "b3"]);
    let store = open(&rec, dir.path(), 10);
    store.remove("b2").expect("remove");
    rec.mark();
    let expects = [expect(&["b1", "b3"], &[]), expect(&["b1", "b3"], &["b2"])];
    run("remove", &rec, &expects);
}

/// The recorder changes nothing: a store written through it reads back like one written
/// through `std::fs`.
#[test]
fn a_recorded_store_is_an_ordinary_store() {
    let (dir, rec) = setup(&["b1"]);
    let store = open(&rec, dir.path(), 10);
    store.add("n1", "y", &png(3), "png", "mqtt").expect("add");
    assert!(rec.recorded() > 0);
    let plain = SampleStore::open_with(Arc::new(StdFs), dir.path(), MODEL, 10).expect("open");
    assert_eq!(plain.list().expect("list").len(), 2);
}
