//! The REPL: parsing a typed line into arguments, printing replies the way
//! `redis-cli` does, and the read-eval-print loop itself.
//!
//! The REPL is a RESP client: `db master` runs it against its own node over
//! loopback, `db local` against one node of the cluster it started, `db repl
//! --connect HOST:PORT` against any node. On a terminal it edits lines with
//! [`lineedit`] (history, and linear time for any line length);
//! otherwise it reads standard input line by line, prints no prompt and
//! exactly one line per answer (multi-line answers such as NODES aside), and
//! exits at end of input.
//!
//! Arguments are bytes: `\xHH` escapes in double quotes give raw bytes, sent
//! on the wire as they are.

pub mod lineedit;

use std::io::{self, BufRead, IsTerminal, Write};

use crate::client::{Client, Credentials};
use crate::config::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::resp::{Frame, MAX_BULK_LEN};
pub use crate::text::{Token, quote, tokenize};
use lineedit::{Editor, ReadError};

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
        // Text reports print as they are, one line each (NODES, RING,
        // OWNERS, REPLICAS and STATUS come as an array of lines in RESP2).
        ("NODES" | "RING" | "OWNERS" | "REPLICAS" | "STATUS", Frame::Array(_))
        | ("INFO" | "FAULT", Frame::Bulk(_))
            if reply.text().is_some() =>
        {
            reply.text().unwrap_or_default().trim_end().to_string()
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
        Frame::Boolean(b) => format!("(boolean) {b}"),
        Frame::Double(d) => format!("(double) {d}"),
        Frame::Verbatim(_, t) => String::from_utf8_lossy(t).trim_end().to_string(),
        Frame::Text(t) => t.trim_end().to_string(),
        Frame::Array(items) | Frame::Set(items) if items.is_empty() => "(empty array)".into(),
        Frame::Array(items) | Frame::Set(items) => numbered(items.iter(), indent),
        Frame::Map(entries) if entries.is_empty() => "(empty map)".into(),
        Frame::Map(entries) => {
            let flat: Vec<&Frame> = entries.iter().flat_map(|(k, v)| [k, v]).collect();
            numbered(flat.into_iter(), indent)
        }
    }
}

/// Numbered lines, as redis-cli prints an array.
fn numbered<'a>(items: impl Iterator<Item = &'a Frame>, indent: usize) -> String {
    items
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
        .join("\n")
}

/// Where the REPL runs: decides what HELP says and what EXIT means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `db repl --connect`: a client of a running node.
    Client,
    /// `db master`: the REPL is the terminal of the node in this process, so
    /// leaving it stops that node.
    Master,
    /// `db local`: a client of the cluster `db local` started, which keeps
    /// running when the REPL is left.
    Local,
}

/// How the REPL ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// EXIT or end of input.
    Exit,
    /// QUIT: the cluster was told to stop.
    Quit,
    /// The node the REPL is attached to was stopped by this REPL (KILL of
    /// itself, SHUTDOWN).
    NodeStopped,
}

/// The HELP text for a REPL in `mode`.
pub fn help(mode: Mode) -> String {
    let exit = match mode {
        Mode::Master => {
            "leave the REPL and stop this node (the REPL is its terminal); the others keep running"
        }
        Mode::Local => "leave the REPL; the cluster keeps running (reconnect with db repl)",
        Mode::Client => "leave the REPL; the node and the cluster keep running",
    };
    format!(
        "\
Commands (case-insensitive; quote values with spaces: SET k \"a b\"; \"\\xff\" is the byte 0xff):
  SET <key> <value> [W=<n>] [CTX=<token>]   write; CTX supersedes exactly the versions that token saw
  GET <key> [R=<n>]                         read: the value or (nil); with siblings, the newest (VGET shows all)
  VGET <key> [R=<n>]                        read with the context token: CTX=<token> <siblings...>
  DEL <key> [<key> ...]                     delete (writes tombstones); VDEL <key> [W=<n>] [CTX=<token>]
  SET <key> <value> EX <s> | PX <ms> ...    Redis options work too: NX, XX, GET, KEEPTTL; INCR, EXPIRE, TTL, MGET, SCAN...
  AUTH [<user>] <password>                  when the node has users or a password (or set DISTRO_DB_USER and DISTRO_DB_PASSWORD before starting the REPL)
  NODES                                     every member: id, address, live/down
  RING                                      the layout: each node's state and share, the change under way
  LEAVE                                     this node hands its partitions over, then stops
  REMOVE <node id> [FORCE]                  drop a node that is dead for good (FORCE: even if it looks live)
  OWNERS <key>                              the key's preference list
  REPLICAS <key>                            what each owner (and stand-in) stores: clock, siblings
  STATUS                                    this node's configuration and figures
  PING                                      check the connection
  KILL <node id>                            stop that node's process (this REPL's own node: the REPL ends)
  QUIT                                      stop every node of the cluster and leave
  EXIT                                      {exit}
  HELP                                      this text
Limits: key 16 KiB, value 8 MiB, 100 siblings and 32 MiB of values per key."
    )
}

