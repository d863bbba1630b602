//! Diagnostics: one problem in a manifest, located by file, line, column and key path.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `grid.sparsity[2]`; empty for file-level problems.
    pub key_path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key_path.is_empty() {
            write!(f, "`{}`: ", self.key_path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one manifest (never empty).
#[derive(Debug, thiserror::Error)]
pub struct ManifestError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        for d in &self.diagnostics {
            writeln!(f, "error: {d}")?;
        }
        write!(
            f,
            "{n} error{} in manifest; nothing was run",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Collects diagnostics for one source text, converting byte spans to line:column.
pub struct Diags<'s> {
    file: PathBuf,
    line_starts: Vec<usize>,
    src: &'s str,
    pub list: Vec<Diagnostic>,
}

impl<'s> Diags<'s> {
    pub fn new(file: &Path, src: &'s str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            file: file.to_path_buf(),
            line_starts,
            src,
            list: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= at) - 1;
        let start = self.line_starts[line];
        let column = self
            .src
            .get(start..at)
            .map_or(at - start, |s| s.chars().count())
            + 1;
        (line + 1, column)
    }

    pub fn error(&mut self, span: &Range<usize>, key_path: &str, message: impl Into<String>) {
        self.push(span, key_path, message.into(), None);
    }

    pub fn error_hint(
        &mut self,
        span: &Range<usize>,
        key_path: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(span, key_path, message.into(), Some(hint.into()));
    }

    fn push(&mut self, span: &Range<usize>, key_path: &str, message: String, hint: Option<String>) {
        let (line, column) = self.line_col(span.start);
        self.list.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            key_path: key_path.to_string(),
            message,
            hint,
        });
    }

    pub fn finish(mut self) -> Result<(), ManifestError> {
        if self.list.is_empty() {
            return Ok(());
        }
        self.list.sort_by_key(|d| (d.line, d.column));
        self.list.dedup();
        Err(ManifestError {
            diagnostics: self.list,
        })
    }
}

/// The closest candidate to `word` by Jaro-Winkler similarity, if close enough to suggest.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
