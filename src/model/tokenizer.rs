//! CLIP's tokenizer (spec clip.md §7): the HF fast-tokenizer file `tokenizer.json` read with the
//! `tokenizers` crate; special tokens on (`BOS … EOS`), truncation at 77 with EOS kept, padding
//! right with the EOS id to the longest text of the call, and each text's first-EOS position for
//! pooling.
//!
//! [`build_tokenizer`] makes a CLIP-format byte-level BPE tokenizer (the same normaliser,
//! pre-tokeniser, `</w>` suffix and post-processor as OpenAI's) trained on a corpus of prompts,
//! for models the project creates itself. Its merges are learnt by [`DeterministicBpe`]: the
//! `tokenizers` crate's trainer numbers the end-of-word symbols in hash-map order, which breaks
//! ties between equally frequent pairs differently on every run; here every id and every tie
//! follows a fixed order, so the same corpus gives a byte-identical `tokenizer.json`.

use super::ModelError;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use tch::{Device, Tensor};
use tokenizers::models::ModelWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSeq};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer, Trainer, TruncationParams};

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
    /// Texts `start..start + len` (clamped to the batch), sharing storage.
    pub fn narrow(&self, start: i64, len: i64) -> TokenBatch {
        let len = len.min(self.ids.size()[0] - start);
        TokenBatch {
            ids: self.ids.narrow(0, start, len),
            mask: self.mask.narrow(0, start, len),
            eos: self.eos.narrow(0, start, len),
        }
    }
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
    let mut trainer = DeterministicBpe {
        vocab_size,
        words: BTreeMap::new(),
    };
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

/// Byte-level BPE training with `</w>` end-of-word symbols, reproducible bit for bit. The same
/// algorithm as the `tokenizers` trainer (the most frequent adjacent pair is merged until the
/// vocabulary is full or no pair is left), with a fixed numbering: the special tokens, the 256
/// byte symbols and then every end-of-word symbol in code-point order, then one id per merge;
/// ties between equally frequent pairs go to the pair of smaller ids.
struct DeterministicBpe {
    vocab_size: usize,
    /// Pre-tokenised words and how often they occur.
    words: BTreeMap<String, u64>,
}

const SUFFIX: &str = "</w>";

impl Trainer for DeterministicBpe {
    type Model = ModelWrapper;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn feed<I, S, F>(&mut self, iterator: I, process: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        for sequence in iterator {
            for word in process(sequence.as_ref())? {
                *self.words.entry(word).or_default() += 1;
            }
        }
        Ok(())
    }

    fn train(&self, model: &mut ModelWrapper) -> tokenizers::Result<Vec<AddedToken>> {
        let specials = [BOS, EOS];
        let mut id_to_token: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
        let bytes: BTreeSet<char> = ByteLevel::alphabet().into_iter().collect();
        id_to_token.extend(bytes.iter().map(|c| c.to_string()));
        let finals: BTreeSet<char> = self.words.keys().filter_map(|w| w.chars().last()).collect();
        id_to_token.extend(finals.iter().map(|c| format!("{c}{SUFFIX}")));
        let mut ids: HashMap<String, u32> = id_to_token
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        // Every word as symbol ids, its last character carrying the suffix.
        let mut words: Vec<(Vec<u32>, i64)> = self
            .words
            .iter()
            .map(|(w, &count)| {
                let chars: Vec<char> = w.chars().collect();
                let symbols = chars
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let token = if i + 1 == chars.len() {
                            format!("{c}{SUFFIX}")
                        } else {
                            c.to_string()
                        };
                        ids.get(&token).copied().ok_or_else(|| {
                            format!("character {c:?} is outside the byte-level alphabet")
                        })
                    })
                    .collect::<Result<Vec<u32>, String>>()?;
                Ok((symbols, count as i64))
            })
            .collect::<Result<_, String>>()?;
        let mut pair_counts: HashMap<(u32, u32), i64> = HashMap::new();
        let mut where_found: HashMap<(u32, u32), BTreeSet<usize>> = HashMap::new();
        for (w, (symbols, count)) in words.iter().enumerate() {
            for pair in symbols.windows(2) {
                *pair_counts.entry((pair[0], pair[1])).or_default() += count;
                where_found.entry((pair[0], pair[1])).or_default().insert(w);
            }
        }
        let mut merges: Vec<(String, String)> = Vec::new();
        while id_to_token.len() < self.vocab_size {
            // The most frequent pair; among equals the smallest ids (a total order, so the
            // hash map's iteration order plays no part).
            let best = pair_counts
                .iter()
                .filter(|(_, c)| **c > 0)
                .max_by(|(a, ca), (b, cb)| ca.cmp(cb).then(b.cmp(a)))
                .map(|(&p, _)| p);
            let Some((a, b)) = best else { break };
            let merged = format!("{}{}", id_to_token[a as usize], id_to_token[b as usize]);
            let new_id = id_to_token.len() as u32;
            merges.push((
                id_to_token[a as usize].clone(),
                id_to_token[b as usize].clone(),
            ));
            ids.insert(merged.clone(), new_id);
            id_to_token.push(merged);
            for w in where_found.remove(&(a, b)).unwrap_or_default() {
                let (symbols, count) = &mut words[w];
                for pair in symbols.windows(2) {
                    *pair_counts.entry((pair[0], pair[1])).or_default() -= *count;
                }
                let mut out = Vec::with_capacity(symbols.len());
                let mut i = 0;
                while i < symbols.len() {
                    if i + 1 < symbols.len() && symbols[i] == a && symbols[i + 1] == b {
                        out.push(new_id);
                        i += 2;
                    } else {
                        out.push(symbols[i]);
                        i += 1;
                    }
                }
                *symbols = out;
                for pair in symbols.windows(2) {
                    *pair_counts.entry((pair[0], pair[1])).or_default() += *count;
                    where_found.entry((pair[0], pair[1])).or_default().insert(w);
                }
            }
            pair_counts.remove(&(a, b));
        }
        let vocab: tokenizers::models::bpe::Vocab = id_to_token
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        *model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .end_of_word_suffix(SUFFIX.into())
            .build()?
            .into();
        Ok(specials
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect())
    }
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