/// HELP for one command: the lines of [`help`] about `topic` (a command
/// name, any case), or an error naming where else to look.
pub fn help_on(mode: Mode, topic: &str) -> Result<String, String> {
    let want = topic.to_ascii_uppercase();
    let text = help(mode);
    let lines: Vec<&str> = text
        .lines()
        // The command lines (indented) that name it as a word.
        .filter(|l| {
            l.starts_with("  ")
                && l.split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|w| w == want)
        })
        .collect();
    if lines.is_empty() {
        return Err(format!(
            "no help for '{topic}': HELP lists the REPL's commands; the Redis commands the node \
             also answers are in docs/redis.md"
        ));
    }
    Ok(lines.join("\n"))
}

/// A hint added to an error answer to a typed line, if one helps.
fn hint(name: &str, args: &[Vec<u8>], error: &str) -> Option<String> {
    if error.starts_with("ERR unknown command ") {
        return Some("(type HELP for the list)".into());
    }
    // `SET k hello world`: the value is one argument; the rest was read as options.
    if name == "SET" && args.len() > 3 && error.contains("syntax error") {
        let value: Vec<String> = args[2..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        return Some(format!(
            " (a value with spaces needs quotes: SET {} \"{}\")",
            crate::text::quote(&args[1]),
            value.join(" ")
        ));
    }
    None
}

/// What the loop should do after a line.
enum Step {
    Continue,
    Done(Outcome),
}

/// The REPL's connection and what it knows about the node behind it.
struct Session {
    client: Client,
    addr: String,
    /// The id of the node the REPL is attached to (from STATUS), if known.
    node_id: Option<String>,
    mode: Mode,
    /// The user and password to authenticate with (from the environment,
    /// or the last `AUTH` that succeeded), sent again on every reconnect.
    creds: Option<Credentials>,
    /// Lines whose answer was an error (for the exit status of a piped REPL).
    failed: usize,
}

/// Connects to `addr` and authenticates with `creds`, if any.
fn connect(addr: &str, creds: Option<&Credentials>) -> io::Result<Client> {
    let mut client = Client::connect(addr)?;
    if let Some(c) = creds {
        client.auth_as(c)?;
    }
    Ok(client)
}

/// Runs the REPL against the node at `addr` (`db repl --connect`) until
/// QUIT, EXIT or end of input.
pub fn run(addr: &str) -> anyhow::Result<Outcome> {
    run_as(addr, None)
}

/// [`run`], authenticating as `user` (none: `DISTRO_DB_USER`, else the
/// default user) with the password in `DISTRO_DB_PASSWORD`.
pub fn run_as(addr: &str, user: Option<&str>) -> anyhow::Result<Outcome> {
    run_client(addr, user).map(|(outcome, _)| outcome)
}

/// [`run_as`], also returning how many typed lines got an error answer
/// (`db repl` exits non-zero when its input was piped and one did, so
/// that scripts see the failure).
pub fn run_client(addr: &str, user: Option<&str>) -> anyhow::Result<(Outcome, usize)> {
    let creds = crate::client::credentials_from_env(user).map_err(anyhow::Error::msg)?;
    run_session(addr, &format!("db {addr}> "), Mode::Client, creds)
}

/// [`run`] with a given prompt and mode (`db master` and `db local` show
/// `db> `).
pub fn run_with_prompt(addr: &str, prompt: &str, mode: Mode) -> anyhow::Result<Outcome> {
    run_session(
        addr,
        prompt,
        mode,
        crate::client::credentials_from_env(None).unwrap_or(None),
    )
    .map(|(outcome, _)| outcome)
}

/// Runs a REPL session; returns how it ended and how many lines got an
/// error answer.
fn run_session(
    addr: &str,
    prompt: &str,
    mode: Mode,
    creds: Option<Credentials>,
) -> anyhow::Result<(Outcome, usize)> {
    let mut client = connect(addr, creds.as_ref())
        .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?;
    let node_id = node_id(&mut client);
    let mut session = Session {
        client,
        addr: addr.to_string(),
        node_id,
        mode,
        creds,
        failed: 0,
    };
    let outcome = if io::stdin().is_terminal() && io::stdout().is_terminal() {
        run_terminal(&mut session, prompt)
    } else {
        run_piped(&mut session)
    }?;
    Ok((outcome, session.failed))
}

/// The node's id, from the first line of STATUS (`node: <id> at <addr>`).
fn node_id(client: &mut Client) -> Option<String> {
    let text = client.call(&["STATUS"]).ok()?.text()?;
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("node: "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

/// Standard input is not a terminal: one line at a time, as bytes (so any
/// byte can be piped in), in time linear in the input.
fn run_piped(session: &mut Session) -> anyhow::Result<Outcome> {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut out = io::stdout();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(Outcome::Exit);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let step = eval(session, &line, &mut out)?;
        out.flush()?;
        if let Step::Done(outcome) = step {
            return Ok(outcome);
        }
    }
}

fn run_terminal(session: &mut Session, prompt: &str) -> anyhow::Result<Outcome> {
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".distro_db_history"));
    let mut editor = Editor::new(history);
    let id = session
        .node_id
        .as_ref()
        .map(|id| format!(" ({id})"))
        .unwrap_or_default();
    println!("connected to {}{id}; type HELP for commands", session.addr);
    let mut out = io::stdout();
    let outcome = loop {
        match editor.readline(prompt) {
            Ok(line) => {
                editor.add_history(&line);
                match eval(session, line.as_bytes(), &mut out) {
                    Ok(Step::Continue) => {}
                    Ok(Step::Done(outcome)) => break outcome,
                    Err(e) => {
                        editor.save_history();
                        return Err(e);
                    }
                }
            }
            Err(ReadError::Interrupted) => continue,
            Err(ReadError::Eof) => break Outcome::Exit,
            Err(ReadError::Io(e)) => {
                editor.save_history();
                return Err(e.into());
            }
        }
    };
    editor.save_history();
    Ok(outcome)
}

