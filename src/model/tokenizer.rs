//! CLIP's tokenizer (spec clip.md §7): the HF fast-tokenizer file `tokenizer.json` read with the
//! `tokenizers` crate; special tokens on (`BOS … EOS`), truncation at 77 with EOS kept, padding
//! right with the EOS id to the longest text of the call, and each text's first-EOS position for
//! pooling.
//!
//! [`build_tokenizer`] makes a CLIP-format byte-level BPE tokenizer (the same normaliser,
//! pre-tokeniser, `</w>` suffix and post-processor as OpenAI's) trained on a corpus of prompts,
//! for models the project creates itself.

use super::ModelError;
use std::path::Path;
use tch::{Device, Tensor};
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSeq};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer, TruncationParams};

pub const BOS: &str = "<|startoftext|>";
pub const EOS: &str = "<|endoftext|>";
/// Context length of every CLIP text tower (BOS and EOS included).
pub const MAX_LEN: usize = 77;

/// A tokenised batch on a device.
#[derive(Debug)]
pub struct TokenBatch {
    /// `[B, L]` int64, padded with the EOS id.
    pub ids: Tensor,
    /// `[B, L]` int64, 1 for real tokens (BOS and EOS included), 0 for padding.
    pub mask: Tensor,
    /// `[B]` int64, the position of each text's first EOS.
    pub eos: Tensor,
}

impl TokenBatch {
    pub fn to_device(&self, device: Device) -> TokenBatch {
        TokenBatch {
            ids: self.ids.to_device(device),
            mask: self.mask.to_device(device),
            eos: self.eos.to_device(device),
        }
    }
}

pub struct ClipTokenizer {
    inner: Tokenizer,
    eos: u32,
}

