//! Parse, check and evaluation errors.
//!
//! A [`PqlError`] is positioned (1-based line and column plus the byte span) so the HTTP layer can
//! return it inside a 400 envelope as is, and the CLI can print it with [`PqlError::render`].

use super::ast::Span;

/// One positioned error found while parsing or checking an expression.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{line}:{column}: {message}")]
pub struct PqlError {
    /// Machine-readable class, e.g. `unexpected_token`, `unknown_function`, `type_mismatch`.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// 1-based line of `span.start`.
    pub line: usize,
    /// 1-based column (in characters) of `span.start`.
    pub column: usize,
    /// Byte range in the source.
    pub span: Span,
    /// What the parser or checker expected at that point, if it can say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// A close match for a misspelt name ("did you mean `startsWith`?").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

impl PqlError {
    /// Builds an error, computing line and column from `source`.
    pub fn new(code: &'static str, message: impl Into<String>, span: Span, source: &str) -> Self {
        let (line, column) = line_col(source, span.start);
        PqlError {
            code,
            message: message.into(),
            line,
            column,
            span,
            expected: None,
            suggestion: None,
        }
    }

    /// Adds the "expected" text.
    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    /// Adds a suggestion.
    pub fn suggest(mut self, suggestion: Option<String>) -> Self {
        self.suggestion = suggestion;
        self
    }

    /// Prints the error, the offending source line and a caret line under the span:
    ///
    /// ```text
    /// error[unknown_function] at 1:13: unknown function `startWith`
    ///   |
    /// 1 | person.name.startWith("J")
    ///   |             ^^^^^^^^^
    ///   = expected: a known function
    ///   = help: did you mean `startsWith`?
    /// ```
    pub fn render(&self, source: &str) -> String {
        let start = self.span.start.min(source.len());
        let line_start = source[..floor_char(source, start)]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line_end = source[line_start..]
            .find('\n')
            .map_or(source.len(), |i| line_start + i);
        let line_text = &source[line_start..line_end];
        let caret_col = source[line_start..floor_char(source, start)]
            .chars()
            .count();
        // A span reaching past the line is underlined to the end of the line; an empty span
        // (end of input) still gets one caret.
        let end = self.span.end.min(line_end).max(start);
        let width = source[floor_char(source, start)..floor_char(source, end)]
            .chars()
            .count()
            .max(1);
        let gutter = self.line.to_string();
        let pad = " ".repeat(gutter.len());
        let mut out = format!(
            "error[{}] at {}:{}: {}\n{pad} |\n{gutter} | {line_text}\n{pad} | {}{}",
            self.code,
            self.line,
            self.column,
            self.message,
            " ".repeat(caret_col),
            "^".repeat(width)
        );
        if let Some(e) = &self.expected {
            out.push_str(&format!("\n{pad} = expected: {e}"));
        }
        if let Some(s) = &self.suggestion {
            out.push_str(&format!("\n{pad} = help: did you mean `{s}`?"));
        }
        out
    }
}

/// Largest char boundary not after `i`, so slicing never panics on multi-byte input.
fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// 1-based line and character column of byte offset `pos`.
pub fn line_col(source: &str, pos: usize) -> (usize, usize) {
    let pos = floor_char(source, pos);
    let before = &source[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// All errors found in one expression, in source order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(transparent)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct PqlErrors(pub Vec<PqlError>);

impl PqlErrors {
    /// Renders every error with [`PqlError::render`], separated by blank lines.
    pub fn render(&self, source: &str) -> String {
        self.0
            .iter()
            .map(|e| e.render(source))
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

impl From<PqlError> for PqlErrors {
    fn from(e: PqlError) -> Self {
        PqlErrors(vec![e])
    }
}

/// A failure while evaluating a compiled query. Missing data is not an error (it evaluates to
/// null / false per pql.md §3); these are the cases that cannot produce a value at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A regular expression given by an attribute value (not a literal) failed to compile.
    #[error("invalid regular expression `{pattern}`: {reason}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The query's result cannot be represented as JSON (e.g. a non-finite double).
    #[error("result is not representable as JSON: {0}")]
    Unrepresentable(String),
}

/// Edit distance counting insertions, deletions, substitutions and adjacent transpositions
/// (optimal string alignment), case-insensitively: `WEHN` is one edit from `WHEN`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = best;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate within a distance of a third of the name's length (at least 1, at
/// most 3), so that only plausible typos get a suggestion.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}
