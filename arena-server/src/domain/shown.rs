//! Text the platform stores to show people (a failed match's reason, an
//! export's or a training job's error): the server's own filesystem stays
//! out of it. An error chain may name a file the server opened
//! (`/srv/arena/.arena/exports/…/pairs.parquet: No space left on device`);
//! what a user is shown is `pairs.parquet: No space left on device`.

/// `text` with every absolute filesystem path cut to its last component.
pub fn without_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('/') {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        // A path starts a word: after a space, a quote, a bracket, `=` or
        // `:`. Routes (`/api/v1/…`) and URLs start with no host directory
        // and are kept (see `is_path`).
        let starts_word = before.chars().last().is_none_or(|c| c.is_whitespace() || "'\"([=:,".contains(c));
        let len = from.find(|c: char| c.is_whitespace() || "'\"()[],;".contains(c)).unwrap_or(from.len());
        let word = &from[..len];
        if starts_word && is_path(word) {
            let last = word.trim_end_matches(':').rsplit('/').find(|p| !p.is_empty()).unwrap_or("");
            out.push_str(last);
            if word.ends_with(':') {
                out.push(':');
            }
        } else {
            out.push_str(word);
        }
        // `len` ≥ 1: the '/' itself is never a stop character.
        rest = &from[len..];
    }
    out.push_str(rest);
    out
}

/// Whether `word` (starting with `/`) is a path on the host: two or more
/// components, the first one of the directories a host's paths start with.
fn is_path(word: &str) -> bool {
    const ROOTS: &[&str] =
        &["root", "home", "tmp", "var", "srv", "opt", "usr", "etc", "data", "mnt", "run", "proc", "dev", "work"];
    let mut parts = word.trim_start_matches('/').split('/');
    let first = parts.next().unwrap_or("");
    parts.next().is_some() && (ROOTS.contains(&first) || first.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cut_to_their_file_and_the_rest_is_kept() {
        assert_eq!(
            without_paths("writing /root/.cache/arena/data/exports/9f/pairs.parquet: No space left on device"),
            "writing pairs.parquet: No space left on device"
        );
        assert_eq!(
            without_paths("cannot open \"/srv/arena/models/m.gguf\" (os error 2)"),
            "cannot open \"m.gguf\" (os error 2)"
        );
        assert_eq!(without_paths("model=/home/ada/x/y.bin, retry"), "model=y.bin, retry");
        for kept in [
            "buy an export (POST /api/v1/data/exports)",
            "2/3 of the answers",
            "a / b",
            "half-way",
            "see https://example.org/a/b",
        ] {
            assert_eq!(without_paths(kept), kept);
        }
    }
}
