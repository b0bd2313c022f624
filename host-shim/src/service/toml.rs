//! The subset of TOML the configuration uses, parsed by hand: `[section]` headers,
//! `key = value` lines with a quoted string, an integer (`_` separators allowed), `true`/`false`
//! or a one-line array of quoted strings, and `#` comments. Anything else is an error that
//! names the line. (A hand parser keeps the service free of a serde stack; the file is small.)

/// A value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `"text"`.
    Str(String),
    /// `123`.
    Int(i64),
    /// `true` / `false`.
    Bool(bool),
    /// `["a", "b"]`.
    List(Vec<String>),
}

impl Value {
    /// Name of the type, for errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::List(_) => "a list of strings",
        }
    }
}

/// One `key = value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Section (`""` before the first header).
    pub section: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: Value,
    /// 1-based line number.
    pub line: usize,
}

fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

fn parse_str(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('"') || inner.contains('\\') {
        return None;
    }
    Some(inner.to_string())
}

fn parse_value(s: &str) -> Result<Value, String> {
    let s = s.trim();
    if s.starts_with('"') {
        return parse_str(s).map(Value::Str).ok_or_else(|| {
            "a string must be one pair of double quotes with no `\"` or `\\` inside".into()
        });
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let items: Vec<&str> = inner
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        return items
            .iter()
            .map(|i| parse_str(i).ok_or_else(|| format!("list item `{i}` is not a quoted string")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List);
    }
    match s {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let digits = s.replace('_', "");
    digits
        .parse::<i64>()
        .map(Value::Int)
        .map_err(|_| format!("`{s}` is not a string, integer, boolean or list of strings"))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses `text`; errors say the line and what is wrong. A key given twice is an error.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut section = String::new();
    let mut out: Vec<Entry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim();
            if !is_name(name) {
                return Err(format!("line {line_no}: `{line}` is not a section header"));
            }
            section = name.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {line_no}: expected `key = value`, found `{line}`"
            ));
        };
        let key = key.trim();
        if !is_name(key) {
            return Err(format!("line {line_no}: `{key}` is not a key name"));
        }
        let value = parse_value(value).map_err(|e| format!("line {line_no}: {key}: {e}"))?;
        if out.iter().any(|e| e.section == section && e.key == key) {
            return Err(format!("line {line_no}: [{section}] {key} is set twice"));
        }
        out.push(Entry {
            section: section.clone(),
            key: key.to_string(),
            value,
            line: line_no,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subset() {
        let e = parse(
            "# top\n[link]\nsocket = \"/run/a#b.sock\" # c\nsize = 1_048_576\n\
             [s]\non = true\nlist = [\"a\", \"b\",]\nempty = []\n",
        )
        .unwrap();
        assert_eq!(e.len(), 5);
        assert_eq!(e[0].value, Value::Str("/run/a#b.sock".into()));
        assert_eq!((e[0].section.as_str(), e[0].line), ("link", 3));
        assert_eq!(e[1].value, Value::Int(1 << 20));
        assert_eq!(e[2].value, Value::Bool(true));
        assert_eq!(e[3].value, Value::List(vec!["a".into(), "b".into()]));
        assert_eq!(e[4].value, Value::List(vec![]));
    }

    #[test]
    fn refuses_malformed_lines_with_their_number() {
        for (text, says) in [
            ("[link\n", "line 1"),
            ("a = 1\nb\n", "line 2: expected `key = value`"),
            ("a = \"x\n", "line 1: a"),
            ("a = [1]\n", "not a quoted string"),
            ("a = yes\n", "`yes` is not"),
            ("a = 1\na = 2\n", "set twice"),
            ("a b = 1\n", "not a key name"),
            ("a = \"x\\\"\"\n", "line 1"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
