//! The files a Space names (its prompt file, JSON Schemas). A Space never
//! reads a path: it looks its files up by name in a map that travels with
//! it (the server stores the map in the Space version, so a version is
//! reproducible and covered by its sha256). Only the command line reads
//! them from disk, with [`read_space`]: relative names inside the Space
//! file's own folder, regular files only, sizes capped before reading.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

/// A Space's files by the name it uses for them.
pub type SpaceFiles = BTreeMap<String, String>;

/// Files one Space may carry, and their total size with the TOML.
pub const MAX_FILES: usize = 16;
pub const MAX_FILES_BYTES: usize = 20 * 1024 * 1024;
/// The Space file itself.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;

/// Checks a file name a Space uses: a relative path of plain components
/// (no `/` at the start, no `..`, no `\`), at most 200 bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && Path::new(name).components().all(|c| matches!(c, Component::Normal(_)))
        && !name.contains('\\')
        && !name.chars().any(char::is_control);
    if plain {
        Ok(())
    } else {
        Err(format!(
            "file name {name:?} must be a relative path inside the Space's folder (no leading '/', no '..'), \
             at most 200 bytes"
        ))
    }
}

/// The names of the files a Space's text refers to (`[prompts] file`,
/// `[referee] script`, `schema_file` of its verifiers), in order, without duplicates. Text
/// that is not TOML names nothing (its parse reports the error).
pub fn referenced_names(source: &str) -> Vec<String> {
    let Ok(value) = toml::from_str::<toml::Value>(source) else { return Vec::new() };
    let mut names: Vec<String> = Vec::new();
    if let Some(file) = value.get("prompts").and_then(|p| p.get("file")).and_then(|f| f.as_str()) {
        names.push(file.to_owned());
    }
    if let Some(script) = value.get("referee").and_then(|r| r.get("script")).and_then(|f| f.as_str()) {
        names.push(script.to_owned());
    }
    if let Some(trained) = value.get("judge").and_then(|j| j.get("trained")).and_then(|t| t.as_str())
        && trained != "default"
    {
        names.push(trained.to_owned());
    }
    if let Some(verifiers) = value.get("verifiers").and_then(|v| v.as_array()) {
        for v in verifiers {
            if let Some(schema) = v.get("schema_file").and_then(|s| s.as_str())
                && !names.iter().any(|n| n == schema)
            {
                names.push(schema.to_owned());
            }
        }
    }
    names
}

/// Reads at most `limit` bytes of a regular file as UTF-8; more is an error.
fn read_capped(path: &Path, limit: usize, shown: &str) -> Result<String, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > limit as u64 {
        return Err(format!("{shown} is {} bytes; at most {limit}", meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown}: {e}"))?;
    if bytes.len() > limit {
        return Err(format!("{shown} grew past {limit} bytes while it was read"));
    }
    String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))
}

/// A Space file read from disk: its text, the files it names that could be
/// read, and why each of the others could not (the Space's own parse then
/// reports the missing file at the line that names it).
#[derive(Debug, Clone)]
pub struct ReadSpace {
    pub source: String,
    pub files: SpaceFiles,
    pub problems: Vec<String>,
}

/// Reads a Space file and the files it names from the file's own folder:
/// each name checked with [`check_name`], resolved (symbolic links too)
/// to a regular file inside that folder, and all of them within the size
/// limits. Errors name the file as the Space wrote it. Only an unreadable
/// Space file (or one naming too many files) is an error here.
pub fn read_space(path: &Path) -> Result<ReadSpace, String> {
    let shown = path.display().to_string();
    let source = read_capped(path, MAX_SOURCE_BYTES, &shown)?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let root = folder.canonicalize().map_err(|e| format!("{}: {e}", folder.display()))?;
    let names = referenced_names(&source);
    if names.len() > MAX_FILES {
        return Err(format!("{shown} names {} files; at most {MAX_FILES}", names.len()));
    }
    let mut files = SpaceFiles::new();
    let mut problems = Vec::new();
    let mut total = source.len();
    for name in names {
        let shown_file = format!("{shown}: {name}");
        let read = check_name(&name)
            .map_err(|e| format!("{shown}: {e}"))
            .and_then(|()| root.join(&name).canonicalize().map_err(|e| format!("{shown_file}: {e}")))
            .and_then(|resolved| {
                if resolved.starts_with(&root) {
                    Ok(resolved)
                } else {
                    Err(format!("{shown_file} leaves the Space's folder (through a symbolic link)"))
                }
            })
            .and_then(|resolved| read_capped(&resolved, MAX_FILES_BYTES.saturating_sub(total), &shown_file));
        match read {
            Ok(text) => {
                total += text.len();
                files.insert(name, text);
            }
            Err(problem) => problems.push(problem),
        }
    }
    Ok(ReadSpace { source, files, problems })
}

/// [`read_space`], refusing any file that could not be read.
pub fn read_space_whole(path: &Path) -> Result<(String, SpaceFiles), String> {
    let read = read_space(path)?;
    if !read.problems.is_empty() {
        return Err(read.problems.join("\n"));
    }
    Ok((read.source, read.files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_stay_inside_the_folder() {
        for good in ["prompts/a.jsonl", "schema.json", "a/b/c.json"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/shadow", "../secret", "a/../../b", "a\\b", "./x/../..", "C:\\x", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reading_refuses_what_is_not_a_small_regular_file_inside() {
        let dir = tempfile::tempdir().unwrap();
        let space = dir.path().join("space.toml");
        let write = |text: &str| std::fs::write(&space, text).unwrap();
        std::fs::create_dir(dir.path().join("prompts")).unwrap();
        std::fs::write(dir.path().join("prompts/p.jsonl"), "{\"prompt\": \"x\"}\n").unwrap();

        write("name = \"s\"\n[prompts]\nfile = \"prompts/p.jsonl\"\n");
        let read = read_space(&space).unwrap();
        assert_eq!(read.files.keys().collect::<Vec<_>>(), ["prompts/p.jsonl"]);
        assert!(read.problems.is_empty());

        write("[prompts]\nfile = \"/etc/passwd\"\n");
        assert!(read_space_whole(&space).unwrap_err().contains("must be a relative path"));
        write("[prompts]\nfile = \"../outside.jsonl\"\n");
        assert!(read_space_whole(&space).unwrap_err().contains("must be a relative path"));

        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.jsonl")).unwrap();
            write("[prompts]\nfile = \"link.jsonl\"\n");
            assert!(read_space_whole(&space).unwrap_err().contains("leaves the Space's folder"));
            std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.jsonl")).unwrap();
            write("[prompts]\nfile = \"zero.jsonl\"\n");
            assert!(read_space_whole(&space).is_err(), "a device is refused without reading it");
        }
        std::fs::create_dir(dir.path().join("adir")).unwrap();
        write("[prompts]\nfile = \"adir\"\n");
        assert!(read_space_whole(&space).unwrap_err().contains("not a regular file"));
        std::fs::write(dir.path().join("big.jsonl"), vec![b'x'; MAX_FILES_BYTES + 1]).unwrap();
        write("[prompts]\nfile = \"big.jsonl\"\n");
        assert!(read_space_whole(&space).unwrap_err().contains("at most"));
    }
}
