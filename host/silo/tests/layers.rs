//! Architecture invariant: the silo is built in layers. Every unit of `src/`
//! (a top-level folder, or a top-level file's stem) has a rank in [`RANKS`],
//! and a file names only its own unit or units ranked below it, so each layer
//! can be read, tested and changed without the ones above it. Files never
//! import each other in a circle, and none grows past [`MAX_LINES`]. The test
//! reads the sources (comments and literals blanked out first), so it needs no
//! dependency; `RIO_LAYERS_SRC` points it at another source tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Lowest first: a file may name units of a lower rank, never a higher one.
const RANKS: &[(&str, u32)] = &[
    ("base", 0),       // object keys, clock, reserved names, limits, text helpers
    ("config", 1),     // configuration, tokens, TLS
    ("storage", 2),    // the store traits and backends
    ("deadlock", 2),   // the wait-for graph
    ("observe", 2),    // counters and gauges
    ("message", 3),    // envelopes, replies, connections' reply side, the Dispatch trait
    ("cluster", 3),    // membership, placement, forwarding
    ("effects", 4),    // committer, outbox, client sends, idempotency, interrupted turns, wake-ups
    ("time", 4),       // timers, reminders and their scan, driven by the injected clock
    ("events", 4),     // pub/sub: subscriptions, fan-out, the queues to other silos
    ("host", 5),       // the WIT bindings and one file per WIT interface
    ("runtime", 6),    // engine, mappings, component cache, deployments
    ("activation", 7), // an object's lifecycle and turns, the directory
    ("routing", 8),    // the router
    ("ingress", 9),    // the wire server, auth checks
    ("lib", TOP),      // the top is wiring: lib.rs declares and re-exports the units,
    ("silo", TOP),     // silo.rs starts and joins the parts,
    ("error", TOP),    // error.rs is the library's error
];

/// The wiring at the top may name one another (silo.rs returns error.rs's
/// error, lib.rs re-exports both); circles among them are still caught.
const TOP: u32 = 10;

const MAX_LINES: usize = 600;

/// Files allowed past `MAX_LINES`, as (path under src/, reason). Only data
/// tables, such as migrations, belong here.
const LONG_FILES: &[(&str, &str)] = &[];

type Tokens = [(String, usize)]; // (token, line)
type ItemPath = Vec<String>; // a module path, or an item's: ["cluster", "now_ms"]
type Modules = BTreeMap<ItemPath, usize>; // module → its file
type Edges = BTreeMap<usize, Vec<String>>; // file → what is named there
/// The unit and the file a path lands in, or why it has none (see `target`).
type Target = Result<(String, usize), Option<String>>;

struct SourceFile {
    rel: String,      // "cluster/mod.rs"
    module: ItemPath, // ["cluster"]
    text: String,
}

/// A crate-local path named by a file, as written and from the crate root.
struct Reference {
    line: usize,
    written: String,
    absolute: ItemPath,
}

struct Crate {
    files: Vec<SourceFile>,
    modules: Modules,
    units: BTreeSet<String>,
    /// (module, name) → the path from the root that a `use` at the module's
    /// top binds to the name (`None`: another crate's). They are followed so
    /// that `crate::ObjectKey` or `super::Outbox` lead to the file defining it.
    imports: BTreeMap<(ItemPath, String), Option<ItemPath>>,
}

fn rank(unit: &str) -> Option<u32> {
    RANKS
        .iter()
        .find_map(|&(name, rank)| (name == unit).then_some(rank))
}

/// The unit of a path under src/: its first folder, or its stem.
fn unit_of(rel: &str) -> &str {
    let first = rel.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first)
}

fn is_word(token: &str) -> bool {
    token.starts_with(|c: char| c.is_alphanumeric() || c == '_')
}

/// A file and its module: `a/b.rs` and `a/b/mod.rs` are `a::b`, lib.rs the root.
fn source_file(rel: &str, text: String) -> SourceFile {
    let stem = rel.strip_suffix(".rs").unwrap();
    let mut module: ItemPath = stem.split('/').map(String::from).collect();
    if module.last().is_some_and(|last| last == "mod") || rel == "lib.rs" {
        module.pop();
    }
    SourceFile {
        rel: rel.to_string(),
        module,
        text,
    }
}

