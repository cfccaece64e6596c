//! The crash-point explorer (test-only), after SQLite's crash tests and the ALICE study
//! (Pillai et al., OSDI 2014): a [`Recorder`] does every [`Fs`] operation on a real folder
//! and logs it; [`explore`] then writes out, for every prefix of the log, the states a
//! file system may leave after a crash there, each in a fresh folder, and hands it to a
//! check that opens it with the real code.
//!
//! The persistence model is deliberately weaker than ext4's (no ordering between
//! operations is assumed unless an fsync forces it):
//! - a name created, renamed or removed in a folder persists once that folder is fsynced
//!   (both folders for a rename); before that it may or may not, in any combination that
//!   respects dependencies (a rename needs the name it moves, a name in a new folder needs
//!   the folder, removing a folder needs everything in it removed, re-creating a name
//!   needs its removal) — ALICE's "any subset" rather than ext4's in-order journal;
//! - a file's data persists once the file is fsynced; before that it may hold its last
//!   persisted content, nothing, the first half of the new bytes, or all of them;
//! - what was on disk when the recorder started is durable (as if `sync(2)` had run).
//!
//! A crash state is a dependency-closed subset of the unpersisted names × a content for
//! each unpersisted file. (Leaving out a dependency would only repeat a state: the tree
//! is kept by inode, so a rename without the creation it needs looks like both.) [`Budget`] bounds how many of them are checked per crash point
//! (evenly spread over the enumeration, always with "nothing more persisted" first and
//! "everything persisted" last); `LSSKD_CRASH_STATES=all` checks every one (up to
//! [`FULL_CAP`] per point).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Fs;

/// States checked per crash point in the bounded (CI) run.
pub const BOUNDED_PER_POINT: usize = 4;
/// The most states of one crash point that a full run enumerates.
pub const FULL_CAP: usize = 1 << 16;

type Ino = u64;
/// A file's content, shared between the states that hold it.
type Bytes = Arc<Vec<u8>>;
const ROOT: Ino = 0;

/// How many crash states to check at each crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// At most this many, evenly spread (both extremes included).
    PerPoint(usize),
    /// Every state (up to [`FULL_CAP`] per point).
    All,
}

impl Budget {
    /// `LSSKD_CRASH_STATES`: `all`, a number per crash point, or unset
    /// ([`BOUNDED_PER_POINT`]).
    pub fn from_env() -> Self {
        match std::env::var("LSSKD_CRASH_STATES").ok().as_deref() {
            Some("all") => Budget::All,
            Some(n) => Budget::PerPoint(n.parse().expect("LSSKD_CRASH_STATES: `all` or a number")),
            None => Budget::PerPoint(BOUNDED_PER_POINT),
        }
    }
}

/// What one exploration covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Explored {
    /// Prefixes of the operation log (operations + 1).
    pub crash_points: usize,
    /// Crash states enumerated within the budget.
    pub states: usize,
    /// Of those, distinct on disk (with the same acknowledgements): the ones checked.
    pub checked: usize,
    /// Crash points with more states than [`FULL_CAP`].
    pub capped_points: usize,
}

/// A folder tree by inode: folders' entries and files' bytes.
#[derive(Debug, Clone, Default)]
struct Tree {
    dirs: BTreeMap<Ino, BTreeMap<String, Ino>>,
    files: BTreeMap<Ino, Bytes>,
}

