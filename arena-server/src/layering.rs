//! The dependency rule between this crate's rooms, checked on its source:
//! `domain` imports nothing of the crate; `store` and `queue` import only
//! `domain`; `context` imports those three; `work` does not import `http`,
//! `app` or `cli`; `http` does not import `app` or `cli`; only `app` and
//! `cli` compose everything (and only `cli` imports `app`). Any import
//! against the rule fails the test, as does any cycle between rooms — and
//! any import circle between the files of one room (a file reached from
//! itself through `crate::room::file` or `super::file` paths).
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

/// A source file's module path (`work/turns.rs` → `["work", "turns"]`;
/// a `mod.rs` is its folder's module).
fn module_of(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The module paths `text` names through `crate::` and `super::` (one
/// level of `{…}` groups expanded), written from the file at `module`.
fn paths_named(module: &[String], text: &str) -> Vec<Vec<String>> {
    // The file's own code: its test module and comments left out.
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    // `a::b::{c::D, e}` → [a, b, c, D] and [a, b, e]
    fn expand(rest: &str, ident: &dyn Fn(&str) -> String) -> Vec<Vec<String>> {
        let mut path = Vec::new();
        let mut rest = rest;
        loop {
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                return group[..end]
                    .split(',')
                    .map(|part| {
                        let mut p = path.clone();
                        p.extend(part.trim().split("::").map(|s| ident(s.trim())).filter(|s| !s.is_empty()));
                        p
                    })
                    .collect();
            }
            let name = ident(rest);
            if name.is_empty() {
                return vec![path];
            }
            rest = &rest[name.len()..];
            path.push(name);
            match rest.strip_prefix("::") {
                Some(more) => rest = more,
                None => return vec![path],
            }
        }
    }
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find(['c', 's']) {
        let here = &rest[at..];
        let boundary = at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        if boundary && let Some(after) = here.strip_prefix("crate::") {
            found.extend(expand(after, &ident));
        } else if boundary && here.starts_with("super::") {
            let mut base: Vec<String> = module.to_vec();
            // A file's `super` is its folder's module; a mod.rs's is the one above.
            base.pop();
            let mut after = here;
            while let Some(more) = after.strip_prefix("super::") {
                after = more;
                if after.starts_with("super::") {
                    base.pop();
                }
            }
            for tail in expand(after, &ident) {
                let mut p = base.clone();
                p.extend(tail);
                found.push(p);
            }
        }
        rest = &here[1..];
    }
    found
}

/// Import circles between the files of one room: each as its files.
fn file_circles(files: &[(String, String, String)]) -> Vec<Vec<String>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(_, path, _)| module_of(path)).collect();
    let folders: BTreeSet<Vec<String>> =
        files.iter().filter(|(_, p, _)| p.ends_with("mod.rs")).map(|(_, p, _)| module_of(p)).collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (_, path, text) in files {
        let from = module_of(path);
        if folders.contains(&from) {
            continue; // a folder's front re-exports: not a file of the room
        }
        for named in paths_named(&from, text) {
            // The longest prefix that is a file of the crate.
            let target = (1..=named.len()).rev().map(|n| named[..n].to_vec()).find(|p| modules.contains(p));
            let Some(target) = target else { continue };
            if target == from || folders.contains(&target) || target.first() != from.first() {
                continue;
            }
            graph.entry(from.clone()).or_default().insert(target);
        }
    }
    // A file that reaches itself is on a circle; the circle is the files
    // that reach it and that it reaches.
    let reach = |start: &Vec<String>| -> BTreeSet<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Vec<String>> = graph.get(start).map(|g| g.iter().collect()).unwrap_or_default();
        while let Some(next) = stack.pop() {
            if seen.insert(next.clone())
                && let Some(more) = graph.get(next)
            {
                stack.extend(more.iter());
            }
        }
        seen
    };
    let mut circles: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        let from_start = reach(start);
        if !from_start.contains(start) {
            continue;
        }
        let mut circle: Vec<String> =
            from_start.iter().filter(|m| reach(m).contains(start)).map(|m| m.join("/") + ".rs").collect();
        circle.sort();
        if !circles.contains(&circle) {
            circles.push(circle);
        }
    }
    circles
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
    let circles = file_circles(&files);
    assert!(circles.is_empty(), "files of one room import each other in a circle: {circles:?}");
}

#[test]
fn an_import_circle_between_files_of_a_room_is_found() {
    let file = |path: &str, text: &str| ("work".to_owned(), path.to_owned(), text.to_owned());
    let circle = file_circles(&[
        file("work/generate.rs", "use super::turns::step;"),
        file("work/turns.rs", "use crate::work::{generate::GenJob, runner::Work};"),
        file("work/runner.rs", "use crate::context::Context;"),
        file("work/mod.rs", "pub use generate::GenJob;"),
    ]);
    assert_eq!(circle, vec![vec!["work/generate.rs".to_owned(), "work/turns.rs".to_owned()]]);
    // Through the room's front (mod.rs), or one way only: no circle.
    assert!(
        file_circles(&[
            file("work/generate.rs", "use super::turns::step;"),
            file("work/turns.rs", "use crate::work::GenJob; // crate::work::generate"),
            file("work/mod.rs", "pub use generate::GenJob;"),
        ])
        .is_empty()
    );
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
