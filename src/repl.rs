//! The REPL: parsing a typed line into arguments, printing replies the way
//! `redis-cli` does, and the read-eval-print loop itself.
//!
//! The REPL is a RESP client: `db master` runs it against its own node over
//! loopback, `db repl --connect HOST:PORT` against any node. On a terminal it
//! has line editing and history (rustyline); otherwise it reads standard input
//! line by line, prints no prompt and exactly one line per answer (multi-line
//! answers such as NODES aside), and exits at end of input.

use std::io::{self, BufRead, IsTerminal, Write};

use crate::client::Client;
use crate::resp::Frame;

/// One argument of a typed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The argument with quotes removed and escapes applied.
    pub text: String,
    /// True when it was written in quotes.
    pub quoted: bool,
}

/// Splits a line into arguments. Double quotes allow `\"`, `\\`, `\n`, `\r`,
/// `\t` and `\xHH` escapes; single quotes are literal (but for `\'`).
pub fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else {
            return Ok(out);
        };
        let mut text = String::new();
        let quoted = c == '"' || c == '\'';
        if quoted {
            chars.next();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == c {
                    closed = true;
                    break;
                }
                if ch == '\\' {
                    let Some(esc) = chars.next() else { break };
                    if c == '\'' {
                        if esc != '\'' {
                            text.push('\\');
                        }
                        text.push(esc);
                        continue;
                    }
                    match esc {
                        'n' => text.push('\n'),
                        'r' => text.push('\r'),
                        't' => text.push('\t'),
                        'x' => {
                            let hex: String = chars.by_ref().take(2).collect();
                            let byte = u8::from_str_radix(&hex, 16)
                                .map_err(|_| format!("invalid escape \\x{hex}"))?;
                            text.push(char::from(byte));
                        }
                        other => text.push(other),
                    }
                } else {
                    text.push(ch);
                }
            }
            if !closed {
                return Err("unbalanced quotes".into());
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err("closing quote must be followed by a space".into());
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                text.push(ch);
                chars.next();
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

/// Text for one sibling value (`(deleted)` for a tombstone).
fn sibling(f: &Frame) -> String {
    match f {
        Frame::Bulk(b) => quote(b),
        Frame::Null => "(deleted)".into(),
        other => format_generic(other, 0),
    }
}

/// Formats a reply to `command` (upper-case name) for display.
pub fn format_reply(command: &str, reply: &Frame) -> String {
    match (command, reply) {
        (_, Frame::Error(e)) => format!("(error) {e}"),
        ("GET", Frame::Array(items)) => {
            let values: Vec<String> = items.iter().map(sibling).collect();
            format!("({} siblings) {}", items.len(), values.join(" "))
        }
        ("VGET", Frame::Array(items)) => match items.split_first() {
            Some((Frame::Bulk(ctx), values)) => {
                let values: Vec<String> = if values.is_empty() {
                    vec!["(nil)".into()]
                } else {
                    values.iter().map(sibling).collect()
                };
                format!("CTX={} {}", String::from_utf8_lossy(ctx), values.join(" "))
            }
            _ => format_generic(reply, 0),
        },
        // Text reports print as they are, one line each.
        ("NODES" | "OWNERS" | "REPLICAS" | "STATUS" | "INFO" | "FAULT", Frame::Bulk(text)) => {
            String::from_utf8_lossy(text).trim_end().to_string()
        }
        _ => format_generic(reply, 0),
    }
}

fn format_generic(reply: &Frame, indent: usize) -> String {
    match reply {
        Frame::Simple(s) => s.clone(),
        Frame::Error(e) => format!("(error) {e}"),
        Frame::Integer(i) => format!("(integer) {i}"),
        Frame::Bulk(b) => quote(b),
        Frame::Null => "(nil)".into(),
        Frame::Array(items) if items.is_empty() => "(empty array)".into(),
        Frame::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let pad = if i == 0 {
                    String::new()
                } else {
                    " ".repeat(indent)
                };
                let prefix = format!("{}) ", i + 1);
                let inner = format_generic(f, indent + prefix.len());
                format!("{pad}{prefix}{inner}")
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// The HELP text.
pub const HELP: &str = "\
Commands (case-insensitive; quote values with spaces: SET k \"a b\"):
  SET <key> <value> [W=<n>] [CTX=<token>]   write; CTX supersedes exactly the versions that token saw
  GET <key> [R=<n>]                         read: the value, (nil), or every sibling
  VGET <key> [R=<n>]                        read with the context token: CTX=<token> <siblings...>
  DEL <key> [W=<n>] [CTX=<token>]           delete (writes a tombstone)
  NODES                                     every ring member: id, address, live/down
  OWNERS <key>                              the key's preference list
  REPLICAS <key>                            what each owner (and stand-in) stores: clock, siblings
  STATUS                                    this node's configuration and figures
  PING                                      check the connection
  KILL <node id>                            stop that node's process
  QUIT                                      stop every node of the cluster and leave
  EXIT                                      leave the REPL; the cluster keeps running
  HELP                                      this text";

/// What the loop should do after a line.
enum Step {
    Continue,
    Exit,
}

/// Runs the REPL against the node at `addr` until QUIT, EXIT or end of input.
pub fn run(addr: &str) -> anyhow::Result<()> {
    run_with_prompt(addr, &format!("db {addr}> "))
}

/// [`run`] with a given prompt (the master's is plain `db> `).
pub fn run_with_prompt(addr: &str, prompt: &str) -> anyhow::Result<()> {
    let mut client =
        Client::connect(addr).map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?;
    if io::stdin().is_terminal() {
        run_terminal(&mut client, addr, prompt)
    } else {
        let stdin = io::stdin();
        let mut out = io::stdout();
        for line in stdin.lock().lines() {
            let line = line?;
            let step = eval(&mut client, addr, &line, &mut out)?;
            out.flush()?;
            if let Step::Exit = step {
                break;
            }
        }
        Ok(())
    }
}

fn run_terminal(client: &mut Client, addr: &str, prompt: &str) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".distro_db_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("connected to {addr}; type HELP for commands");
    let mut out = io::stdout();
    loop {
        match editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if let Step::Exit = eval(client, addr, &line, &mut out)? {
                    break;
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Evaluates one typed line, printing its answer to `out`.
fn eval(client: &mut Client, addr: &str, line: &str, out: &mut impl Write) -> anyhow::Result<Step> {
    let tokens = match tokenize(line) {
        Ok(t) => t,
        Err(e) => {
            writeln!(out, "(error) ERR {e}")?;
            return Ok(Step::Continue);
        }
    };
    let Some(first) = tokens.first() else {
        return Ok(Step::Continue);
    };
    let name = first.text.to_ascii_uppercase();
    match name.as_str() {
        "HELP" => {
            writeln!(out, "{HELP}")?;
            return Ok(Step::Continue);
        }
        "EXIT" => return Ok(Step::Exit),
        _ => {}
    }
    let mut args: Vec<String> = tokens.into_iter().map(|t| t.text).collect();
    let quit = name == "QUIT";
    if quit {
        if args.len() != 1 {
            writeln!(
                out,
                "(error) ERR wrong number of arguments for 'quit' command"
            )?;
            return Ok(Step::Continue);
        }
        // RESP QUIT only closes a connection; the REPL's QUIT stops the cluster.
        args = vec!["SHUTDOWN".into(), "CLUSTER".into()];
    }
    let reply = match call_with_reconnect(client, addr, &args) {
        Ok(r) => r,
        Err(e) => {
            writeln!(out, "(error) connection to {addr} failed: {e}")?;
            return Ok(if quit { Step::Exit } else { Step::Continue });
        }
    };
    writeln!(out, "{}", format_reply(&name, &reply))?;
    let stopped = quit && !matches!(reply, Frame::Error(_));
    Ok(if stopped { Step::Exit } else { Step::Continue })
}

/// Sends a command, first reconnecting if the node closed the connection
/// while the REPL sat idle. A command whose answer was lost is not resent:
/// it may have been applied.
fn call_with_reconnect(client: &mut Client, addr: &str, args: &[String]) -> io::Result<Frame> {
    if client.is_closed() {
        *client = Client::connect(addr)?;
    }
    client.call(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        tokenize(line)
            .unwrap()
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn tokenizes_quotes_and_escapes() {
        assert_eq!(texts("SET k \"a b\""), ["SET", "k", "a b"]);
        assert_eq!(texts("  GET   k  "), ["GET", "k"]);
        assert_eq!(texts(r#"SET k "q\"x\n""#), ["SET", "k", "q\"x\n"]);
        assert_eq!(texts(r#"SET k "\x41""#), ["SET", "k", "A"]);
        assert_eq!(texts("SET k ''"), ["SET", "k", ""]);
        assert_eq!(texts("SET k 'a \\' b'"), ["SET", "k", "a ' b"]);
        assert!(tokenize("SET k \"open").is_err());
        assert!(tokenize("SET k \"a\"b").is_err());
        assert!(tokenize("").unwrap().is_empty());
        assert!(tokenize("SET k \"W=2\"").unwrap()[2].quoted);
    }

    #[test]
    fn formats_like_redis_cli_on_one_line() {
        assert_eq!(format_reply("SET", &Frame::ok()), "OK");
        assert_eq!(format_reply("GET", &Frame::Null), "(nil)");
        assert_eq!(format_reply("GET", &Frame::bulk("a\nb")), "\"a\\nb\"");
        assert_eq!(format_reply("DEL", &Frame::Integer(1)), "(integer) 1");
        assert_eq!(format_reply("GET", &Frame::err("boom")), "(error) ERR boom");
        let sibs = Frame::Array(vec![Frame::bulk("x"), Frame::Null]);
        assert_eq!(format_reply("GET", &sibs), "(2 siblings) \"x\" (deleted)");
        let v = Frame::Array(vec![Frame::bulk("tok"), Frame::bulk("x")]);
        assert_eq!(format_reply("VGET", &v), "CTX=tok \"x\"");
        let v = Frame::Array(vec![Frame::bulk("tok")]);
        assert_eq!(format_reply("VGET", &v), "CTX=tok (nil)");
        let arr = Frame::Array(vec![Frame::bulk("a"), Frame::Integer(2)]);
        assert_eq!(format_reply("X", &arr), "1) \"a\"\n2) (integer) 2");
        assert_eq!(quote(&[0, 255]), "\"\\x00\\xff\"");
    }
}