fn collect(dir: &std::path::Path, prefix: &str, out: &mut Vec<SourceFile>) {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let rel = format!("{prefix}{}", path.file_name().unwrap().to_string_lossy());
        if path.is_dir() {
            collect(&path, &format!("{rel}/"), out);
        } else if rel.ends_with(".rs") {
            out.push(source_file(&rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

impl Crate {
    fn read() -> Crate {
        let dir = std::env::var_os("RIO_LAYERS_SRC")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"));
        let mut files = Vec::new();
        collect(&dir, "", &mut files);
        // Top-level folders and .rs files (a folder's name has no dot).
        let names = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name());
        let units = names
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| !name.contains('.') || name.ends_with(".rs"))
            .map(|name| unit_of(&name).to_string())
            .collect();
        Crate::new(files, units)
    }

    fn new(files: Vec<SourceFile>, units: BTreeSet<String>) -> Crate {
        let modules = files
            .iter()
            .enumerate()
            .map(|(i, file)| (file.module.clone(), i));
        let modules: Modules = modules.collect();
        assert!(modules.contains_key(&vec![]), "no lib.rs in the sources");
        let mut imports = BTreeMap::new();
        for file in &files {
            let (toks, mut depth) = (tokens(&file.text), 0);
            for i in 0..toks.len() {
                match toks[i].0.as_str() {
                    "{" => depth += 1,
                    "}" => depth -= 1,
                    "use" if depth == 0 => {
                        for (path, name) in use_tree(&toks, &mut (i + 1), Vec::new()) {
                            let target = absolute(&modules, &path, &file.module, true);
                            imports.insert((file.module.clone(), name), target);
                        }
                    }
                    _ => {}
                }
            }
        }
        Crate {
            files,
            modules,
            units,
            imports,
        }
    }

    /// The unit and file a path from the root lands in: the longest module
    /// path that is a file, after following the imports there (a few hops, in
    /// case a `use` names itself). `Err(None)` for another crate's item,
    /// `Err(Some(name))` for a root name neither a unit nor imported by lib.rs.
    fn target(&self, absolute: &[String], hops: usize) -> Target {
        let is_file = |n: &usize| self.modules.contains_key(&absolute[..*n]);
        let n = (0..=absolute.len()).rev().find(is_file).unwrap(); // lib.rs at 0
        let file = self.modules[&absolute[..n]];
        let key = (
            absolute[..n].to_vec(),
            absolute.get(n).cloned().unwrap_or_default(),
        );
        match (self.imports.get(&key), absolute.first()) {
            (Some(Some(path)), _) if hops < 8 => {
                self.target(&[&path[..], &absolute[n + 1..]].concat(), hops + 1)
            }
            (Some(None), _) => Err(None),
            (_, Some(unit)) if self.units.contains(unit) => Ok((unit.clone(), file)),
            (_, Some(name)) => Err(Some(name.clone())),
            (_, None) => Ok(("lib".into(), file)),
        }
    }

    /// Every crate-local path a file names: in `use` trees, and inline ones
    /// such as `crate::cluster::now_ms()` or `super::outbox::write(…)`.
    fn references(&self, file: &SourceFile) -> Vec<Reference> {
        let toks = tokens(&file.text);
        let (mut out, mut i) = (Vec::new(), 0);
        let mut braces: Vec<Option<String>> = Vec::new(); // an inline `mod name {` or other
        while i < toks.len() {
            let before = |k: usize| if i >= k { toks[i - k].0.as_str() } else { "" };
            let here: ItemPath = file
                .module
                .iter()
                .chain(braces.iter().flatten())
                .cloned()
                .collect();
            let (tok, line) = (toks[i].0.as_str(), toks[i].1);
            let (mut paths, mut in_use) = (Vec::new(), true);
            match tok {
                "{" => braces.push(Some(before(1).to_string()).filter(|_| before(2) == "mod")),
                "}" => drop(braces.pop()),
                "use" => {
                    i += 1;
                    paths = use_tree(&toks, &mut i, Vec::new());
                    i -= 1;
                }
                "crate" | "super" | "self" if before(1) != "$" && before(1) != "::" => {
                    let mut path = vec![tok.to_string()];
                    while toks.get(i + 1).is_some_and(|(t, _)| t == "::")
                        && let Some((step, _)) = toks.get(i + 2).filter(|(t, _)| is_word(t))
                    {
                        path.push(step.clone());
                        i += 2;
                    }
                    if path.len() > 1 {
                        (paths, in_use) = (vec![(path, String::new())], false);
                    }
                }
                _ => {}
            }
            for (path, name) in paths {
                if let Some(absolute) = absolute(&self.modules, &path, &here, in_use) {
                    let glob = if name == "*" { "::*" } else { "" };
                    out.push(Reference {
                        line,
                        written: path.join("::") + glob,
                        absolute,
                    });
                }
            }
            i += 1;
        }
        out
    }
}

/// `path` as written in module `here`, from the crate root; `None` for
/// another crate's path. A bare path counts in `use`, for a child module.
fn absolute(modules: &Modules, path: &[String], here: &[String], bare: bool) -> Option<ItemPath> {
    let first = path.first()?.as_str();
    let child = [here, &path[..1]].concat();
    let (mut base, mut rest) = match first {
        "crate" => (Vec::new(), &path[1..]),
        "super" | "self" => (here.to_vec(), path),
        _ if bare && modules.contains_key(&child) => (here.to_vec(), path),
        _ => return None,
    };
    while let Some(step) = rest
        .first()
        .filter(|step| *step == "super" || *step == "self")
    {
        if step == "super" {
            base.pop();
        }
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|step| *step != "self").cloned());
    Some(base)
}

/// The tokens of a source, each with its line: words, `::`, and every other
/// character on its own. Comments and string and char literals are skipped,
/// so a path inside them is never read as code.
fn tokens(source: &str) -> Vec<(String, usize)> {
    let b = source.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let word = |i: usize| at(i).is_ascii_alphanumeric() || at(i) == b'_' || at(i) >= 0x80;
    let past = |from: usize, pattern: &[u8]| {
        let found = (from..b.len()).find(|&i| b[i..].starts_with(pattern));
        found.map_or(b.len(), |i| i + pattern.len())
    };
    let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
    while i < b.len() {
        let start = i;
        let r = i + usize::from(matches!(at(i), b'b' | b'c') && at(i + 1) == b'r'); // br"…"
        let hashes = (r + 1..b.len()).take_while(|&j| b[j] == b'#').count();
        let quoted = source.get(i..).and_then(|rest| rest.chars().nth(1));
        let quoted = quoted.unwrap_or('\'');
        if b[i..].starts_with(b"//") {
            i = past(i, b"\n");
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                let (open, close) = (b[i..].starts_with(b"/*"), b[i..].starts_with(b"*/"));
                depth += i32::from(open) - i32::from(close);
                i += if open || close { 2 } else { 1 };
                if depth == 0 {
                    break;
                }
            }
        } else if (i == 0 || !word(i - 1)) && at(r) == b'r' && at(r + 1 + hashes) == b'"' {
            i = past(
                r + 2 + hashes,
                format!("\"{}", "#".repeat(hashes)).as_bytes(),
            );
        } else if at(i) == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if at(i) == b'\'' && quoted == '\\' {
            i = past(i + 3, b"'"); // '\n', '\'', '\u{…}'
        } else if at(i) == b'\'' && quoted != '\'' && at(i + 1 + quoted.len_utf8()) == b'\'' {
            i += 2 + quoted.len_utf8(); // 'x', where 'a would be a lifetime
        } else {
            i += if word(i) {
                (i..b.len()).take_while(|&j| word(j)).count()
            } else {
                1
            };
            i += usize::from(&b[start..i] == b":" && at(i) == b':');
            if !b[start].is_ascii_whitespace() {
                out.push((source[start..i].to_string(), line));
            }
        }
        line += b[start..i.min(b.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
    }
    out
}

/// The paths of one use tree, `a::{b, c::D as E, f::*}`, each with the name
/// it binds (`*` for a glob); `i` ends on the token after the tree.
fn use_tree(toks: &Tokens, i: &mut usize, mut path: ItemPath) -> Vec<(ItemPath, String)> {
    let next_is = |i: usize, what: &str| toks.get(i).is_some_and(|(tok, _)| tok == what);
    let mut out = Vec::new();
    while let Some((tok, _)) = toks.get(*i) {
        *i += 1;
        match tok.as_str() {
            "::" => {}
            "*" => return vec![(path, "*".into())],
            "{" => {
                while toks
                    .get(*i)
                    .is_some_and(|(tok, _)| tok != "}" && tok != ";")
                {
                    out.extend(use_tree(toks, i, path.clone()));
                    *i += usize::from(next_is(*i, ","));
                }
                *i += 1;
                break;
            }
            word if is_word(word) => {
                path.push(word.to_string());
                let mut name = if word == "self" {
                    path[path.len().saturating_sub(2)].clone()
                } else {
                    word.into()
                };
                if next_is(*i, "as") {
                    name = toks
                        .get(*i + 1)
                        .map(|(alias, _)| alias.clone())
                        .unwrap_or_default();
                    *i += 2;
                }
                if !next_is(*i, "::") {
                    return vec![(path, name)];
                }
            }
            _ => {
                *i -= 1; // `,` `}` `;` end the tree
                break;
            }
        }
    }
    out
}

/// Tarjan's strongly connected components.
fn components(edges: &[Edges]) -> Vec<Vec<usize>> {
    struct Walk<'a> {
        edges: &'a [Edges],
        index: Vec<usize>,
        low: Vec<usize>,
        stack: Vec<usize>,
        found: Vec<Vec<usize>>,
    }
    fn visit(walk: &mut Walk, v: usize) {
        let edges = walk.edges;
        let next = walk.stack.len() + walk.found.iter().map(Vec::len).sum::<usize>();
        (walk.index[v], walk.low[v]) = (next, next); // numbered in visiting order
        walk.stack.push(v);
        for &u in edges[v].keys() {
            if walk.index[u] == usize::MAX {
                visit(walk, u);
                walk.low[v] = walk.low[v].min(walk.low[u]);
            } else if walk.stack.contains(&u) {
                walk.low[v] = walk.low[v].min(walk.index[u]);
            }
        }
        if walk.low[v] == walk.index[v] {
            let at = walk.stack.iter().rposition(|&u| u == v).unwrap();
            walk.found.push(walk.stack.split_off(at));
        }
    }
    let n = edges.len();
    let (index, low) = (vec![usize::MAX; n], vec![0; n]);
    let mut walk = Walk {
        edges,
        index,
        low,
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in 0..n {
        if walk.index[v] == usize::MAX {
            visit(&mut walk, v);
        }
    }
    walk.found
}

#[test]
fn every_unit_is_ranked() {
    let krate = Crate::read();
    let unranked: Vec<_> = krate
        .units
        .iter()
        .filter(|unit| rank(unit).is_none())
        .collect();
    assert!(
        unranked.is_empty(),
        "units of src/ without a rank: {unranked:?}\n\
         move each into a ranked unit, or give a new one its rank in RANKS (tests/layers.rs)"
    );
}

#[test]
fn imports_never_climb() {
    let krate = Crate::read();
    let mut offences = Vec::new();
    for file in &krate.files {
        let unit = unit_of(&file.rel);
        for reference in krate.references(file) {
            let place = format!(
                "src/{}:{}: `{}`",
                file.rel, reference.line, reference.written
            );
            match krate.target(&reference.absolute, 0) {
                // An unranked unit cannot be judged; every_unit_is_ranked names it.
                Ok((target, _)) => match (rank(unit), rank(&target)) {
                    (Some(from), Some(to)) if target != unit && to >= from && from != TOP => {
                        offences.push(format!(
                            "{place}: `{unit}` (rank {from}) climbs to `{target}` (rank {to}); \
                             move what it needs down, or have the upper unit pass it in"
                        ))
                    }
                    _ => {}
                },
                Err(Some(name)) => offences.push(format!(
                    "{place}: `{name}` is neither a unit nor imported by lib.rs; \
                     name it by its unit's path"
                )),
                Err(None) => {}
            }
        }
    }
    assert!(
        offences.is_empty(),
        "{} imports climb:\n{}",
        offences.len(),
        offences.join("\n")
    );
}

#[test]
fn no_import_circles_between_files() {
    let krate = Crate::read();
    // A module file and the files under it (their `mod` lines, their
    // `use super::…`) are one piece: edges between them do not count.
    let mut edges: Vec<Edges> = vec![BTreeMap::new(); krate.files.len()];
    for (from, file) in krate.files.iter().enumerate() {
        for reference in krate.references(file) {
            let Ok((_, to)) = krate.target(&reference.absolute, 0) else {
                continue;
            };
            let (a, b) = (&file.module, &krate.files[to].module);
            if !a.starts_with(b) && !b.starts_with(a) {
                let named = format!("line {}: {}", reference.line, reference.written);
                edges[from].entry(to).or_default().push(named);
            }
        }
    }
    let mut circles = Vec::new();
    for component in components(&edges)
        .into_iter()
        .filter(|files| files.len() > 1)
    {
        circles.push(format!("a circle of {} files:", component.len()));
        for &from in &component {
            for (to, named) in edges[from].iter().filter(|(to, _)| component.contains(to)) {
                let (a, b) = (&krate.files[from].rel, &krate.files[*to].rel);
                circles.push(format!("  {a} → {b} ({})", named.join(", ")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "files import each other in circles; break each by moving what both need into a lower \
         file, or by having the lower one take a trait or a callback:\n{}",
        circles.join("\n")
    );
}

#[test]
fn no_source_file_over_600_lines() {
    let krate = Crate::read();
    let long: Vec<String> = krate
        .files
        .iter()
        .filter(|file| !LONG_FILES.iter().any(|(rel, _)| *rel == file.rel))
        .filter(|file| file.text.lines().count() > MAX_LINES)
        .map(|file| format!("src/{}: {} lines", file.rel, file.text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines; split each by concern into a folder of smaller files \
         (only data tables may go in LONG_FILES, with a reason):\n{}",
        long.join("\n")
    );
}

fn use_paths(source: &str) -> Vec<String> {
    let toks = tokens(source);
    let trees = (0..toks.len()).filter(|&i| toks[i].0 == "use");
    let paths = trees.flat_map(|i| use_tree(&toks, &mut (i + 1), Vec::new()));
    paths
        .map(|(path, name)| format!("{}={name}", path.join("::")))
        .collect()
}

#[test]
fn parser_reads_nested_braces() {
    let source = "pub(crate) use crate::{\n    a::{b, c::D as E},\n    d::{self, *},\n    f,\n};";
    let expected = [
        "crate::a::b=b",
        "crate::a::c::D=E",
        "crate::d::self=d",
        "crate::d=*",
        "crate::f=f",
    ];
    assert_eq!(use_paths(source), expected);
}

#[test]
fn parser_ignores_comments_and_literals() {
    let source = "// use crate::a;\n/* use crate::b; /* nested */ use crate::c; */\n\
                  const S: &str = r#\"use crate::d;\"#; const Q: char = '\"';\n\
                  fn f<'a>() -> &'a str { \"use crate::e; \\\" use crate::g;\" }\nuse crate::f;";
    assert_eq!(use_paths(source), ["crate::f=f"]);
    let last = tokens(source).pop();
    assert_eq!(
        last,
        Some((";".into(), 5)),
        "lines are counted through comments and literals"
    );
}

#[test]
fn references_follow_imports_and_inline_modules() {
    let b = "fn f() -> crate::Key { crate::a::make() }\n\
             #[cfg(test)]\nmod tests {\n    use super::*; // crate::c\n}\nfn g(_: self::Local) {}";
    let files = [
        ("lib.rs", "mod a;\nmod b;\npub use a::Key;"),
        ("a.rs", ""),
        ("b.rs", b),
    ];
    let files = files
        .map(|(rel, text)| source_file(rel, text.into()))
        .into();
    let units = ["a", "b", "lib"].map(String::from).into();
    let krate = Crate::new(files, units);
    let found = krate.references(&krate.files[2]).into_iter().map(|r| {
        let target = krate.target(&r.absolute, 0);
        format!("{}: {} {target:?}", r.line, r.written)
    });
    let found: Vec<_> = found.collect();
    let expected = [
        r#"1: crate::Key Ok(("a", 1))"#,
        r#"1: crate::a::make Ok(("a", 1))"#,
        r#"4: super::* Ok(("b", 2))"#,
        r#"6: self::Local Ok(("b", 2))"#,
    ];
    assert_eq!(found, expected);
}