impl Tree {
    /// The tree under `root` (every folder and file read), with the next free inode.
    fn snapshot(root: &Path) -> io::Result<(Self, Ino)> {
        let mut tree = Tree::default();
        tree.dirs.insert(ROOT, BTreeMap::new());
        let mut next = ROOT + 1;
        let mut todo = vec![(ROOT, root.to_path_buf())];
        while let Some((ino, dir)) = todo.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = next;
                next += 1;
                if entry.file_type()?.is_dir() {
                    tree.dirs.insert(child, BTreeMap::new());
                    todo.push((child, entry.path()));
                } else {
                    tree.files
                        .insert(child, Arc::new(std::fs::read(entry.path())?));
                }
                tree.dirs.entry(ino).or_default().insert(name, child);
            }
        }
        Ok((tree, next))
    }

    /// Every reachable path (relative, `/`-separated) with its bytes (`None`: a folder).
    fn walk(&self) -> Vec<(String, Option<Bytes>)> {
        let mut out = Vec::new();
        let mut todo = vec![(ROOT, String::new())];
        while let Some((ino, prefix)) = todo.pop() {
            for (name, child) in self.dirs.get(&ino).into_iter().flatten() {
                let path = format!("{prefix}{name}");
                if self.dirs.contains_key(child) {
                    out.push((path.clone(), None));
                    todo.push((*child, format!("{path}/")));
                } else {
                    let bytes = self.files.get(child).cloned().unwrap_or_default();
                    out.push((path, Some(bytes)));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for (path, bytes) in self.walk() {
            path.hash(&mut h);
            bytes.map(|b| b.to_vec()).hash(&mut h);
        }
        h.finish()
    }

    fn materialise(&self, at: &Path) -> io::Result<()> {
        for (path, bytes) in self.walk() {
            match bytes {
                None => std::fs::create_dir_all(at.join(path))?,
                Some(b) => std::fs::write(at.join(path), &*b)?,
            }
        }
        Ok(())
    }

    fn listing(&self) -> String {
        self.walk()
            .into_iter()
            .map(|(p, b)| match b {
                None => format!("  {p}/\n"),
                Some(b) => format!("  {p} ({} bytes)\n", b.len()),
            })
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Link {
                dir,
                name,
                ino,
                is_dir,
            } => {
                self.dirs
                    .entry(*dir)
                    .or_default()
                    .insert(name.clone(), *ino);
                if *is_dir {
                    self.dirs.entry(*ino).or_default();
                } else {
                    self.files.entry(*ino).or_default();
                }
            }
            Op::Unlink { dir, name } => {
                if let Some(d) = self.dirs.get_mut(dir) {
                    d.remove(name);
                }
            }
            Op::Rename { from, to, ino } => {
                if let Some(d) = self.dirs.get_mut(&from.0) {
                    d.remove(&from.1);
                }
                self.dirs
                    .entry(to.0)
                    .or_default()
                    .insert(to.1.clone(), *ino);
            }
            Op::Data { .. } | Op::SyncFile(_) | Op::SyncDir(_) | Op::Mark => {}
        }
    }
}

/// One recorded operation, by inode (names are resolved when it is recorded).
#[derive(Debug, Clone)]
enum Op {
    /// A new name: a file's (its first write) or a folder's.
    Link {
        dir: Ino,
        name: String,
        ino: Ino,
        is_dir: bool,
    },
    /// A file or an empty folder removed.
    Unlink {
        dir: Ino,
        name: String,
    },
    Rename {
        from: (Ino, String),
        to: (Ino, String),
        ino: Ino,
    },
    /// A file truncated and written.
    Data {
        ino: Ino,
        bytes: Bytes,
    },
    SyncFile(Ino),
    SyncDir(Ino),
    /// The caller's acknowledgement point ([`Recorder::mark`]).
    Mark,
}

impl Op {
    /// The folders whose fsync persists this operation (none: not a name change).
    fn folders(&self) -> Vec<Ino> {
        match self {
            Op::Link { dir, .. } | Op::Unlink { dir, .. } => vec![*dir],
            Op::Rename { from, to, .. } => vec![from.0, to.0],
            _ => Vec::new(),
        }
    }
}

/// The log and the live tree it mirrors, with what each name change depends on.
#[derive(Debug, Default)]
struct Log {
    base: Tree,
    now: Tree,
    next_ino: Ino,
    ops: Vec<Op>,
    /// Per operation: the earlier operations it needs (see the module docs).
    deps: Vec<Vec<usize>>,
    /// Per operation: what it did, with paths.
    what: Vec<String>,
    placed_by: HashMap<(Ino, String), usize>,
    removed_by: HashMap<(Ino, String), usize>,
    made_by: HashMap<Ino, usize>,
    emptied_by: HashMap<Ino, Vec<usize>>,
    /// A file's latest path, for the failure's description.
    names: HashMap<Ino, String>,
}

impl Log {
    fn push(&mut self, op: Op, deps: Vec<usize>, what: String) -> usize {
        self.ops.push(op);
        self.deps.push(deps);
        self.what.push(what);
        self.ops.len() - 1
    }

    /// `rel`'s folder and name; the folders on the way must exist.
    fn resolve(&self, rel: &Path) -> io::Result<(Ino, String)> {
        let mut names: Vec<String> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => {
                    return Err(io::Error::other(format!(
                        "{}: not a plain path",
                        rel.display()
                    )));
                }
            }
        }
        let name = names
            .pop()
            .ok_or_else(|| io::Error::other("the recorded root itself"))?;
        let mut dir = ROOT;
        for n in names {
            dir = *self
                .now
                .dirs
                .get(&dir)
                .and_then(|d| d.get(&n))
                .filter(|i| self.now.dirs.contains_key(i))
                .ok_or_else(|| io::Error::other(format!("{}: no folder {n}", rel.display())))?;
        }
        Ok((dir, name))
    }

    fn entry(&self, dir: Ino, name: &str) -> Option<Ino> {
        self.now.dirs.get(&dir).and_then(|d| d.get(name)).copied()
    }

    fn link(&mut self, dir: Ino, name: &str, is_dir: bool, what: String) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        let key = (dir, name.to_string());
        let deps = [self.made_by.get(&dir), self.removed_by.get(&key)]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let op = Op::Link {
            dir,
            name: name.to_string(),
            ino,
            is_dir,
        };
        self.now.apply(&op);
        let i = self.push(op, deps, what);
        if is_dir {
            self.made_by.insert(ino, i);
        }
        self.placed_by.insert(key, i);
        ino
    }

    fn unlink(&mut self, dir: Ino, name: &str, what: String) {
        let key = (dir, name.to_string());
        let ino = self.entry(dir, name);
        let mut deps: Vec<usize> = self.placed_by.get(&key).copied().into_iter().collect();
        if let Some(emptied) = ino.and_then(|i| self.emptied_by.get(&i)) {
            deps.extend(emptied);
        }
        let op = Op::Unlink {
            dir,
            name: name.to_string(),
        };
        self.now.apply(&op);
        let i = self.push(op, deps, what);
        self.placed_by.remove(&key);
        self.removed_by.insert(key, i);
        self.emptied_by.entry(dir).or_default().push(i);
    }

    fn rename(&mut self, from: (Ino, String), to: (Ino, String), what: String) -> io::Result<()> {
        let ino = self
            .entry(from.0, &from.1)
            .ok_or_else(|| io::Error::other(format!("{what}: nothing to rename")))?;
        let mut deps: Vec<usize> = [
            self.placed_by.get(&from),
            self.made_by.get(&to.0),
            self.placed_by.get(&to),
            self.removed_by.get(&to),
        ]
        .into_iter()
        .flatten()
        .copied()
        .collect();
        deps.sort_unstable();
        deps.dedup();
        let op = Op::Rename {
            from: from.clone(),
            to: to.clone(),
            ino,
        };
        self.now.apply(&op);
        let i = self.push(op, deps, what);
        self.placed_by.remove(&from);
        self.removed_by.insert(from.clone(), i);
        self.emptied_by.entry(from.0).or_default().push(i);
        self.placed_by.insert(to, i);
        Ok(())
    }

    /// Remove `dir`'s contents and then `dir`, deepest first (as `remove_dir_all` does).
    fn remove_tree(&mut self, parent: Ino, name: &str, path: &Path) {
        if let Some(ino) = self
            .entry(parent, name)
            .filter(|i| self.now.dirs.contains_key(i))
        {
            let children: Vec<(String, Ino)> = self.now.dirs[&ino]
                .iter()
                .map(|(n, i)| (n.clone(), *i))
                .collect();
            for (child, child_ino) in children {
                let child_path = path.join(&child);
                if self.now.dirs.contains_key(&child_ino) {
                    self.remove_tree(ino, &child, &child_path);
                } else {
                    self.unlink(ino, &child, format!("unlink {}", child_path.display()));
                }
            }
        }
        self.unlink(parent, name, format!("rmdir {}", path.display()));
    }
}

