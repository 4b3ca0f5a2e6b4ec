//! A Space's versions: each with what it changed that players pay or win
//! by (and its files), and a line diff of any two.

use super::own_space;
use crate::domain::space::{Space, file_changes, money_changes};
use crate::http::pages::{Chrome, Ctx, Designer, PageError, render};
use crate::store::spaces as space_store;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One line of a diff.
#[derive(Debug, Clone)]
pub struct DiffLine {
    /// ' ' (unchanged), '+', '-', '~' (unchanged lines folded, a note) or
    /// '!' (a part too large to diff, a note).
    pub op: char,
    pub text: String,
}

/// A line diff of `a` to `b` (longest common subsequence; sources are
/// capped in size, so the table stays small).
pub fn diff_lines(a: &str, b: &str) -> Vec<DiffLine> {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // What the two share at either end costs nothing to diff.
    let head = x.iter().zip(&y).take_while(|(p, q)| p == q).count();
    let tail = x[head..].iter().rev().zip(y[head..].iter().rev()).take_while(|(p, q)| p == q).count();
    let (mx, my) = (&x[head..x.len() - tail], &y[head..y.len() - tail]);
    let (n, m) = (mx.len(), my.len());
    let mut out: Vec<DiffLine> = x[..head].iter().map(|t| DiffLine { op: ' ', text: (*t).to_owned() }).collect();
    if n.saturating_mul(m) > MAX_DIFF_CELLS {
        out.push(DiffLine {
            op: '!',
            text: format!("{n} lines against {m} differ here: too large to diff line by line"),
        });
    } else {
        let mut lcs = vec![vec![0u32; m + 1]; n + 1];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i][j] = if mx[i] == my[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && mx[i] == my[j] {
                out.push(DiffLine { op: ' ', text: mx[i].to_owned() });
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
                // What went out before what came in.
                out.push(DiffLine { op: '-', text: mx[i].to_owned() });
                i += 1;
            } else {
                out.push(DiffLine { op: '+', text: my[j].to_owned() });
                j += 1;
            }
        }
    }
    out.extend(x[x.len() - tail..].iter().map(|t| DiffLine { op: ' ', text: (*t).to_owned() }));
    if out.len() > MAX_DIFF_LINES { fold(out) } else { out }
}

/// Lines a diff shows at most: past it, unchanged runs keep three lines of
/// context each side, and what is still too long is cut with a note.
pub const MAX_DIFF_LINES: usize = 2_000;

fn fold(lines: Vec<DiffLine>) -> Vec<DiffLine> {
    const CONTEXT: usize = 3;
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let run = lines[i..].iter().take_while(|l| l.op == ' ').count();
        if run > 2 * CONTEXT + 1 {
            let keep_head = if i == 0 { 0 } else { CONTEXT };
            let keep_tail = if i + run == lines.len() { 0 } else { CONTEXT };
            out.extend(lines[i..i + keep_head].iter().cloned());
            out.push(DiffLine { op: '~', text: format!("… {} unchanged lines", run - keep_head - keep_tail) });
            out.extend(lines[i + run - keep_tail..i + run].iter().cloned());
            i += run;
        } else {
            out.push(lines[i].clone());
            i += 1;
        }
    }
    if out.len() > MAX_DIFF_LINES {
        let cut = out.len() - MAX_DIFF_LINES;
        out.truncate(MAX_DIFF_LINES);
        out.push(DiffLine { op: '~', text: format!("… {cut} more lines of changes not shown") });
    }
    out
}

/// Cells (changed lines of one side × of the other) a diff may compute: a
/// few megabytes and milliseconds; beyond, the page says the change is too
/// large to diff.
pub const MAX_DIFF_CELLS: usize = 4_000_000;

pub struct VersionRow {
    pub version: i32,
    pub sha256: String,
    pub when: String,
    /// What it changed that players pay or win by, against the version before.
    pub money: Vec<String>,
}

#[derive(Template)]
#[template(path = "studio_versions.html")]
struct VersionsPage {
    chrome: Chrome,
    slug: String,
    versions: Vec<VersionRow>,
    a: i32,
    b: i32,
    diff: Vec<DiffLine>,
}

#[derive(Deserialize)]
pub struct DiffQuery {
    #[serde(default)]
    a: Option<i32>,
    #[serde(default)]
    b: Option<i32>,
}