impl ClipTokenizer {
    pub fn from_file(path: &Path) -> Result<ClipTokenizer, ModelError> {
        let err = |reason: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(err(
                "missing; the model directory needs the HF fast-tokenizer file tokenizer.json"
                    .into(),
            ));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        let eos = inner
            .token_to_id(EOS)
            .ok_or_else(|| err(format!("has no {EOS} token; not a CLIP tokenizer")))?;
        if inner.token_to_id(BOS).is_none() {
            return Err(err(format!("has no {BOS} token; not a CLIP tokenizer")));
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: MAX_LEN,
                ..Default::default()
            }))
            .map_err(|e| err(e.to_string()))?;
        Ok(ClipTokenizer { inner, eos })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of each text, `BOS … EOS`, truncated to 77.
    pub fn ids(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, ModelError> {
        let enc =
            self.inner
                .encode_batch(texts.to_vec(), true)
                .map_err(|e| ModelError::Tokenizer {
                    path: "tokenizer.json".into(),
                    reason: e.to_string(),
                })?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Tokenises and pads to the longest text of the call.
    pub fn encode(&self, texts: &[String], device: Device) -> Result<TokenBatch, ModelError> {
        let ids = self.ids(texts)?;
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        let b = ids.len();
        let mut flat = Vec::with_capacity(b * len);
        let mut mask = Vec::with_capacity(b * len);
        let mut eos = Vec::with_capacity(b);
        for (row, text) in ids.iter().zip(texts) {
            let pos =
                row.iter()
                    .position(|&t| t == self.eos)
                    .ok_or_else(|| ModelError::Tokenizer {
                        path: "tokenizer.json".into(),
                        reason: format!("no EOS token in the encoding of {text:?}"),
                    })?;
            eos.push(pos as i64);
            flat.extend(row.iter().map(|&t| t as i64));
            flat.extend(std::iter::repeat_n(self.eos as i64, len - row.len()));
            mask.extend(std::iter::repeat_n(1i64, row.len()));
            mask.extend(std::iter::repeat_n(0i64, len - row.len()));
        }
        let shape = [b as i64, len as i64];
        Ok(TokenBatch {
            ids: Tensor::from_slice(&flat).view(shape).to_device(device),
            mask: Tensor::from_slice(&mask).view(shape).to_device(device),
            eos: Tensor::from_slice(&eos).to_device(device),
        })
    }
}

/// OpenAI CLIP's pre-tokenisation pattern (kept: the matches; dropped: whitespace).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Trains a CLIP-format byte-level BPE tokenizer of at most `vocab_size` tokens on `corpus` and
/// writes it as `tokenizer.json` (plus the `tokenizer_config.json` transformers reads) in `dir`.
/// Every printable ASCII and Latin-1 character is seen as a word of its own, so any English
/// prompt encodes without unknown tokens.
pub fn build_tokenizer(
    corpus: &[String],
    vocab_size: usize,
    dir: &Path,
) -> Result<usize, ModelError> {
    let err = |e: tokenizers::Error| ModelError::Tokenizer {
        path: dir.join("tokenizer.json"),
        reason: e.to_string(),
    };
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_normalizer(Some(NormSeq::new(vec![
        NFC.into(),
        Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(err)?
        .into(),
        Lowercase.into(),
    ])))
    .map_err(err)?;
    tok.with_pre_tokenizer(Some(PreSeq::new(vec![
        Split::new(
            SplitPattern::Regex(CLIP_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(err)?
        .into(),
        ByteLevel::new(false, true, false).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .show_progress(false)
        .special_tokens(vec![
            AddedToken::from(BOS, true),
            AddedToken::from(EOS, true),
        ])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .end_of_word_suffix("</w>".into())
        .build()
        .into();
    let coverage: Vec<String> = (0x21u32..0x7f)
        .chain(0xa1..0x100)
        .filter_map(char::from_u32)
        .map(|c| format!("{c} {c}{c}"))
        .collect();
    let mut texts: Vec<String> = corpus.to_vec();
    texts.extend(coverage);
    let texts: Vec<String> = texts
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    tok.train(&mut trainer, texts.iter()).map_err(err)?;
    let bos = tok.token_to_id(BOS).expect("trained with BOS");
    let eos = tok.token_to_id(EOS).expect("trained with EOS");
    tok.with_post_processor(Some(
        RobertaProcessing::new((EOS.into(), eos), (BOS.into(), bos))
            .trim_offsets(false)
            .add_prefix_space(false),
    ));
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    tok.save(dir.join("tokenizer.json"), true).map_err(err)?;
    let config = serde_json::json!({
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "model_max_length": MAX_LEN,
        "do_lower_case": true,
    });
    let path = dir.join("tokenizer_config.json");
    crate::util::fsx::write_atomic(&path, config.to_string().as_bytes())
        .map_err(|e| ModelError::Io { path, source: e })?;
    Ok(tok.get_vocab_size(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_tokenizer_follows_clip_conventions() {
        let dir = tempfile::tempdir().unwrap();
        let corpus: Vec<String> = ["a photo of a red circle.", "a photo of a blue square."]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let n = build_tokenizer(&corpus, 600, dir.path()).unwrap();
        let tok = ClipTokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(tok.vocab_size(), n);
        let texts = vec![
            "A photo of a RED circle.".to_string(),
            "zebra".to_string(),
            "x ".repeat(200),
        ];
        let ids = tok.ids(&texts).unwrap();
        let bos = tok.inner.token_to_id(BOS).unwrap();
        for row in &ids {
            assert_eq!(row[0], bos);
            assert_eq!(*row.last().unwrap(), tok.eos_id());
            assert!(row.len() <= MAX_LEN);
        }
        // Lower-casing: the capitalised prompt equals the trained one.
        assert_eq!(ids[0], tok.ids(&[corpus[0].clone()]).unwrap()[0]);
        assert_eq!(ids[2].len(), MAX_LEN);
        let batch = tok.encode(&texts, Device::Cpu).unwrap();
        assert_eq!(batch.ids.size(), vec![3, MAX_LEN as i64]);
        let eos: Vec<i64> = Vec::try_from(&batch.eos).unwrap();
        assert_eq!(
            eos,
            vec![ids[0].len() as i64 - 1, ids[1].len() as i64 - 1, 76]
        );
        let mask_sum: Vec<i64> =
            Vec::try_from(&batch.mask.sum_dim_intlist(1, false, tch::Kind::Int64)).unwrap();
        assert_eq!(
            mask_sum,
            ids.iter().map(|r| r.len() as i64).collect::<Vec<_>>()
        );
    }
}
