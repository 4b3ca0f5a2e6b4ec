//! A tokenizer built from the GGUF's own metadata (`tokenizer.ggml.*`), so
//! that token ids equal llama.cpp's for the same file.
//!
//! Byte-level BPE (`tokenizer.ggml.model = gpt2`) is built with the
//! `tokenizers` crate from `tokens` and `merges`, with the pre-tokenizer the
//! file's `tokenizer.ggml.pre` names; control tokens (token type 3) and
//! user-defined tokens (type 4) are special tokens. candle's own
//! `TokenizerFromGguf` gets `pre = smollm` wrong (prefix space, no digit
//! split), hence this module.

use crate::error::{Result, RuntimeError};
use crate::gguf::Gguf;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama 3's pre-tokenizer split (`pre = llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer split (`pre = qwen2`).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct Tokenizer {
    /// Recognises special tokens written in the text (`<|im_start|>`).
    with_special: HfTokenizer,
    /// Treats every character as text: what untrusted text is encoded with.
    plain: HfTokenizer,
    special_ids: Vec<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    vocab: Vec<String>,
}

impl Tokenizer {
    pub fn from_gguf(gguf: &Gguf) -> Result<Tokenizer> {
        let model = gguf.string("tokenizer.ggml.model")?;
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let types = gguf.ints("tokenizer.ggml.token_type").unwrap_or_else(|_| vec![1; tokens.len()]);
        let pre = gguf.string("tokenizer.ggml.pre").unwrap_or("default");
        let (plain, special_ids) = match model {
            "gpt2" => {
                let merges = gguf.strings("tokenizer.ggml.merges")?;
                (byte_level_bpe(&tokens, &merges, pre)?, special_ids(&tokens, &types))
            }
            "llama" => (sentencepiece_bpe(gguf, &tokens, &types)?, special_ids(&tokens, &types)),
            other => return Err(RuntimeError::Tokenizer(format!("tokenizer model `{other}` is not supported"))),
        };
        let mut with_special = plain.clone();
        let added: Vec<AddedToken> =
            special_ids.iter().map(|&id| AddedToken::from(tokens[id as usize].to_owned(), true)).collect();
        with_special.add_special_tokens(&added);
        let id = |key: &str| gguf.uint(key).ok().map(|v| v as u32);
        Ok(Tokenizer {
            with_special,
            plain,
            special_ids,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: gguf.bool_or("tokenizer.ggml.add_bos_token", model == "llama"),
            vocab: tokens.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// Token ids of `text`. With `parse_special`, special tokens written in
    /// the text become their ids; without, they are ordinary characters.
    /// Adds BOS when the model asks for it and `add_special` is set.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let tok = if parse_special { &self.with_special } else { &self.plain };
        let encoding = tok.encode(text, false).map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Text of `ids`; special tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let ids: Vec<u32> =
            if skip_special { ids.iter().copied().filter(|id| !self.is_special(*id)).collect() } else { ids.to_vec() };
        self.with_special.decode(&ids, false).map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    pub fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(String::as_str)
    }

    pub fn id_of(&self, token: &str) -> Option<u32> {
        self.with_special.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
}

fn special_ids(tokens: &[&str], types: &[i64]) -> Vec<u32> {
    (0..tokens.len())
        .filter(|&i| matches!(types.get(i), Some(&TOKEN_TYPE_CONTROL) | Some(&TOKEN_TYPE_USER_DEFINED)))
        .map(|i| i as u32)
        .collect()
}

fn tok_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Tokenizer(e.to_string())
}

fn byte_level_bpe(tokens: &[&str], merges: &[&str], pre: &str) -> Result<HfTokenizer> {
    let vocab: ahash::AHashMap<String, u32> =
        tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), i as u32)).collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| RuntimeError::Tokenizer(format!("merge {m:?} is not `a b`")))
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
    let mut tok = HfTokenizer::new(bpe);
    let byte_level = |regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        Ok(PreTokenizerWrapper::Split(
            Split::new(SplitPattern::Regex(pattern.to_owned()), SplitDelimiterBehavior::Isolated, false)
                .map_err(tok_err)?,
        ))
    };
    let pre_tokenizer = match pre {
        // SmolLM / StarCoder: every digit alone, then GPT-2's split.
        "smollm" | "starcoder" | "refact" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![Digits::new(true).into(), byte_level(true)]))
        }
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level(false)]))
        }
        "qwen2" | "deepseek-r1-qwen" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level(false)]))
        }
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        other => return Err(RuntimeError::Tokenizer(format!("pre-tokenizer `{other}` is not supported"))),
    };
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
    Ok(tok)
}

/// SentencePiece-style BPE (`tokenizer.ggml.model = llama`, e.g. TinyLlama):
/// merges are recovered from the vocabulary and its scores, the way
/// `tokenizers` converts SentencePiece models; bytes fall back to `<0xNN>`.
fn sentencepiece_bpe(gguf: &Gguf, tokens: &[&str], types: &[i64]) -> Result<HfTokenizer> {
    let scores = gguf.floats("tokenizer.ggml.scores")?;
    let vocab: ahash::AHashMap<String, u32> =
        tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), i as u32)).collect();
    let mut merges: Vec<(f32, u32, String, String)> = Vec::new();
    for (token, &id) in &vocab {
        if types.get(id as usize).copied().unwrap_or(1) != 1 {
            continue;
        }
        let chars: Vec<(usize, char)> = token.char_indices().collect();
        for (split, _) in chars.iter().skip(1) {
            let (left, right) = token.split_at(*split);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                merges.push((scores.get(id as usize).copied().unwrap_or(0.0), id, left.to_owned(), right.to_owned()));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges = merges.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let unk = gguf.uint("tokenizer.ggml.unknown_token_id").ok().and_then(|id| tokens.get(id as usize));
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token((*unk).to_owned());
    }
    let bpe = builder.build().map_err(tok_err)?;
    let mut tok = HfTokenizer::new(bpe);
    tok.with_normalizer(Some(NormSequence::new(vec![
        Prepend::new("▁".to_owned()).into(),
        Replace::new(" ", "▁").map_err(tok_err)?.into(),
    ])));
    tok.with_decoder(Some(DecoderWrapper::Sequence(tokenizers::decoders::sequence::Sequence::new(vec![
        DecoderWrapper::Replace(tokenizers::normalizers::Replace::new("▁", " ").map_err(tok_err)?),
        DecoderWrapper::ByteFallback(tokenizers::decoders::byte_fallback::ByteFallback::default()),
        DecoderWrapper::Fuse(tokenizers::decoders::fuse::Fuse::default()),
        DecoderWrapper::Strip(tokenizers::decoders::strip::Strip::new(' ', 1, 0)),
    ]))));
    Ok(tok)
}
