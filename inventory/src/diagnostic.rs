//! Positioned error messages, and the collector that validation pushes into.

use std::fmt;

use crate::span::LineIndex;

/// One problem in an inventory file, with where it is and how to fix it.
///
/// Renders as
/// ```text
/// inventory.toml:12:9: error: unknown key `prot` in [redis]
///   hint: expected one of: port, maxmemory, ...
/// ```
/// (the hint line only when there is a hint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The `source_name` given to [`parse`](crate::parse).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in chars.
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in an inventory, sorted by position.
///
/// Displays as the diagnostics joined by newlines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn render(list: &[Diagnostic]) -> String {
    list.iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Diagnostics {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Collects diagnostics for one source text, turning byte offsets into
/// line:column as they arrive.
pub(crate) struct Report<'a> {
    file: &'a str,
    index: LineIndex<'a>,
    items: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Self {
            file,
            index: LineIndex::new(text),
            items: Vec::new(),
        }
    }

    /// Records an error at byte `offset` of the source.
    pub(crate) fn error(
        &mut self,
        offset: usize,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (line, column) = self.index.position(offset);
        self.items.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            hint: Some(hint.into()),
        });
    }

    /// 1-based line of a byte offset, for hints like "first defined at line 7".
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.index.position(offset).0
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.items.is_empty()
    }

    /// All diagnostics in file order (stable, so two at one position keep
    /// the order they were found in).
    pub(crate) fn finish(mut self) -> Diagnostics {
        self.items.sort_by_key(|d| (d.line, d.column));
        Diagnostics(self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diagnostic(hint: Option<&str>) -> Diagnostic {
        Diagnostic {
            file: "inventory.toml".into(),
            line: 12,
            column: 9,
            message: "unknown key `prot` in [redis]".into(),
            hint: hint.map(str::to_owned),
        }
    }

    #[test]
    fn display_with_and_without_hint() {
        assert_eq!(
            diagnostic(Some("expected one of: port")).to_string(),
            "inventory.toml:12:9: error: unknown key `prot` in [redis]\n  hint: expected one of: port"
        );
        assert_eq!(
            diagnostic(None).to_string(),
            "inventory.toml:12:9: error: unknown key `prot` in [redis]"
        );
        let both = Diagnostics(vec![diagnostic(None), diagnostic(Some("h"))]);
        assert_eq!(
            both.to_string(),
            "inventory.toml:12:9: error: unknown key `prot` in [redis]\n\
             inventory.toml:12:9: error: unknown key `prot` in [redis]\n  hint: h"
        );
    }

    #[test]
    fn report_sorts_by_position() {
        let mut report = Report::new("f.toml", "a\nb\nc");
        report.error(4, "third", "h");
        report.error(0, "first", "h");
        report.error(2, "second", "h");
        let messages: Vec<_> = report.finish().into_iter().map(|d| d.message).collect();
        assert_eq!(messages, ["first", "second", "third"]);
    }
}