/// GET /studio/{slug}/versions?a=N&b=M — the versions, and the diff of two.
pub async fn versions(
    state: Ctx,
    user: Designer,
    slug: web::Path<String>,
    query: web::Query<DiffQuery>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let space = own_space(&state, caller, &slug).await?;
    let lines = space_store::versions(&state.db, space.id).await?;
    let newest = lines.first().map_or(1, |l| l.version);
    let b = query.b.unwrap_or(newest);
    let a = query.a.unwrap_or((b - 1).max(1));
    let mut sources: BTreeMap<i32, String> = BTreeMap::new();
    let mut all_files: BTreeMap<i32, BTreeMap<String, String>> = BTreeMap::new();
    for l in &lines {
        if let Some(v) = space_store::version(&state.db, space.id, l.version).await? {
            all_files.insert(l.version, serde_json::from_value(v.files).unwrap_or_default());
            sources.insert(l.version, v.source);
        }
    }
    // Parsing every version is CPU work (prompt templates expand): off the
    // request thread, as the diff below is.
    let parsed: BTreeMap<i32, Option<Space>> = {
        let (sources, all_files) = (sources.clone(), all_files.clone());
        tokio::task::spawn_blocking(move || {
            sources
                .iter()
                .map(|(v, source)| {
                    let files = all_files.get(v).cloned().unwrap_or_default();
                    (*v, Space::parse(source, &files, Path::new(".")).ok())
                })
                .collect()
        })
        .await
        .map_err(PageError::internal)?
    };
    let versions = lines
        .iter()
        .map(|l| VersionRow {
            version: l.version,
            sha256: l.sha256.clone(),
            when: crate::http::pages::when(&l.created_at),
            money: {
                let mut changes = match (parsed.get(&(l.version - 1)), parsed.get(&l.version)) {
                    (Some(Some(before)), Some(Some(now))) => money_changes(before, now),
                    _ => Vec::new(),
                };
                if let (Some(before), Some(now)) = (all_files.get(&(l.version - 1)), all_files.get(&l.version)) {
                    changes.extend(file_changes(before, now));
                }
                changes
            },
        })
        .collect();
    let (from, to) = (sources.get(&a).ok_or(PageError::NotFound)?, sources.get(&b).ok_or(PageError::NotFound)?);
    // A diff is CPU work bounded by `MAX_DIFF_CELLS`: off the request thread.
    let (from, to) = (from.clone(), to.clone());
    let diff = tokio::task::spawn_blocking(move || diff_lines(&from, &to)).await.map_err(PageError::internal)?;
    render(&user.chrome, &VersionsPage { chrome: user.chrome.clone(), slug: slug.into_inner(), versions, a, b, diff })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_of_huge_versions_is_bounded() {
        let a: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
        let b = a.replacen("line 150000\n", "line 150000 changed\n", 1);
        let d = diff_lines(&a, &b);
        assert!(d.len() <= MAX_DIFF_LINES + 1, "{} lines", d.len());
        let changed: Vec<(char, &str)> =
            d.iter().filter(|l| l.op == '+' || l.op == '-').map(|l| (l.op, l.text.as_str())).collect();
        assert_eq!(changed, vec![('-', "line 150000"), ('+', "line 150000 changed")]);
        assert!(d.iter().any(|l| l.op == '~' && l.text.contains("unchanged lines")));
        // Two versions with nothing in common: too large to diff, said so.
        let c: String = (0..300_000).map(|i| format!("other {i}\n")).collect();
        let d = diff_lines(&a, &c);
        assert!(d.len() <= 2 && d.iter().any(|l| l.op == '!' && l.text.contains("too large")), "{:?}", &d[..2]);
    }

    #[test]
    fn the_diff_rebuilds_both_sides() {
        let a = "name = \"x\"\nentry_fee = 10\n\n[payout]\nshares = [1.0]\n";
        let b = "name = \"x\"\nentry_fee = 20\n\n[payout]\nshares = [1.0]\nhouse_cut = 0.1\n";
        let d = diff_lines(a, b);
        let old: Vec<&str> = d.iter().filter(|l| l.op != '+').map(|l| l.text.as_str()).collect();
        let new: Vec<&str> = d.iter().filter(|l| l.op != '-').map(|l| l.text.as_str()).collect();
        assert_eq!(old, a.lines().collect::<Vec<_>>());
        assert_eq!(new, b.lines().collect::<Vec<_>>());
        assert_eq!(d.iter().filter(|l| l.op != ' ').count(), 3, "fee out, fee in, house cut in");
        let fee: Vec<char> = d.iter().filter(|l| l.text.starts_with("entry_fee")).map(|l| l.op).collect();
        assert_eq!(fee, ['-', '+'], "the old line first");
    }
}