/// [`Fs`] on a real folder that logs every operation for [`explore`].
#[derive(Debug)]
pub struct Recorder {
    root: PathBuf,
    log: Mutex<Log>,
}

impl Recorder {
    /// Record operations under `root` (an existing folder); what it holds now is the
    /// durable starting state.
    pub fn new(root: &Path) -> io::Result<Self> {
        let (base, next_ino) = Tree::snapshot(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            log: Mutex::new(Log {
                now: base.clone(),
                base,
                next_ino,
                ..Log::default()
            }),
        })
    }

    /// An acknowledgement: crash states after it are checked against what it promised.
    pub fn mark(&self) {
        self.log()
            .push(Op::Mark, Vec::new(), "-- acknowledged --".into());
    }

    /// Operations recorded so far (marks included).
    pub fn recorded(&self) -> usize {
        self.log().ops.len()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .expect("a recorder is not shared across a panic")
    }

    fn rel<'a>(&self, path: &'a Path) -> io::Result<&'a Path> {
        path.strip_prefix(&self.root).map_err(|_| {
            io::Error::other(format!(
                "{} is outside the recorded {}",
                path.display(),
                self.root.display()
            ))
        })
    }
}

impl Fs for Recorder {
    fn write(&self, path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
        let rel = self.rel(path)?;
        super::StdFs.write(path, bytes, sync)?;
        let mut log = self.log();
        let (dir, name) = log.resolve(rel)?;
        let ino = match log.entry(dir, &name) {
            Some(ino) => ino,
            None => log.link(dir, &name, false, format!("create {}", rel.display())),
        };
        log.names.insert(ino, rel.display().to_string());
        let bytes = Arc::new(bytes.to_vec());
        log.now.files.insert(ino, bytes.clone());
        let what = format!("write {} ({} bytes)", rel.display(), bytes.len());
        log.push(Op::Data { ino, bytes }, Vec::new(), what);
        if sync {
            log.push(
                Op::SyncFile(ino),
                Vec::new(),
                format!("fsync {}", rel.display()),
            );
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (rf, rt) = (self.rel(from)?, self.rel(to)?);
        super::StdFs.rename(from, to)?;
        let mut log = self.log();
        let (f, t) = (log.resolve(rf)?, log.resolve(rt)?);
        if let Some(ino) = log.entry(f.0, &f.1) {
            log.names.insert(ino, rt.display().to_string());
        }
        log.rename(f, t, format!("rename {} -> {}", rf.display(), rt.display()))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let rel = self.rel(path)?;
        super::StdFs.create_dir_all(path)?;
        let mut log = self.log();
        let mut dir = ROOT;
        let mut so_far = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(n) = c else { continue };
            let n = n.to_string_lossy().into_owned();
            so_far.push(&n);
            dir = match log.entry(dir, &n) {
                Some(ino) => ino,
                None => log.link(dir, &n, true, format!("mkdir {}", so_far.display())),
            };
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let rel = self.rel(path)?;
        super::StdFs.remove_file(path)?;
        let mut log = self.log();
        let (dir, name) = log.resolve(rel)?;
        log.unlink(dir, &name, format!("unlink {}", rel.display()));
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let rel = self.rel(path)?;
        super::StdFs.remove_dir_all(path)?;
        let mut log = self.log();
        let (dir, name) = log.resolve(rel)?;
        log.remove_tree(dir, &name, rel);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let rel = self.rel(path)?;
        super::StdFs.sync_dir(path)?;
        let mut log = self.log();
        let ino = match rel.as_os_str().is_empty() {
            true => ROOT,
            false => {
                let (dir, name) = log.resolve(rel)?;
                log.entry(dir, &name)
                    .ok_or_else(|| io::Error::other(format!("{}: no folder", rel.display())))?
            }
        };
        log.push(
            Op::SyncDir(ino),
            Vec::new(),
            format!("fsync folder {}", rel.display()),
        );
        Ok(())
    }
}

/// The choices of one crash point: which unpersisted names persist, and which content
/// each unpersisted file holds.
struct Point {
    /// The prefix length: operations `0..at` happened.
    at: usize,
    /// Name changes that persisted for sure (their folders were fsynced after them).
    forced: HashSet<usize>,
    /// Dependency-closed subsets of the other name changes (each: the ones persisted).
    subsets: Vec<Vec<usize>>,
    /// Per unpersisted file: its possible contents.
    contents: Vec<(Ino, Vec<Bytes>)>,
    /// Files whose content persisted.
    settled: Vec<(Ino, Bytes)>,
    capped: bool,
}

impl Point {
    fn new(log: &Log, at: usize) -> Self {
        let ops = &log.ops[..at];
        let mut synced_dir: HashMap<Ino, usize> = HashMap::new();
        let mut synced_file: HashMap<Ino, usize> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::SyncDir(d) => {
                    synced_dir.insert(*d, i);
                }
                Op::SyncFile(f) => {
                    synced_file.insert(*f, i);
                }
                _ => {}
            }
        }
        let names: Vec<usize> = (0..at).filter(|i| !ops[*i].folders().is_empty()).collect();
        // Not closed over dependencies: a name fsynced into a folder persists even where
        // the folder's own name does not (the folder is then unreachable).
        let forced: HashSet<usize> = names
            .iter()
            .copied()
            .filter(|i| {
                ops[*i]
                    .folders()
                    .iter()
                    .all(|d| synced_dir.get(d).is_some_and(|s| s > i))
            })
            .collect();
        let optional: Vec<usize> = names.into_iter().filter(|i| !forced.contains(i)).collect();
        let mut subsets = Vec::new();
        let capped = !closed_subsets(&optional, &log.deps, &forced, &mut Vec::new(), &mut subsets);
        let (contents, settled) = file_contents(log, ops, &synced_file);
        Self {
            at,
            forced,
            subsets,
            contents,
            settled,
            capped,
        }
    }

    /// States at this point (the product of the choices, saturating).
    fn count(&self) -> usize {
        self.contents
            .iter()
            .fold(self.subsets.len(), |n, (_, c)| n.saturating_mul(c.len()))
    }

    /// Which states to check: all, or `n` spread evenly from the first to the last.
    fn picks(&self, budget: Budget) -> Vec<usize> {
        let total = self.count();
        match budget {
            Budget::All => (0..total.min(FULL_CAP)).collect(),
            Budget::PerPoint(n) if n >= total => (0..total).collect(),
            Budget::PerPoint(0) => Vec::new(),
            Budget::PerPoint(1) => vec![total - 1],
            Budget::PerPoint(n) => {
                let mut v: Vec<usize> = (0..n).map(|k| k * (total - 1) / (n - 1)).collect();
                v.dedup();
                v
            }
        }
    }

    /// State number `pick`: its tree and a description of the choices.
    fn state(&self, log: &Log, pick: usize) -> (Tree, String) {
        let subset = &self.subsets[pick % self.subsets.len()];
        let mut rest = pick / self.subsets.len();
        let mut tree = log.base.clone();
        let mut why = String::new();
        for (i, op) in log.ops[..self.at].iter().enumerate() {
            if self.forced.contains(&i) || subset.contains(&i) {
                tree.apply(op);
            } else if !op.folders().is_empty() {
                let _ = writeln!(why, "  not persisted: #{i} {}", log.what[i]);
            }
        }
        for (ino, bytes) in &self.settled {
            tree.files.insert(*ino, bytes.clone());
        }
        for (ino, choices) in &self.contents {
            let c = &choices[rest % choices.len()];
            rest /= choices.len();
            tree.files.insert(*ino, c.clone());
            let name = log.names.get(ino).map_or("?", String::as_str);
            let _ = writeln!(why, "  unsynced {name}: {} bytes persisted", c.len());
        }
        (tree, why)
    }
}

