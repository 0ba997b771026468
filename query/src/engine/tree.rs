//! `json_serialize_sql`'s answer read into a flat tree, without recursion.
//!
//! The syntax tree of a statement nests as deeply as its SQL: DuckDB's parser accepts
//! expressions up to 1,000 levels deep, and each level is two to four levels of JSON.
//! `serde_json` stops at 128 levels (a chain of 60 `+` is already deeper), and lifting its
//! limit would make both the parse and the walk recurse once per level on a 2 MiB thread
//! stack. So the answer is read here with an explicit stack into one vector of nodes that
//! refer to their children by index, and [`super::allow`] walks it with its own stack: the
//! depth of a statement costs memory, never stack.
//!
//! Only what the walk needs is kept: strings (decoded; borrowed from the text when they
//! hold no escape), arrays, objects with their keys in order, and that a number, `true`,
//! `false` or `null` was there. The input is DuckDB's own output, but it is parsed
//! strictly anyway: anything that is not well-formed JSON is an error, never a guess.

use std::borrow::Cow;

/// One JSON value; containers hold the indices of their children in [`Tree::nodes`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node<'a> {
    /// `null` or a number: nothing the walk reads.
    Scalar,
    /// `true` or `false`.
    Bool(bool),
    /// A string, decoded.
    Str(Cow<'a, str>),
    /// An array: its items.
    Array(Vec<usize>),
    /// An object: its keys and values, in order.
    Object(Vec<(Cow<'a, str>, usize)>),
}

/// A JSON document: [`Tree::nodes`]`[0]` is the root.
#[derive(Debug)]
pub(super) struct Tree<'a> {
    pub(super) nodes: Vec<Node<'a>>,
}

impl<'a> Tree<'a> {
    /// The node at `index`.
    pub(super) fn node(&self, index: usize) -> &Node<'a> {
        &self.nodes[index]
    }

    /// The value of `key` when `index` is an object that has it.
    pub(super) fn get(&self, index: usize, key: &str) -> Option<usize> {
        match self.node(index) {
            Node::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v),
            _ => None,
        }
    }

    /// The boolean value of `key` when `index` is an object that has one.
    pub(super) fn bool(&self, index: usize, key: &str) -> Option<bool> {
        match self.node(self.get(index, key)?) {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string value of `key` when `index` is an object that has one.
    pub(super) fn str(&self, index: usize, key: &str) -> Option<&str> {
        match self.node(self.get(index, key)?) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Reads `text`, which must be exactly one JSON value (whitespace around it allowed).
    pub(super) fn parse(text: &'a str) -> Result<Tree<'a>, String> {
        Parser { text, at: 0, nodes: Vec::new() }.document()
    }
}

/// A container being filled, innermost last.
enum Open<'a> {
    Array(usize),
    /// An object and the key whose value comes next.
    Object(usize, Option<Cow<'a, str>>),
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
    nodes: Vec<Node<'a>>,
}

impl<'a> Parser<'a> {
    fn document(mut self) -> Result<Tree<'a>, String> {
        let mut open: Vec<Open<'a>> = Vec::new();
        loop {
            // A value starts here: a scalar, or a container that becomes the innermost.
            self.skip_whitespace();
            let index = self.nodes.len();
            let mut container = None;
            match self.peek() {
                Some(b'{') => {
                    self.at += 1;
                    self.nodes.push(Node::Object(Vec::new()));
                    container = Some(Open::Object(index, None));
                }
                Some(b'[') => {
                    self.at += 1;
                    self.nodes.push(Node::Array(Vec::new()));
                    container = Some(Open::Array(index));
                }
                Some(b'"') => {
                    let s = self.string()?;
                    self.nodes.push(Node::Str(s));
                }
                Some(b't') => self.literal("true", Node::Bool(true))?,
                Some(b'f') => self.literal("false", Node::Bool(false))?,
                Some(b'n') => self.literal("null", Node::Scalar)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.error("a value")),
            }
            attach(&mut self.nodes, open.last_mut(), index);
            let mut closed = match container {
                Some(c) => {
                    open.push(c);
                    // An empty container closes at once.
                    self.skip_whitespace();
                    match (open.last(), self.peek()) {
                        (Some(Open::Object(..)), Some(b'}')) | (Some(Open::Array(_)), Some(b']')) => {
                            self.at += 1;
                            open.pop();
                            true
                        }
                        _ => false,
                    }
                }
                None => true,
            };
            // After a complete value: a separator, or the end of one or more containers.
            while closed {
                self.skip_whitespace();
                match (open.last_mut(), self.peek()) {
                    (None, None) => return Ok(Tree { nodes: self.nodes }),
                    (None, Some(_)) => return Err(self.error("the end of the document")),
                    (Some(_), Some(b',')) => {
                        self.at += 1;
                        closed = false;
                    }
                    (Some(Open::Array(_)), Some(b']')) | (Some(Open::Object(..)), Some(b'}')) => {
                        self.at += 1;
                        open.pop();
                    }
                    (Some(_), _) => return Err(self.error("`,` or the end of a container")),
                }
            }
            // An object's next value comes after its key.
            if let Some(Open::Object(_, key)) = open.last_mut() {
                self.skip_whitespace();
                if self.peek() != Some(b'"') {
                    return Err(self.error("an object key"));
                }
                *key = Some(self.string()?);
                self.skip_whitespace();
                if self.peek() != Some(b':') {
                    return Err(self.error("`:`"));
                }
                self.at += 1;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn error(&self, expected: &str) -> String {
        format!("malformed JSON at byte {}: expected {expected}", self.at)
    }

    fn literal(&mut self, word: &str, node: Node<'a>) -> Result<(), String> {
        if !self.text[self.at..].starts_with(word) {
            return Err(self.error(word));
        }
        self.at += word.len();
        self.nodes.push(node);
        Ok(())
    }

    /// A number, checked for JSON's shape but not converted: the walk never reads one.
    fn number(&mut self) -> Result<(), String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = |p: &mut Self| {
            let from = p.at;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.at += 1;
            }
            p.at > from
        };
        if !digits(self) {
            return Err(self.error("a digit"));
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !digits(self) {
                return Err(self.error("a digit"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !digits(self) {
                return Err(self.error("a digit"));
            }
        }
        debug_assert!(self.at > start);
        self.nodes.push(Node::Scalar);
        Ok(())
    }

    /// A string at `"`, decoded; borrowed when it has no escape.
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.at += 1;
        let start = self.at;
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            match b {
                b'"' => {
                    let s = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' => return self.escaped_string(start).map(Cow::Owned),
                0..=0x1f => return Err(self.error("no control character in a string")),
                _ => self.at += 1,
            }
        }
        Err(self.error("the end of a string"))
    }

    /// The rest of a string holding escapes, from its first character at `start`.
    fn escaped_string(&mut self, start: usize) -> Result<String, String> {
        let mut out = String::from(&self.text[start..self.at]);
        loop {
            // `self.at` is at a character boundary: every byte stepped over so far was a
            // whole ASCII character or a whole character copied below.
            let Some(c) = self.text[self.at..].chars().next() else {
                return Err(self.error("the end of a string"));
            };
            self.at += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\u{0}'..='\u{1f}' => return Err(self.error("no control character in a string")),
                '\\' => {
                    let Some(e) = self.peek() else { return Err(self.error("an escape")) };
                    self.at += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let unit = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&unit) {
                                // A high surrogate: its low half follows as another `\u`.
                                if !self.text[self.at..].starts_with("\\u") {
                                    return Err(self.error("the low half of a surrogate pair"));
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.error("the low half of a surrogate pair"));
                                }
                                char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                            } else {
                                char::from_u32(unit)
                            };
                            out.push(c.ok_or_else(|| self.error("a Unicode scalar value"))?);
                        }
                        _ => return Err(self.error("a valid escape")),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.text.get(self.at..self.at + 4).ok_or_else(|| self.error("four hex digits"))?;
        let unit = u32::from_str_radix(digits, 16).map_err(|_| self.error("four hex digits"))?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error("four hex digits"));
        }
        self.at += 4;
        Ok(unit)
    }
}

/// Adds the value at `index` to the innermost open container (none: it is the root).
fn attach<'a>(nodes: &mut [Node<'a>], parent: Option<&mut Open<'a>>, index: usize) {
    match parent {
        Some(Open::Array(a)) => {
            if let Node::Array(items) = &mut nodes[*a] {
                items.push(index);
            }
        }
        Some(Open::Object(o, key)) => {
            if let (Node::Object(fields), Some(k)) = (&mut nodes[*o], key.take()) {
                fields.push((k, index));
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree back as compact JSON, to compare with `serde_json`'s reading.
    fn render(t: &Tree<'_>, i: usize) -> serde_json::Value {
        match t.node(i) {
            Node::Scalar => serde_json::Value::Null,
            Node::Bool(b) => serde_json::Value::Bool(*b),
            Node::Str(s) => serde_json::Value::String(s.to_string()),
            Node::Array(items) => items.iter().map(|&c| render(t, c)).collect(),
            Node::Object(fields) => fields.iter().map(|(k, v)| (k.to_string(), render(t, *v))).collect(),
        }
    }

    /// `serde_json`'s reading with numbers made null, as [`Node::Scalar`].
    fn scalars_as_null(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value as V;
        match v {
            V::String(s) => V::String(s),
            V::Bool(b) => V::Bool(b),
            V::Array(a) => a.into_iter().map(scalars_as_null).collect(),
            V::Object(o) => o.into_iter().map(|(k, v)| (k, scalars_as_null(v))).collect(),
            _ => V::Null,
        }
    }

    #[test]
    fn documents_read_as_serde_json_reads_them() {
        for text in [
            r#"{"a": [1, -2.5e+3, true, false, null, "x"], "b": {}, "c": [], "d": {"e": [[], [{}]]}}"#,
            r#"  "just a string"  "#,
            "0",
            r#"{"esc": "q\"b\\s\/n\n\t\r\b\f é \u00e9 \ud83d\ude00 end", "k\"ey": 1}"#,
            r#"[{"class": "FUNCTION", "function_name": "enable_logging", "children": []}]"#,
        ] {
            let tree = Tree::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let expected = scalars_as_null(serde_json::from_str(text).unwrap());
            assert_eq!(render(&tree, 0), expected, "{text}");
        }
        let t = Tree::parse(r#"{"a": "x", "b": 1}"#).unwrap();
        assert_eq!(t.str(0, "a"), Some("x"));
        assert_eq!(t.str(0, "b"), None);
        assert_eq!(t.get(0, "c"), None);
        let t = Tree::parse(r#"{"t": true, "f": false, "n": null}"#).unwrap();
        assert_eq!((t.bool(0, "t"), t.bool(0, "f"), t.bool(0, "n")), (Some(true), Some(false), None));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for text in [
            "",
            "{",
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a": }"#,
            r#"{1: 2}"#,
            "tru",
            "01x",
            "-",
            "1.",
            "1e",
            r#""open"#,
            r#""bad \x escape""#,
            r#""\ud800 alone""#,
            r#""\u12g4""#,
            "[] []",
            "\"a\u{1}b\"",
            r#"{"a": 1,}"#,
            "]",
        ] {
            assert!(Tree::parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn depth_costs_no_stack() {
        // Far deeper than any thread's stack would allow a recursive reader.
        let depth = 200_000;
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let tree = Tree::parse(&text).unwrap();
        assert_eq!(tree.nodes.len(), depth);
        let text = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        assert_eq!(Tree::parse(&text).unwrap().nodes.len(), depth + 1);
    }
}
