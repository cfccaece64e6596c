//! ARCHITECTURE.md's module table names, for each module, the third-party crates it
//! imports, so that an upgrade of one of them is known to touch only those places. This
//! test keeps that column true: it reads `Cargo.toml`'s `[dependencies]`, every file under
//! `src/` and ARCHITECTURE.md at test time, and fails when a module (the first path
//! component under `src/`: `features`, `capture`, …, `commands`, or a root file such as
//! `main.rs`) uses a crate that its row does not list, when a row lists a crate the module
//! no longer uses, or when a name in the table is not a dependency.
//!
//! Crates that any module may use are named once, in the paragraph of ARCHITECTURE.md
//! that starts with `**Used throughout**`, and are left out of the table.
//!
//! A use is `use <crate>::…` (or a `use {…}` group rooted at it), `extern crate <crate>`,
//! or a path that starts with `<crate>::` (`::<crate>::` too) anywhere else, attributes and
//! macro calls included. Comments, string, byte, raw-string and char literals are skipped.
//! A name that a file binds to something of our own (`mod image;`,
//! `use crate::features::image;`) is not the crate in that file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Where a crate is used: the first line of each (crate, file).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    krate: String,
    line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`, `->`, `=>` or a single punctuation character.
    Punct(&'static str),
    Other(char),
}

/// Rust source to tokens with their line numbers; comments and literals leave nothing.
fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    // Advance past c[i], counting lines.
    let bump = |i: &mut usize, line: &mut usize| {
        if c[*i] == '\n' {
            *line += 1;
        }
        *i += 1;
    };
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    bump(&mut i, &mut line);
                }
            }
        } else if let Some(after_prefix) = raw_string_start(&c, i) {
            // r"…", r#"…"#, br##"…"##, cr"…": no escapes; ends at a quote and as many #.
            let hashes = after_prefix - i - raw_prefix_len(&c, i) - 1;
            i = after_prefix;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                bump(&mut i, &mut line);
            }
        } else if ch == '"' || ((ch == 'b' || ch == 'c') && next == Some('"')) {
            i += if ch == '"' { 1 } else { 2 };
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    bump(&mut i, &mut line);
                }
                if i < c.len() {
                    bump(&mut i, &mut line);
                }
            }
            i += 1;
        } else if ch == '\'' || (ch == 'b' && next == Some('\'')) {
            // A char literal ('a', '\n', '\u{1F600}', b'x') or a lifetime ('a, 'static).
            let q = if ch == '\'' { i } else { i + 1 };
            if c.get(q + 1) == Some(&'\\') {
                i = q + 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(q + 2) == Some(&'\'') {
                i = q + 3;
            } else {
                // A lifetime or label: skip the quote and its name.
                i = q + 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = if ch == 'r' && next == Some('#') {
                i + 2
            } else {
                i
            };
            i = start;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch.is_whitespace() {
            bump(&mut i, &mut line);
        } else {
            let two = [Some(ch), next];
            let punct = match two {
                [Some(':'), Some(':')] => Some("::"),
                [Some('-'), Some('>')] => Some("->"),
                [Some('='), Some('>')] => Some("=>"),
                _ => None,
            };
            match punct {
                Some(p) => {
                    out.push((Tok::Punct(p), line));
                    i += 2;
                }
                None => {
                    let p = match ch {
                        '{' => Tok::Punct("{"),
                        '}' => Tok::Punct("}"),
                        ',' => Tok::Punct(","),
                        ';' => Tok::Punct(";"),
                        '*' => Tok::Punct("*"),
                        '>' => Tok::Punct(">"),
                        other => Tok::Other(other),
                    };
                    out.push((p, line));
                    i += 1;
                }
            }
        }
    }
    out
}

/// Length of a raw string's letter prefix at `i` (`r`, `br`, `cr`), 0 if none.
fn raw_prefix_len(c: &[char], i: usize) -> usize {
    match (c.get(i), c.get(i + 1)) {
        (Some('r'), _) => 1,
        (Some('b' | 'c'), Some('r')) => 2,
        _ => 0,
    }
}

/// If a raw string starts at `i`, the index just after its opening quote. A raw
/// identifier (`r#type`) is not one: its `#`s are not followed by a quote.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    // Not the tail of an identifier (`bar"…"` cannot occur, but `for` + `r#"` could).
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let p = raw_prefix_len(c, i);
    if p == 0 {
        return None;
    }
    let mut j = i + p;
    while c.get(j) == Some(&'#') {
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some(j + 1)
}

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

