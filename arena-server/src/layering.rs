//! The dependency rule between this crate's rooms, checked on its source:
//! `domain` imports nothing of the crate; `store` and `queue` import only
//! `domain`; `context` imports those three; `work` does not import `http`,
//! `app` or `cli`; `http` does not import `app` or `cli`; only `app` and
//! `cli` compose everything (and only `cli` imports `app`). Any import
//! against the rule fails the test, as does any cycle between rooms.
//! `domain` also may not use the I/O crates (actix, Redis, tokio, sqlx
//! queries and pools); deriving `sqlx::Type` is a type mapping and allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each room and the rooms it may import.
const RULE: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("store", &["domain"]),
    ("queue", &["domain"]),
    ("context", &["domain", "store", "queue"]),
    ("work", &["domain", "store", "queue", "context"]),
    ("http", &["domain", "store", "queue", "context", "work"]),
    ("app", &["domain", "store", "queue", "context", "work", "http"]),
    ("cli", &["domain", "store", "queue", "context", "work", "http", "app"]),
];

/// Text a `domain` file may not contain: the I/O crates.
const DOMAIN_FORBIDS: &[&str] =
    &["actix_web", "redis::", "tokio::", "sqlx::query", "PgPool", "PgConnection", "reqwest"];

/// The rooms a file's text names through `crate::room` (plain or inside a
/// `use crate::{…}` group).
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        rest = after;
    }
    found
}

/// Every breach of the rule in `files` (room, path, text), and every cycle.
fn violations(files: &[(String, String, String)]) -> Vec<String> {
    let rule: BTreeMap<&str, &[&str]> = RULE.iter().copied().collect();
    let mut problems = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (room, path, text) in files {
        let Some(allowed) = rule.get(room.as_str()) else {
            problems.push(format!("{path}: room `{room}` is not in the layering rule (add it to RULE)"));
            continue;
        };
        for target in imports(text) {
            if target == *room {
                continue;
            }
            graph.entry(room.clone()).or_default().insert(target.clone());
            if rule.contains_key(target.as_str()) && !allowed.contains(&target.as_str()) {
                problems.push(format!("{path}: `{room}` imports `crate::{target}`, which the rule forbids"));
            }
        }
        if room == "domain" {
            for word in DOMAIN_FORBIDS {
                if text.lines().filter(|l| !l.trim_start().starts_with("//")).any(|l| l.contains(word)) {
                    problems.push(format!("{path}: `domain` uses `{word}` (domain does no I/O, imports no room)"));
                }
            }
        }
    }
    // Cycles: a room that reaches itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(next) = stack.pop() {
            if next == start {
                problems.push(format!("rooms import each other in a cycle through `{start}`"));
                break;
            }
            if seen.insert(next.clone())
                && let Some(more) = graph.get(next)
            {
                stack.extend(more.iter());
            }
        }
    }
    problems
}

/// Every `.rs` file under `src/`, with its room (the first folder, or the
/// file's stem for a top-level file).
fn source_files() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.map(|e| e.path()).unwrap_or_default();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap_or(&path);
            let first = relative.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
            let Some(first) = first else { continue };
            let room = first.trim_end_matches(".rs").to_owned();
            // The crate root and the binary compose; this checker is a test.
            if ["lib", "main", "layering", "fuzz"].contains(&room.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            files.push((room, relative.display().to_string(), text));
        }
    }
    files
}

#[test]
fn the_rooms_keep_the_dependency_rule() {
    let files = source_files();
    assert!(files.len() > 30, "found only {} source files", files.len());
    let problems = violations(&files);
    assert!(problems.is_empty(), "the layering rule is broken:\n{}", problems.join("\n"));
}

#[test]
fn a_forbidden_import_and_a_cycle_are_reported() {
    let file = |room: &str, text: &str| (room.to_owned(), format!("{room}/x.rs"), text.to_owned());
    let problems = violations(&[file("store", "use crate::http::error::ApiError;\n")]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`store` imports `crate::http`"), "{problems:?}");
    let problems = violations(&[file("domain", "use crate::{store::x, domain::y};\nuse tokio::fs;")]);
    assert!(problems.iter().any(|p| p.contains("`domain` imports `crate::store`")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("uses `tokio::`")), "{problems:?}");
    let problems = violations(&[file("work", "use crate::http::x;"), file("http", "use crate::work::y;")]);
    assert!(problems.iter().any(|p| p.contains("cycle")), "{problems:?}");
    // Comments do not count; a room's own paths are fine.
    assert!(violations(&[file("store", "// see crate::http\nuse crate::domain::X;\nuse crate::store::Y;")]).is_empty());
}
