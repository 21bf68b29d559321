//! Byte offsets (what toml and `serde_spanned` report) to 1-based line and
//! column numbers (what people and editors expect).

/// Precomputed line starts of one source text.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset at which each line starts; always contains 0.
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, line_starts }
    }

    /// 1-based `(line, column)` of a byte offset; the column counts chars,
    /// not bytes. Offsets past the end or inside a char are clamped, so a
    /// slightly-off span can never panic.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // `line_starts[0] == 0 <= offset`, so the partition point is >= 1.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let prefix = &self.text[start..offset];
        // A byte-order mark is not something the user sees as a column.
        let prefix = if line == 1 {
            prefix.strip_prefix('\u{feff}').unwrap_or(prefix)
        } else {
            prefix
        };
        (line, prefix.chars().count() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn positions() {
        let index = LineIndex::new("ab\ncdé f\n\nx");
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(1), (1, 2));
        assert_eq!(index.position(2), (1, 3)); // the newline itself
        assert_eq!(index.position(3), (2, 1));
        // 'é' is two bytes; 'f' is the 5th char on line 2.
        assert_eq!(index.position(8), (2, 5));
        assert_eq!(index.position(6), (2, 3)); // inside 'é' -> clamped back
        assert_eq!(index.position(10), (3, 1));
        assert_eq!(index.position(11), (4, 1));
        assert_eq!(index.position(999), (4, 2));
    }

    #[test]
    fn byte_order_mark_is_not_a_column() {
        let index = LineIndex::new("\u{feff}abc");
        assert_eq!(index.position(4), (1, 2));
    }

    #[test]
    fn empty_text() {
        assert_eq!(LineIndex::new("").position(0), (1, 1));
    }
}
