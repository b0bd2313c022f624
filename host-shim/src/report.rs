//! The side-by-side text table every demo prints (one column per configuration, one row per
//! measure), so the scheduling, memory and network demos lay out their results one way.

use std::fmt::Write as _;

/// Renders `rows` (a label and one cell per configuration) under `heads`, with `corner` above
/// the labels. Each configuration's column is as wide as its widest cell or head, and at least
/// `min_width`; cells are right-aligned.
pub fn columns(
    corner: &str,
    heads: &[&str],
    rows: &[(String, Vec<String>)],
    min_width: usize,
) -> String {
    let w0 = rows
        .iter()
        .map(|r| r.0.len())
        .chain([corner.len()])
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = heads
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|r| r.1.get(i))
                .map(|c| c.chars().count())
                .chain([h.len(), min_width])
                .max()
                .unwrap_or(min_width)
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{corner:w0$}");
    for (h, w) in heads.iter().zip(&widths) {
        let _ = write!(out, "  {h:>w$}");
    }
    out.push('\n');
    for (name, cells) in rows {
        let _ = write!(out, "{name:w0$}");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {c:>w$}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_fit_their_widest_cell_and_head() {
        let rows = vec![
            ("short".to_string(), vec!["1".to_string(), "22".to_string()]),
            (
                "a longer label".to_string(),
                vec!["333".to_string(), "4".to_string()],
            ),
        ];
        let t = super::columns("mode", &["host", "a-long-head"], &rows, 4);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "mode            host  a-long-head");
        assert_eq!(lines[1], "short              1           22");
        assert_eq!(lines[2], "a longer label   333            4");
    }
}