/// Adds to `out` every subset of `optional[..]` (after `chosen`) closed under `deps`;
/// false when it stopped at [`FULL_CAP`].
fn closed_subsets(
    optional: &[usize],
    deps: &[Vec<usize>],
    forced: &HashSet<usize>,
    chosen: &mut Vec<usize>,
    out: &mut Vec<Vec<usize>>,
) -> bool {
    let Some((&first, rest)) = optional.split_first() else {
        out.push(chosen.clone());
        return out.len() < FULL_CAP;
    };
    if !closed_subsets(rest, deps, forced, chosen, out) {
        return false;
    }
    if deps[first]
        .iter()
        .all(|d| forced.contains(d) || chosen.contains(d))
    {
        chosen.push(first);
        let more = closed_subsets(rest, deps, forced, chosen, out);
        chosen.pop();
        return more;
    }
    true
}

type Contents = (Vec<(Ino, Vec<Bytes>)>, Vec<(Ino, Bytes)>);

/// Per written file: its possible contents at the crash (unsynced) or its content
/// (synced).
fn file_contents(log: &Log, ops: &[Op], synced_file: &HashMap<Ino, usize>) -> Contents {
    let mut writes: BTreeMap<Ino, Vec<(usize, Bytes)>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Data { ino, bytes } = op {
            writes.entry(*ino).or_default().push((i, bytes.clone()));
        }
    }
    let (mut open, mut settled) = (Vec::new(), Vec::new());
    for (ino, w) in writes {
        let synced = synced_file.get(&ino).copied();
        let durable = w
            .iter()
            .rev()
            .find(|(i, _)| synced.is_some_and(|s| *i < s))
            .map(|(_, b)| b.clone())
            .or_else(|| log.base.files.get(&ino).cloned())
            .unwrap_or_default();
        let (last_at, last) = w.last().cloned().expect("a written file has a write");
        if synced.is_some_and(|s| last_at < s) {
            settled.push((ino, last));
            continue;
        }
        let half = Arc::new(last[..last.len() / 2].to_vec());
        let mut choices: Vec<Bytes> = Vec::new();
        for c in [durable, Arc::default(), half, last] {
            if !choices.contains(&c) {
                choices.push(c);
            }
        }
        open.push((ino, choices));
    }
    (open, settled)
}