fn is(t: Option<&(Tok, usize)>, p: &str) -> bool {
    matches!(t, Some((Tok::Punct(q), _)) if *q == p)
}

/// What one `use` tree yields: its roots (first path segments, with their lines) and the
/// names it binds, each with the root it came from.
#[derive(Default)]
struct UseTree {
    roots: Vec<(String, usize)>,
    bindings: Vec<(String, String)>,
}

/// Parses the use tree at `*i` (after `use`, or inside a group), with the path `prefix`
/// of the enclosing groups.
fn parse_use_tree(t: &[(Tok, usize)], i: &mut usize, prefix: &[String], out: &mut UseTree) {
    if is(t.get(*i), "::") {
        *i += 1;
    }
    let mut path = prefix.to_vec();
    let mut first_line = t.get(*i).map_or(0, |(_, l)| *l);
    let mut ends_in_name = false;
    while let Some(name) = ident(t.get(*i)) {
        if path.is_empty() {
            first_line = t[*i].1;
        }
        path.push(name.to_string());
        *i += 1;
        ends_in_name = true;
        if is(t.get(*i), "::") {
            *i += 1;
            ends_in_name = false;
        } else {
            break;
        }
    }
    if is(t.get(*i), "{") {
        *i += 1;
        while *i < t.len() && !is(t.get(*i), "}") {
            parse_use_tree(t, i, &path, out);
            if is(t.get(*i), ",") {
                *i += 1;
            } else if !is(t.get(*i), "}") {
                // Not a use tree after all (a macro pattern?): give up on this group.
                break;
            }
        }
        *i += 1;
        if prefix.is_empty() && !path.is_empty() {
            out.roots.push((path[0].clone(), first_line));
        }
        return;
    }
    if is(t.get(*i), "*") {
        *i += 1;
    }
    let Some(root) = path.first().cloned() else {
        return;
    };
    if prefix.is_empty() {
        out.roots.push((root.clone(), first_line));
    }
    let mut bound = if ends_in_name {
        match path.last().map(String::as_str) {
            // `use a::b::{self}` binds `b`.
            Some("self") if path.len() >= 2 => Some(path[path.len() - 2].clone()),
            Some("self") => None,
            last => last.map(str::to_string),
        }
    } else {
        None
    };
    if ident(t.get(*i)) == Some("as") {
        *i += 1;
        bound = ident(t.get(*i)).map(str::to_string);
        *i += 1;
    }
    if let Some(b) = bound.filter(|b| b != "_") {
        out.bindings.push((b, root));
    }
}

/// The crates of `deps` that `src` uses, with the line of each use.
fn crate_uses(src: &str, deps: &BTreeSet<String>) -> Vec<Use> {
    let t = tokenize(src);
    let mut uses = Vec::new();
    // Names this file binds to something that is not the crate of that name.
    let mut ours = BTreeSet::new();
    // Token ranges of `use` declarations, scanned as trees and not again as paths.
    let mut in_use = vec![false; t.len()];
    let mut i = 0;
    while i < t.len() {
        match ident(t.get(i)) {
            Some("use") => {
                let start = i;
                i += 1;
                let mut tree = UseTree::default();
                parse_use_tree(&t, &mut i, &[], &mut tree);
                for (root, line) in tree.roots {
                    if deps.contains(&root) {
                        uses.push(Use { krate: root, line });
                    }
                }
                for (name, root) in tree.bindings {
                    if name != root {
                        ours.insert(name);
                    }
                }
                in_use[start..i.min(t.len())].fill(true);
            }
            Some("extern") if ident(t.get(i + 1)) == Some("crate") => {
                if let Some(name) = ident(t.get(i + 2))
                    && deps.contains(name)
                {
                    uses.push(Use {
                        krate: name.to_string(),
                        line: t[i + 2].1,
                    });
                }
                in_use[i..(i + 3).min(t.len())].fill(true);
                i += 3;
            }
            Some("mod") => {
                if let Some(name) = ident(t.get(i + 1)) {
                    ours.insert(name.to_string());
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    for k in 0..t.len() {
        let Some(name) = ident(t.get(k)) else {
            continue;
        };
        if in_use[k] || !deps.contains(name) || ours.contains(name) || !is(t.get(k + 1), "::") {
            continue;
        }
        // `a::name::` and `crate::name::` are not the crate; `::name::` at a path's start is.
        let after_path = k >= 1
            && is(t.get(k - 1), "::")
            && k >= 2
            && (ident(t.get(k - 2)).is_some() || is(t.get(k - 2), ">"));
        if !after_path {
            uses.push(Use {
                krate: name.to_string(),
                line: t[k].1,
            });
        }
    }
    uses.sort_by_key(|u| u.line);
    uses
}

/// The names of `Cargo.toml`'s `[dependencies]` (and `[target.….dependencies]`), as Rust
/// spells them (`-` → `_`).
fn dependencies(cargo_toml: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in cargo_toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let header = line.trim_matches(|c| c == '[' || c == ']');
            in_deps = header == "dependencies"
                || (header.starts_with("target.") && header.ends_with(".dependencies"));
        } else if in_deps
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            let name = name.trim();
            if !name.is_empty() && !name.contains('.') {
                deps.insert(crate_name(name));
            }
        }
    }
    deps
}

fn crate_name(s: &str) -> String {
    s.trim().replace('-', "_")
}

/// The crate names of one "imports" cell: comma-separated at the top level, each name
/// possibly bold or in backticks and followed by a note in parentheses; `—` is none.
fn cell_crates(cell: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for ch in cell.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => items.push(std::mem::take(&mut item)),
            _ if depth == 0 => item.push(ch),
            _ => {}
        }
    }
    items.push(item);
    items
        .iter()
        .map(|s| s.replace(['*', '`'], ""))
        .filter_map(|s| s.split_whitespace().next().map(crate_name))
        .filter(|s| s != "—" && s != "-")
        .collect()
}