/// Checks sizes before sending, so an oversized argument gets a clear
/// error instead of a connection the node has to cut.
fn check_sizes(name: &str, args: &[Vec<u8>]) -> Result<(), String> {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    // A limit: "8 MiB (8388608 bytes)".
    let limit = |n: usize| match n {
        _ if n % MIB == 0 => format!("{} MiB ({n} bytes)", n / MIB),
        _ if n % KIB == 0 => format!("{} KiB ({n} bytes)", n / KIB),
        _ => format!("{n} bytes"),
    };
    // A size: "65.0 MiB (68157440 bytes)".
    let size = |n: usize| {
        if n >= MIB {
            format!("{:.1} MiB ({n} bytes)", n as f64 / MIB as f64)
        } else {
            format!("{n} bytes")
        }
    };
    let keyed = matches!(name, "GET" | "VGET" | "SET" | "DEL" | "OWNERS" | "REPLICAS");
    if keyed
        && let Some(key) = args.get(1)
        && key.len() > MAX_KEY_LEN
    {
        return Err(format!(
            "key too large: {}; the limit is {}; nothing was sent",
            size(key.len()),
            limit(MAX_KEY_LEN)
        ));
    }
    if name == "SET"
        && let Some(value) = args.get(2)
        && value.len() > MAX_VALUE_LEN
    {
        return Err(format!(
            "value too large: {}; the limit is {}; nothing was sent",
            size(value.len()),
            limit(MAX_VALUE_LEN)
        ));
    }
    if let Some(big) = args.iter().find(|a| a.len() > MAX_BULK_LEN) {
        return Err(format!(
            "argument too large: {}; the protocol limit is {}; nothing was sent",
            size(big.len()),
            limit(MAX_BULK_LEN)
        ));
    }
    Ok(())
}

