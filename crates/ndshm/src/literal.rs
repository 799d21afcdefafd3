//! The small subset of Python literal syntax that `.npy` headers use:
//! strings, integers, booleans, `None`, tuples, lists and dicts.
//!
//! numpy writes its header with `repr()`, so this is what a reader that is
//! not Python must understand. Depth and length are bounded so a hostile
//! header cannot exhaust the stack.

use thiserror::Error;

/// A parsed literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Literal>),
    List(Vec<Literal>),
    Dict(Vec<(Literal, Literal)>),
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed literal at byte {pos}: {what}")]
pub struct LiteralError {
    pub pos: usize,
    pub what: &'static str,
}

const MAX_DEPTH: usize = 32;

/// Parses one literal that spans all of `text` (surrounding white space allowed).
pub fn parse(text: &str) -> Result<Literal, LiteralError> {
    let mut p = Parser { s: text.as_bytes(), text, pos: 0 };
    let v = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> LiteralError {
        LiteralError { pos: self.pos, what }
    }

    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Literal, LiteralError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.ws();
        match self.peek() {
            Some(b'\'') | Some(b'"') => self.string().map(Literal::Str),
            Some(b'(') => {
                let (mut items, trailing_comma) = self.seq(b')', depth)?;
                // `(x)` is just x in Python; only `(x,)` is a one-tuple.
                match items.pop() {
                    Some(x) if items.is_empty() && !trailing_comma => Ok(x),
                    Some(x) => {
                        items.push(x);
                        Ok(Literal::Tuple(items))
                    }
                    None => Ok(Literal::Tuple(items)),
                }
            }
            Some(b'[') => Ok(Literal::List(self.seq(b']', depth)?.0)),
            Some(b'{') => self.dict(depth),
            Some(c) if c == b'-' || c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    self.pos += 1;
                }
                match &self.text[start..self.pos] {
                    "True" => Ok(Literal::Bool(true)),
                    "False" => Ok(Literal::Bool(false)),
                    "None" => Ok(Literal::None),
                    _ => Err(LiteralError { pos: start, what: "unknown name" }),
                }
            }
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end")),
        }
    }

    fn int(&mut self) -> Result<Literal, LiteralError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let digits = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == digits || self.pos - digits > 30 {
            return Err(LiteralError { pos: start, what: "bad integer" });
        }
        // numpy on Python 2 wrote `3L`; accept it.
        let end = self.pos;
        if self.peek() == Some(b'L') {
            self.pos += 1;
        }
        self.text[start..end]
            .parse::<i128>()
            .map(Literal::Int)
            .map_err(|_| LiteralError { pos: start, what: "bad integer" })
    }

    fn seq(&mut self, close: u8, depth: usize) -> Result<(Vec<Literal>, bool), LiteralError> {
        self.pos += 1; // opening bracket
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, trailing_comma));
            }
            if items.len() >= 4096 {
                return Err(self.err("too many items"));
            }
            items.push(self.value(depth + 1)?);
            trailing_comma = false;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => {}
                _ => return Err(self.err("expected ',' or closing bracket")),
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Literal, LiteralError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Literal::Dict(items));
            }
            if items.len() >= 64 {
                return Err(self.err("too many keys"));
            }
            let k = self.value(depth + 1)?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            let v = self.value(depth + 1)?;
            items.push((k, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn string(&mut self) -> Result<String, LiteralError> {
        let quote = self.s[self.pos];
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while self.peek().is_some_and(|c| c != quote && c != b'\\') {
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(_) => {
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.pos += 1;
                    let ch = match esc {
                        b'\\' => '\\',
                        b'\'' => '\'',
                        b'"' => '"',
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'0' => '\0',
                        b'x' => self.hex(2)?,
                        b'u' => self.hex(4)?,
                        b'U' => self.hex(8)?,
                        _ => return Err(self.err("unknown escape")),
                    };
                    out.push(ch);
                }
            }
        }
    }

    fn hex(&mut self, n: usize) -> Result<char, LiteralError> {
        let digits = self.text.get(self.pos..self.pos + n).ok_or_else(|| self.err("short escape"))?;
        let v = u32::from_str_radix(digits, 16).map_err(|_| self.err("bad escape"))?;
        self.pos += n;
        char::from_u32(v).ok_or_else(|| self.err("bad escape"))
    }
}

impl Literal {
    /// The literal as Python's `repr()` writes it.
    pub fn repr(&self) -> String {
        let join = |items: &[Literal]| items.iter().map(Literal::repr).collect::<Vec<_>>().join(", ");
        match self {
            Literal::Str(s) => repr_str(s),
            Literal::Int(i) => i.to_string(),
            Literal::Bool(true) => "True".into(),
            Literal::Bool(false) => "False".into(),
            Literal::None => "None".into(),
            Literal::Tuple(items) if items.len() == 1 => format!("({},)", items[0].repr()),
            Literal::Tuple(items) => format!("({})", join(items)),
            Literal::List(items) => format!("[{}]", join(items)),
            Literal::Dict(items) => {
                let kv: Vec<String> = items.iter().map(|(k, v)| format!("{}: {}", k.repr(), v.repr())).collect();
                format!("{{{}}}", kv.join(", "))
            }
        }
    }
}

/// Writes `s` as Python's `repr()` of a str would, for the characters that
/// appear in dtype descriptions.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_dict() {
        let v = parse("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }").unwrap();
        let Literal::Dict(items) = v else { panic!("not a dict") };
        assert_eq!(items.len(), 3);
        assert_eq!(items[2].1, Literal::Tuple(vec![Literal::Int(3), Literal::Int(4)]));
    }

    #[test]
    fn one_tuple_and_parenthesised_value() {
        assert_eq!(parse("(3,)").unwrap(), Literal::Tuple(vec![Literal::Int(3)]));
        assert_eq!(parse("(3)").unwrap(), Literal::Int(3));
        assert_eq!(parse("()").unwrap(), Literal::Tuple(vec![]));
    }

    #[test]
    fn strings_round_trip_through_repr() {
        for s in ["plain", "it's", "say \"hi\"", "tab\tnew\nline", "ünï"] {
            assert_eq!(parse(&repr_str(s)).unwrap(), Literal::Str(s.to_string()));
        }
        assert_eq!(parse(r"'\x41\u00e9'").unwrap(), Literal::Str("Aé".into()));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "{", "(1,", "'abc", "foo", "{'a' 1}", "1 2", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