fn table_cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|s| s.trim().to_string())
        .collect()
}

/// ARCHITECTURE.md's module table: module → the crates its "imports" column lists.
fn module_table(doc: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let lines: Vec<&str> = doc.lines().collect();
    let header = lines
        .iter()
        .position(|l| {
            let cells = table_cells(l);
            l.trim_start().starts_with('|')
                && cells.first().map(String::as_str) == Some("module")
                && cells.iter().any(|c| c == "imports")
        })
        .ok_or("ARCHITECTURE.md has no table with the columns `module` and `imports`")?;
    let cells = table_cells(lines[header]);
    let col = cells
        .iter()
        .position(|c| c == "imports")
        .expect("found above");
    let mut table = BTreeMap::new();
    for line in lines[header + 2..]
        .iter()
        .take_while(|l| l.trim_start().starts_with('|'))
    {
        let cells = table_cells(line);
        // `features`, or `main` (`src/main.rs`, …): the first word, without its note.
        let module = cell_crates(&cells[0]).first().cloned().unwrap_or_default();
        let imports = cells
            .get(col)
            .ok_or_else(|| format!("the module table's row `{module}` has no imports cell"))?;
        table.insert(module, cell_crates(imports));
    }
    Ok(table)
}

/// The crates named in backticks in the paragraph that starts with `**Used throughout**`.
fn used_throughout(doc: &str) -> Result<BTreeSet<String>, String> {
    let start = doc
        .find("**Used throughout**")
        .ok_or("ARCHITECTURE.md has no paragraph starting with `**Used throughout**`")?;
    let para = doc[start..].split("\n\n").next().unwrap_or_default();
    Ok(para.split('`').skip(1).step_by(2).map(crate_name).collect())
}