/// Evaluates one typed line, printing its answer to `out` (and notices,
/// such as the REPL's node stopping, to standard error).
fn eval(session: &mut Session, line: &[u8], out: &mut impl Write) -> anyhow::Result<Step> {
    let tokens = match tokenize(line) {
        Ok(t) => t,
        Err(e) => {
            session.failed += 1;
            writeln!(out, "(error) ERR {e}")?;
            return Ok(Step::Continue);
        }
    };
    let Some(first) = tokens.first() else {
        return Ok(Step::Continue);
    };
    let name = String::from_utf8_lossy(&first.text).to_ascii_uppercase();
    match name.as_str() {
        "HELP" => {
            match tokens.get(1) {
                None => writeln!(out, "{}", help(session.mode))?,
                Some(topic) => match help_on(session.mode, &String::from_utf8_lossy(&topic.text)) {
                    Ok(text) => writeln!(out, "{text}")?,
                    Err(e) => {
                        session.failed += 1;
                        writeln!(out, "(error) ERR {e}")?;
                    }
                },
            }
            return Ok(Step::Continue);
        }
        "EXIT" => return Ok(Step::Done(Outcome::Exit)),
        _ => {}
    }
    let mut args: Vec<Vec<u8>> = tokens.into_iter().map(|t| t.text).collect();
    if let Err(e) = check_sizes(&name, &args) {
        session.failed += 1;
        writeln!(out, "(error) ERR {e}")?;
        return Ok(Step::Continue);
    }
    let quit = name == "QUIT";
    if quit {
        if args.len() != 1 {
            session.failed += 1;
            writeln!(
                out,
                "(error) ERR wrong number of arguments for 'quit' command"
            )?;
            return Ok(Step::Continue);
        }
        // RESP QUIT only closes a connection; the REPL's QUIT stops the cluster.
        args = vec![b"SHUTDOWN".to_vec(), b"CLUSTER".to_vec()];
    }
    // Stopping the node this REPL is attached to ends the REPL.
    let stops_own_node = match (name.as_str(), args.len()) {
        ("SHUTDOWN", 1) => true,
        ("KILL", 2) => session
            .node_id
            .as_ref()
            .is_some_and(|id| id.as_bytes() == args[1].as_slice()),
        _ => false,
    };
    let reply = match call_with_reconnect(session, &args) {
        Ok(r) => r,
        Err(e) => {
            session.failed += 1;
            writeln!(out, "(error) connection to {} failed: {e}", session.addr)?;
            return Ok(if quit {
                Step::Done(Outcome::Quit)
            } else {
                Step::Continue
            });
        }
    };
    let mut text = format_reply(&name, &reply);
    if let Frame::Error(e) = &reply {
        session.failed += 1;
        if let Some(h) = hint(&name, &args, e) {
            text.push_str(&h);
        }
    }
    writeln!(out, "{text}")?;
    let ok = !matches!(reply, Frame::Error(_));
    if quit && ok {
        return Ok(Step::Done(Outcome::Quit));
    }
    if stops_own_node && ok {
        out.flush()?;
        let who = session.node_id.as_deref().unwrap_or("the node");
        match session.mode {
            Mode::Client => eprintln!(
                "{who} at {} (the node this REPL is connected to) is stopping; the REPL exits",
                session.addr
            ),
            Mode::Master | Mode::Local => {
                eprintln!("{who} (the node this REPL is attached to) is stopping; the REPL exits")
            }
        }
        return Ok(Step::Done(Outcome::NodeStopped));
    }
    Ok(Step::Continue)
}

/// Sends a command, first reconnecting if the node closed the connection
/// while the REPL sat idle. A command whose answer was lost is not resent:
/// it may have been applied.
fn call_with_reconnect(session: &mut Session, args: &[Vec<u8>]) -> io::Result<Frame> {
    if session.client.is_closed() {
        session.client = connect(&session.addr, session.creds.as_ref())?;
    }
    let reply = session.client.call(args)?;
    // Remember credentials that worked, for reconnects.
    if !matches!(reply, Frame::Error(_))
        && let Some(creds) = credentials_of(args)
    {
        session.creds = Some(creds);
        if session.node_id.is_none() {
            session.node_id = node_id(&mut session.client);
        }
    }
    Ok(reply)
}

