//! The invariants ARCHITECTURE.md states about where code lives, checked on the source:
//! each fails when a change breaks the rule it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates that run in production (the bench and the test harness are tools).
const PRODUCTION: [&str; 7] = [
    "domain",
    "event-store",
    "command-handlers",
    "projections",
    "nats",
    "webhooks",
    "api",
];

/// Lines past which a production file's first lines must say why it is that long.
const FILE_LINES_MAX: usize = 600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("a source directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere).
fn production_part(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

/// SQL naming the `events` table: `FROM events`, `INTO events`, `JOIN events`, `UPDATE
/// events` (SQL keywords are written in capitals here; prose says "from events").
fn names_events_table(text: &str) -> bool {
    let t = text;
    ["FROM events", "INTO events", "JOIN events", "UPDATE events"]
        .iter()
        .any(|p| {
            t.match_indices(p).any(|(i, m)| {
                // `events` as a whole word, not `events_archive` or `events.`-less prefixes.
                t[i + m.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            })
        })
}

/// Fails when the domain gains a way to do IO (seen with `tokio` added to
/// `domain/Cargo.toml`'s dependencies).
#[test]
fn the_domain_does_no_io() {
    let manifest = std::fs::read_to_string(root().join("domain/Cargo.toml")).expect("a manifest");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|d| d.split("\n[").next())
        .unwrap_or_default();
    let io = ["sqlx", "tokio", "axum", "async-nats", "reqwest", "hyper"];
    let named: Vec<_> = io
        .iter()
        .filter(|c| deps.lines().any(|l| l.trim_start().starts_with(**c)))
        .collect();
    assert!(named.is_empty(), "the domain depends on {named:?}");
    let offenders: Vec<_> = sources(&root().join("domain/src"))
        .into_iter()
        .filter(|(_, text)| {
            let code = production_part(text);
            ["std::fs", "std::net", "std::process", "tokio::", "sqlx::"]
                .iter()
                .any(|p| code.contains(p))
        })
        .map(|(p, _)| p)
        .collect();
    assert!(offenders.is_empty(), "IO in the domain: {offenders:?}");
}

/// Fails when a crate queries `events` itself (seen with `JOIN events` added to
/// `find_login`'s statement in `command-handlers/src/ledger.rs`).
#[test]
fn only_the_event_store_names_the_events_table() {
    let offenders: Vec<_> = PRODUCTION
        .iter()
        .filter(|k| **k != "event-store")
        .flat_map(|k| sources(&root().join(k).join("src")))
        .filter(|(_, text)| names_events_table(production_part(text)))
        .map(|(p, _)| p)
        .collect();
    assert!(
        offenders.is_empty(),
        "SQL on `events` belongs in event-store: {offenders:?}"
    );
}

/// Fails when another crate uses the NATS client itself (seen with
/// `async_nats::connection::State` named in `api/src/routes/health.rs` again).
#[test]
fn only_the_nats_crate_talks_to_nats() {
    // The projection worker reads the messages of the consumer `nats` hands it.
    let allowed = root().join("projections/src/worker.rs");
    let offenders: Vec<_> = PRODUCTION
        .iter()
        .filter(|k| **k != "nats")
        .flat_map(|k| sources(&root().join(k).join("src")))
        .filter(|(p, text)| *p != allowed && production_part(text).contains("async_nats::"))
        .map(|(p, _)| p)
        .collect();
    assert!(
        offenders.is_empty(),
        "NATS belongs in the nats crate: {offenders:?}"
    );
}

/// Fails when a handler runs SQL itself (seen with the readiness check's `SELECT 1` put
/// back into `api/src/routes/health.rs`): handlers parse, authorize, query or command, and
/// render; the queries are `projections::read`'s and `event-store`'s.
#[test]
fn handlers_run_no_sql() {
    let offenders: Vec<_> = sources(&root().join("api/src/routes"))
        .into_iter()
        .filter(|(_, text)| production_part(text).contains("sqlx"))
        .map(|(p, _)| p)
        .collect();
    assert!(offenders.is_empty(), "SQL in handlers: {offenders:?}");
}

/// The modules of a crate and, for each, the modules of the same crate it uses
/// (`crate::x`, or `super::x` from a submodule's file, by first segment).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources(src) {
        let rel = path.strip_prefix(src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let uses = graph.entry(top.clone()).or_default();
        for (i, _) in production_part(&text).match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // Items re-exported at the crate root (`crate::Ledger`) are not modules.
            if !name.is_empty()
                && name.chars().next().is_some_and(|c| c.is_lowercase())
                && name != top
            {
                uses.insert(name);
            }
        }
    }
    graph
}

/// A cycle in `graph`, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Fails on a circle (seen with `use crate::ledger::Ledger` added to `load.rs`).
#[test]
fn the_write_side_has_no_circle_between_its_modules() {
    let graph = module_graph(&root().join("command-handlers/src"));
    assert!(graph.contains_key("committer") && graph.contains_key("decide"));
    assert_eq!(
        cycle(&graph),
        None,
        "modules of command-handlers: {graph:?}"
    );
}

#[test]
fn the_cycle_check_finds_a_circle() {
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn a_long_production_file_says_why_at_its_top() {
    let mut offenders = Vec::new();
    for krate in PRODUCTION {
        for (path, text) in sources(&root().join(krate).join("src")) {
            let lines = text.lines().count();
            let top: String = text.lines().take(8).collect::<Vec<_>>().join("\n");
            if lines > FILE_LINES_MAX && !top.contains("600 lines") {
                offenders.push(format!("{} ({lines} lines)", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "past {FILE_LINES_MAX} lines without saying why in the first lines: {offenders:?}"
    );
}