/// The module of a file under `src/`: its first path component, without `.rs`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// Every problem between what the code uses and what the document says, one per line.
/// `uses`: (module, file shown in messages, use), in file order.
fn problems(
    deps: &BTreeSet<String>,
    uses: &[(String, String, Use)],
    table: &BTreeMap<String, Vec<String>>,
    throughout: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for name in throughout {
        if !deps.contains(name) {
            out.push(format!(
                "ARCHITECTURE.md's \"Used throughout\" names `{name}`, which is not in \
                 Cargo.toml's [dependencies]"
            ));
        }
    }
    for (module, crates) in table {
        for name in crates {
            if !deps.contains(name) {
                out.push(format!(
                    "ARCHITECTURE.md's table lists `{name}` for `{module}`, which is not in \
                     Cargo.toml's [dependencies]"
                ));
            } else if throughout.contains(name) {
                out.push(format!(
                    "ARCHITECTURE.md's table lists `{name}` for `{module}`, which is also \
                     \"Used throughout\": name it in one place only"
                ));
            }
        }
    }
    // The first use of each (crate, module), with the files that use it.
    let mut seen: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (module, file, u) in uses {
        if throughout.contains(&u.krate) {
            continue;
        }
        let files = seen.entry((u.krate.clone(), module.clone())).or_default();
        let at = format!("{file}:{}", u.line);
        if !files.iter().any(|f| f.starts_with(&format!("{file}:"))) {
            files.push(at);
        }
    }
    for ((krate, module), files) in &seen {
        if !table.get(module).is_some_and(|l| l.contains(krate)) {
            out.push(format!(
                "`{krate}` is imported by module `{module}` ({}), and ARCHITECTURE.md's \
                 module table does not list it for `{module}`: add it to ARCHITECTURE.md's \
                 table or move the import",
                files.join(", ")
            ));
        }
    }
    for (module, crates) in table {
        for name in crates {
            if deps.contains(name)
                && !throughout.contains(name)
                && !seen.contains_key(&(name.clone(), module.clone()))
            {
                out.push(format!(
                    "ARCHITECTURE.md's table lists `{name}` for `{module}`, and no file of \
                     `{module}` imports it: remove it from the table"
                ));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every (module, file, use) under `root/src`.
fn scan(root: &Path, deps: &BTreeSet<String>) -> Vec<(String, String, Use)> {
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        let rel = f.strip_prefix(&src).expect("under src");
        let shown = Path::new("src").join(rel).display().to_string();
        for u in crate_uses(&text, deps) {
            uses.push((module_of(rel), shown.clone(), u));
        }
    }
    uses
}

/// What each module imports today, as the table's column would read (for fixing the
/// table by hand: `cargo test --test it imports -- --nocapture`).
fn summary(uses: &[(String, String, Use)], throughout: &BTreeSet<String>) -> String {
    let mut by_module: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, _, u) in uses {
        let set = by_module.entry(module).or_default();
        if !throughout.contains(&u.krate) {
            set.insert(&u.krate);
        }
    }
    let mut s = String::new();
    for (module, crates) in by_module {
        let list: Vec<&str> = crates.into_iter().collect();
        writeln!(s, "{module}: {}", list.join(", ")).expect("write to a String");
    }
    s
}

#[test]
fn every_third_party_import_is_listed_in_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |name: &str| {
        fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    };
    let deps = dependencies(&read("Cargo.toml"));
    assert!(
        deps.contains("burn") && deps.contains("lsskd_kernels"),
        "Cargo.toml's [dependencies] as parsed: {deps:?}"
    );
    let doc = read("ARCHITECTURE.md");
    let table = module_table(&doc).unwrap_or_else(|e| panic!("{e}"));
    let throughout = used_throughout(&doc).unwrap_or_else(|e| panic!("{e}"));
    let uses = scan(root, &deps);
    println!(
        "what each module imports (besides \"Used throughout\"):\n{}",
        summary(&uses, &throughout)
    );
    let problems = problems(&deps, &uses, &table, &throughout);
    assert!(
        problems.is_empty(),
        "{} problem(s) between src/ and ARCHITECTURE.md's module table:\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

fn deps_of(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn used(src: &str, names: &[&str]) -> Vec<(String, usize)> {
    crate_uses(src, &deps_of(names))
        .into_iter()
        .map(|u| (u.krate, u.line))
        .collect()
}

#[test]
fn import_scanner_counts_uses_paths_groups_and_extern_crate() {
    let src = "use burn::tensor::Tensor;\n\
               use {image, hound::WavReader};\n\
               extern crate rand;\n\
               fn f() -> ::tract_onnx::prelude::TVec<u8> { tokio::spawn(x); }\n\
               #[derive(clap::Args)]\n\
               struct A { v: Vec<rubato::Fft> }\n";
    let names = [
        "burn",
        "image",
        "hound",
        "rand",
        "tract_onnx",
        "tokio",
        "clap",
        "rubato",
    ];
    assert_eq!(
        used(src, &names),
        vec![
            ("burn".to_string(), 1),
            ("image".to_string(), 2),
            ("hound".to_string(), 2),
            ("rand".to_string(), 3),
            ("tract_onnx".to_string(), 4),
            ("tokio".to_string(), 4),
            ("clap".to_string(), 5),
            ("rubato".to_string(), 6),
        ]
    );
}

#[test]
fn import_scanner_skips_comments_literals_and_paths_that_are_not_the_crate() {
    let src = r####"
        // use burn::tensor;
        /* image::open /* nested */ hound::x */
        /// [`burn::Tensor`]
        const A: &str = "burn::tensor";
        const B: &str = r#"a "quoted" image::open"#;
        const C: &[u8] = br##"hound::"#"##;
        const D: char = '"'; const E: char = '\''; fn g<'a>(x: &'a str) {}
        use crate::image::decode;
        use crate::features::{audio, image::Rgb};
        use super::{hound};
        fn f() { crate::burn::x(); self::rand::y(); features::image::z(); }
        mod toml;
        fn h() { toml::parse(); }
        use crate::settings::config as csv;
        fn k() { csv::read(); }
    "####;
    assert_eq!(
        used(src, &["burn", "image", "hound", "rand", "toml", "csv"]),
        vec![]
    );
}

#[test]
fn import_scanner_finds_a_use_after_tricky_literals() {
    // If a literal or comment were misread, the scanner would lose its place and miss
    // the use at the end.
    let src = "let a = '\\u{1F600}'; let b = b'\\''; let c = \"\\\"\";\n\
               let d = r#\"\"#; /* ** / */ 'outer: loop {}\n\
               let e = r#type; image::open(p);\n";
    assert_eq!(used(src, &["image"]), vec![("image".to_string(), 3)]);
}

const DOC: &str = "\
| module | owns | imports | runs on |
|---|---|---|---|
| `features` | decoding | image, hound | caller |
| `lsskd` | training | **burn** (flex, `extension`), `lsskd-kernels` (crates/: a, b) | thread |
| `dataset` | items | — | caller |
| `main` (`src/main.rs`, the binary) | the CLI | — | main |

**Used throughout** (any module): `anyhow`, `serde`.

And not `this`.
";

#[test]
fn table_parser_reads_bold_backticks_notes_and_the_used_throughout_list() {
    let table = module_table(DOC).expect("a table");
    assert_eq!(table["features"], ["image", "hound"]);
    assert_eq!(table["lsskd"], ["burn", "lsskd_kernels"]);
    assert!(table["dataset"].is_empty());
    assert!(table["main"].is_empty());
    assert_eq!(
        used_throughout(DOC).expect("a list"),
        deps_of(&["anyhow", "serde"])
    );
    assert_eq!(
        dependencies(
            "[dependencies]\nlsskd-kernels = { path = \"x\" }\nburn = \"1\"\n\n[dev-dependencies]\ntempfile = \"3\"\n"
        ),
        deps_of(&["burn", "lsskd_kernels"])
    );
    assert_eq!(module_of(Path::new("capture/camera.rs")), "capture");
    assert_eq!(module_of(Path::new("main.rs")), "main");
}

#[test]
fn check_fails_on_an_unlisted_importer_and_says_where_and_what_to_do() {
    let deps = deps_of(&["anyhow", "serde", "image", "hound", "burn", "lsskd_kernels"]);
    let table = module_table(DOC).expect("a table");
    let throughout = used_throughout(DOC).expect("a list");
    let at = |module: &str, file: &str, krate: &str, line| {
        (
            module.to_string(),
            file.to_string(),
            Use {
                krate: krate.to_string(),
                line,
            },
        )
    };
    let listed = vec![
        at("features", "src/features/mod.rs", "image", 3),
        at("features", "src/features/audio.rs", "hound", 4),
        at("lsskd", "src/lsskd/net.rs", "burn", 5),
        at("lsskd", "src/lsskd/kernels.rs", "lsskd_kernels", 6),
        at("dataset", "src/dataset/mod.rs", "anyhow", 1),
    ];
    assert_eq!(
        problems(&deps, &listed, &table, &throughout),
        Vec::<String>::new()
    );

    let mut more = listed.clone();
    more.push(at("dataset", "src/dataset/folder.rs", "image", 12));
    let p = problems(&deps, &more, &table, &throughout);
    assert_eq!(p.len(), 1, "{p:?}");
    for part in [
        "`image`",
        "`dataset`",
        "src/dataset/folder.rs:12",
        "add it to ARCHITECTURE.md's table or move the import",
    ] {
        assert!(p[0].contains(part), "{part} in {}", p[0]);
    }

    // A row that names a crate its module no longer imports, or a crate that is not a
    // dependency, is untrue too.
    let p = problems(&deps, &listed[1..], &table, &throughout);
    assert!(
        p.len() == 1 && p[0].contains("remove it from the table"),
        "{p:?}"
    );
    let p = problems(
        &deps_of(&["anyhow", "serde", "hound", "burn", "lsskd_kernels"]),
        &listed[1..],
        &table,
        &throughout,
    );
    assert!(p.iter().any(|l| l.contains("not in Cargo.toml")), "{p:?}");
}

/// `fuzz/` is its own workspace with its own lock file, built only by `scripts/fuzz.sh`
/// (`--locked`): a dependency added to the library must reach that lock file too, or the
/// fuzzing build refuses to start ("cannot update the lock file … --locked").
#[test]
fn the_fuzz_crates_lock_file_covers_the_librarys_dependencies() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(crate::common::repo().join("fuzz/Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "fuzz/Cargo.lock is out of date (run `cargo update -w --manifest-path fuzz/Cargo.toml`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