/// The credentials a command authenticates with: `AUTH [user] password`,
/// `HELLO v AUTH user password ...`.
fn credentials_of(args: &[Vec<u8>]) -> Option<Credentials> {
    let name = args.first()?;
    if name.eq_ignore_ascii_case(b"AUTH") {
        return match args {
            [_, password] => Some(Credentials {
                user: None,
                password: password.clone(),
            }),
            [_, user, password] => Some(Credentials {
                user: Some(user.clone()),
                password: password.clone(),
            }),
            _ => None,
        };
    }
    if name.eq_ignore_ascii_case(b"HELLO") {
        let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"AUTH"))?;
        return match (args.get(at + 1), args.get(at + 2)) {
            (Some(user), Some(password)) => Some(Credentials {
                user: Some(user.clone()),
                password: password.clone(),
            }),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_before_sending() {
        let args = |k: usize, v: usize| vec![b"SET".to_vec(), vec![b'k'; k], vec![b'v'; v]];
        assert!(check_sizes("SET", &args(10, MAX_VALUE_LEN)).is_ok());
        let e = check_sizes("SET", &args(10, 65 << 20)).unwrap_err();
        assert!(e.starts_with("value too large: 65.0 MiB"), "{e}");
        assert!(e.contains("the limit is 8 MiB"), "{e}");
        let e = check_sizes("GET", &args(MAX_KEY_LEN + 1, 0)[..2]).unwrap_err();
        assert!(e.contains("the limit is 16 KiB"), "{e}");
    }

    #[test]
    fn auth_and_hello_credentials_are_remembered() {
        let w = |line: &[&str]| -> Vec<Vec<u8>> {
            line.iter().map(|s| s.as_bytes().to_vec()).collect()
        };
        let creds = |user: Option<&str>, pw: &str| Credentials {
            user: user.map(|u| u.as_bytes().to_vec()),
            password: pw.as_bytes().to_vec(),
        };
        assert_eq!(credentials_of(&w(&["auth", "pw"])), Some(creds(None, "pw")));
        assert_eq!(
            credentials_of(&w(&["AUTH", "alice", "pw"])),
            Some(creds(Some("alice"), "pw"))
        );
        assert_eq!(
            credentials_of(&w(&["HELLO", "3", "AUTH", "alice", "pw", "SETNAME", "x"])),
            Some(creds(Some("alice"), "pw"))
        );
        assert_eq!(credentials_of(&w(&["HELLO", "3"])), None);
        assert_eq!(credentials_of(&w(&["AUTH"])), None);
        assert_eq!(credentials_of(&w(&["GET", "AUTH"])), None);
        assert!(!format!("{:?}", creds(Some("alice"), "topsecret")).contains("topsecret"));
    }

    #[test]
    fn help_on_one_command() {
        let set = help_on(Mode::Client, "set").unwrap();
        assert!(
            set.lines().all(|l| l.trim_start().starts_with("SET ")),
            "{set}"
        );
        assert!(set.contains("SET <key> <value> [W=<n>]"), "{set}");
        assert!(set.contains("EX <s>"), "{set}");
        assert!(!set.contains("GET <key> [R=<n>]"), "{set}");
        assert!(
            help_on(Mode::Local, "EXIT")
                .unwrap()
                .contains("cluster keeps running")
        );
        assert!(
            help_on(Mode::Client, "vdel")
                .unwrap()
                .starts_with("  DEL <key>")
        );
        assert!(
            help_on(Mode::Client, "INCR")
                .unwrap()
                .contains("Redis options work too")
        );
        let e = help_on(Mode::Client, "frobnicate").unwrap_err();
        assert!(
            e.contains("no help for 'frobnicate'") && e.contains("docs/redis.md"),
            "{e}"
        );
    }

    #[test]
    fn unquoted_values_with_spaces_get_a_hint() {
        let args =
            |l: &[&str]| -> Vec<Vec<u8>> { l.iter().map(|s| s.as_bytes().to_vec()).collect() };
        let h = hint(
            "SET",
            &args(&["SET", "k", "hello", "world"]),
            "ERR syntax error",
        )
        .unwrap();
        assert_eq!(
            h,
            " (a value with spaces needs quotes: SET \"k\" \"hello world\")"
        );
        assert!(hint("SET", &args(&["SET", "k", "v"]), "ERR syntax error").is_none());
        assert!(hint("GET", &args(&["GET", "k"]), "ERR wrong number").is_none());
        assert_eq!(
            hint("FOO", &args(&["FOO"]), "ERR unknown command 'FOO'").as_deref(),
            Some("(type HELP for the list)")
        );
    }

    #[test]
    fn help_matches_the_mode() {
        assert!(help(Mode::Master).contains("stop this node"));
        assert!(help(Mode::Local).contains("the cluster keeps running"));
        assert!(!help(Mode::Client).contains("stop this node"));
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
        // A report in RESP2 (an array of lines) and in RESP3 prints as lines.
        let lines = Frame::Array(vec![
            Frame::Simple("a b".into()),
            Frame::Simple("  c".into()),
        ]);
        assert_eq!(format_reply("NODES", &lines), "a b\n  c");
        let verbatim = Frame::Verbatim("txt".into(), b"a b\n  c\n".to_vec());
        assert_eq!(format_reply("STATUS", &verbatim), "a b\n  c");
        assert_eq!(quote(&[0, 255]), "\"\\x00\\xff\"");
    }
}
