//! The text syntax people type and read: splitting a line into arguments
//! (the quoting rules of redis-cli and of RESP inline commands) and quoting
//! bytes for display on one line. Pure; shared by the REPL ([`crate::repl`])
//! and the RESP decoder's inline commands ([`crate::api::resp`]), so neither
//! depends on the other. Also [`count`], a number with its noun in the
//! right number, for the reports people read.

/// One argument of a typed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The argument's bytes, with quotes removed and escapes applied.
    pub text: Vec<u8>,
    /// True when it was written in quotes.
    pub quoted: bool,
}

/// Splits a line into arguments (as redis-cli and redis-server's inline
/// commands do). Double quotes allow `\"`, `\\`, `\n`, `\r`, `\t`, `\a`,
/// `\b` and `\xHH` escapes, where `\xHH` is the raw byte HH (`\xff` is the
/// byte 0xff, not the UTF-8 encoding of U+00FF); single quotes are literal
/// (but for `\'`). Other bytes pass through unchanged. Linear in the length.
pub fn tokenize(line: impl AsRef<[u8]>) -> Result<Vec<Token>, String> {
    let line = line.as_ref();
    let mut out = Vec::new();
    let mut i = 0;
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    loop {
        while line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        let Some(&c) = line.get(i) else {
            return Ok(out);
        };
        let mut text = Vec::new();
        let quoted = c == b'"' || c == b'\'';
        if quoted {
            i += 1;
            let mut closed = false;
            while let Some(&b) = line.get(i) {
                i += 1;
                if b == c {
                    closed = true;
                    break;
                }
                if b != b'\\' {
                    text.push(b);
                    continue;
                }
                let Some(&esc) = line.get(i) else { break };
                i += 1;
                if c == b'\'' {
                    if esc != b'\'' {
                        text.push(b'\\');
                    }
                    text.push(esc);
                    continue;
                }
                match esc {
                    b'n' => text.push(b'\n'),
                    b'r' => text.push(b'\r'),
                    b't' => text.push(b'\t'),
                    b'a' => text.push(0x07),
                    b'b' => text.push(0x08),
                    b'x' => {
                        let (hi, lo) = (line.get(i).copied(), line.get(i + 1).copied());
                        match (hi.and_then(hex), lo.and_then(hex)) {
                            (Some(h), Some(l)) => {
                                text.push(h << 4 | l);
                                i += 2;
                            }
                            _ => {
                                let shown: String = line[i..(i + 2).min(line.len())]
                                    .iter()
                                    .map(|&b| char::from(b))
                                    .collect();
                                return Err(format!("invalid escape \\x{shown}"));
                            }
                        }
                    }
                    other => text.push(other),
                }
            }
            if !closed {
                return Err("unbalanced quotes".into());
            }
            if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                return Err("closing quote must be followed by a space".into());
            }
        } else {
            while let Some(&b) = line.get(i) {
                if b.is_ascii_whitespace() {
                    break;
                }
                text.push(b);
                i += 1;
            }
        }
        out.push(Token { text, quoted });
    }
}

/// Quotes bytes for display: printable ASCII as is, the rest escaped, so a
/// value always prints on one line.
pub fn quote(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// Redis's glob matching (`KEYS`, `SCAN MATCH`, `CONFIG GET`): `*` any
/// run, `?` one byte, `[abc]`, `[a-z]` and `[^a]` a class, `\\x` the byte `x`.
/// Linear in practice: a `*` backtracks only to its own last position.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and where in the text it last resumed.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last `*` swallow one more byte.
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pat` (`[...]`); returns
/// whether it matched and the class's length, or `None` if unclosed.
fn class_match(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = pat.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        let b = pat[i];
        if b == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if b == b'\\' && i + 1 < pat.len() {
            matched |= pat[i + 1] == c;
            i += 2;
        } else if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            let (lo, hi) = (b.min(pat[i + 2]), b.max(pat[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
    }
    None
}

/// `1 hint`, `2 hints`, `0 hints`: `n` and `noun` (plural with an `s`).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<Vec<u8>> {
        tokenize(line)
            .unwrap()
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    fn strs(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn tokenizes_quotes_and_escapes() {
        assert_eq!(texts("SET k \"a b\""), strs(&["SET", "k", "a b"]));
        assert_eq!(texts("  GET   k  "), strs(&["GET", "k"]));
        assert_eq!(texts(r#"SET k "q\"x\n""#), strs(&["SET", "k", "q\"x\n"]));
        assert_eq!(texts(r#"SET k "\x41""#), strs(&["SET", "k", "A"]));
        assert_eq!(texts("SET k ''"), strs(&["SET", "k", ""]));
        assert_eq!(texts("SET k 'a \\' b'"), strs(&["SET", "k", "a ' b"]));
        assert!(tokenize("SET k \"open").is_err());
        assert!(tokenize("SET k \"a\"b").is_err());
        assert!(tokenize("SET k \"\\xZZ\"").is_err());
        assert!(tokenize("SET k \"\\x4\"").is_err());
        assert!(tokenize("").unwrap().is_empty());
        assert!(tokenize("SET k \"W=2\"").unwrap()[2].quoted);
        // UTF-8 typed as is stays UTF-8.
        assert_eq!(texts("SET k é")[2], "é".as_bytes());
    }

    #[test]
    fn hex_escapes_are_raw_bytes() {
        // \xff is the byte 0xff, not U+00FF encoded as c3 bf.
        assert_eq!(texts(r#"SET bin "\xff\x00""#)[2], vec![0xff, 0x00]);
        assert_eq!(
            texts(r#"SET bin "\x80\xC3\xa9""#)[2],
            vec![0x80, 0xc3, 0xa9]
        );
        // Raw non-UTF-8 bytes in the input pass through.
        assert_eq!(tokenize(b"SET k \xfe").unwrap()[2].text, vec![0xfe]);
    }

    #[test]
    fn tokenizing_is_linear() {
        let line = format!("SET k \"{}\"", "ab\\x41".repeat(1 << 20));
        let started = std::time::Instant::now();
        let t = tokenize(&line).unwrap();
        assert_eq!(t[2].text.len(), 3 << 20);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn globs_match_like_redis() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("key:*", "key:123"));
        assert!(!m("key:*", "kez:123"));
        assert!(m("h?llo", "hello") && m("h?llo", "hallo") && !m("h?llo", "hllo"));
        assert!(m("h*llo", "heeeello") && m("h*llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx") && !m("*a*b*c*", "xxaxxcxxbxx"));
        // A long text with many stars stays fast.
        let text = "a".repeat(10_000);
        assert!(!m("*a*a*a*a*a*a*b", &text));
    }

    #[test]
    fn quoting_keeps_values_on_one_line() {
        assert_eq!(quote(&[0, 255]), "\"\\x00\\xff\"");
        assert_eq!(quote(b"a\nb\"c"), "\"a\\nb\\\"c\"");
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(1u64, "hint"), "1 hint");
        assert_eq!(count(0u64, "hint"), "0 hints");
        assert_eq!(count(2u32, "node"), "2 nodes");
    }
}