/// Check every crash state of what `rec` recorded (within `budget`): each is written to a
/// fresh folder and given to `check` with the number of [`Recorder::mark`]s before the
/// crash. The first failure is returned with the crash point and the state.
pub fn explore(
    rec: &Recorder,
    budget: Budget,
    mut check: impl FnMut(usize, &Path) -> Result<(), String>,
) -> Result<Explored, String> {
    let log = rec.log();
    let mut seen = HashSet::new();
    let mut out = Explored::default();
    for at in 0..=log.ops.len() {
        let marks = log.ops[..at]
            .iter()
            .filter(|o| matches!(o, Op::Mark))
            .count();
        let point = Point::new(&log, at);
        out.crash_points += 1;
        out.capped_points += usize::from(point.capped || point.count() > FULL_CAP);
        for pick in point.picks(budget) {
            out.states += 1;
            let (tree, why) = point.state(&log, pick);
            if !seen.insert((tree.fingerprint(), marks)) {
                continue;
            }
            out.checked += 1;
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            tree.materialise(dir.path()).map_err(|e| e.to_string())?;
            check(marks, dir.path()).map_err(|e| {
                let last = at.checked_sub(1).map_or("(none)".into(), |i| log.what[i].clone());
                format!(
                    "{e}\ncrash after {at} operations (last: {last}), {marks} acknowledged\n{why}on disk:\n{}",
                    tree.listing()
                )
            })?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::{StdFs, write_atomic};

    /// Writes `name` through `fs` as `how` does, then acknowledges.
    fn record(how: impl Fn(&dyn Fs, &Path)) -> (tempfile::TempDir, Recorder) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Recorder::new(dir.path()).expect("recorder");
        how(&rec, dir.path());
        rec.mark();
        (dir, rec)
    }

    fn acked_file_is_whole(marks: usize, dir: &Path) -> Result<(), String> {
        match (marks, std::fs::read(dir.join("f"))) {
            (0, _) => Ok(()),
            (_, Ok(b)) if b == b"hello" => Ok(()),
            (_, got) => Err(format!("acknowledged f holds {got:?}")),
        }
    }

    #[test]
    fn finds_the_rename_without_a_file_fsync() {
        let (_d, rec) = record(|fs, root| {
            fs.write(&root.join("f.tmp"), b"hello", false)
                .expect("write");
            fs.rename(&root.join("f.tmp"), &root.join("f"))
                .expect("rename");
            fs.sync_dir(root).expect("sync");
        });
        let err = explore(&rec, Budget::All, acked_file_is_whole).expect_err("a torn file");
        assert!(err.contains("acknowledged f holds Ok([])"), "{err}");
    }

    #[test]
    fn finds_the_rename_without_a_folder_fsync() {
        let (_d, rec) = record(|fs, root| {
            write_atomic(fs, &root.join("f"), &root.join("f.tmp"), b"hello").expect("write");
        });
        let err = explore(&rec, Budget::All, acked_file_is_whole).expect_err("a lost name");
        assert!(err.contains("not persisted: #3 rename f.tmp -> f"), "{err}");
    }

    #[test]
    fn passes_the_full_protocol_and_counts_its_states() {
        let (_d, rec) = record(|fs, root| {
            write_atomic(fs, &root.join("f"), &root.join("f.tmp"), b"hello").expect("write");
            fs.sync_dir(root).expect("sync");
        });
        let n = explore(&rec, Budget::All, acked_file_is_whole).expect("durable");
        // create, write, fsync, rename, fsync folder, mark: 7 prefixes. Before the folder
        // fsync the names f.tmp and f are optional, and f.tmp's unsynced bytes hold
        // nothing, half or all; distinct: nothing, f.tmp with 0, 2 or 5 bytes, f, and f
        // after the acknowledgement.
        assert_eq!(n.crash_points, 7);
        assert_eq!((n.states, n.checked), (1 + 2 + 2 * 3 + 2 + 3 + 1 + 1, 6));
    }

    #[test]
    fn a_removed_folder_needs_its_contents_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        StdFs
            .create_dir_all(&dir.path().join("v/sub"))
            .expect("mkdir");
        for f in ["v/a", "v/sub/b"] {
            std::fs::write(dir.path().join(f), b"x").expect("write");
        }
        let rec = Recorder::new(dir.path()).expect("recorder");
        rec.remove_dir_all(&dir.path().join("v")).expect("remove");
        let mut shapes = HashSet::new();
        explore(&rec, Budget::All, |_, d| {
            let (a, b, v) = (
                d.join("v/a").exists(),
                d.join("v/sub/b").exists(),
                d.join("v").exists(),
            );
            shapes.insert((v, a, b));
            if !v && (a || b) {
                return Err("a removed folder still holds files".into());
            }
            Ok(())
        })
        .expect("consistent");
        // a and b each may or may not be gone; v only when both are.
        assert_eq!(shapes.len(), 5, "{shapes:?}");
    }
}
