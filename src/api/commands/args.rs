//! What the parsers share: Redis's error texts (wrong arity, syntax, not an
//! integer, unknown command and sub-command), reading words as integers,
//! text and upper-case names, deadlines as clients write them ([`When`]),
//! and distro-db's own options after the Redis arguments (`R=n`, `W=n`,
//! `CTX=token`). Pure.

use crate::token::Token;

/// Redis's error for a wrong number of words: `name` is the command's
/// table name (`get`, `client|setname`).
pub fn arity(name: &str) -> String {
    format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )
}

/// Redis's syntax error.
pub const SYNTAX: &str = "syntax error";
/// Redis's error for a word that is not an integer.
pub const NOT_INTEGER: &str = "value is not an integer or out of range";

/// A word as UTF-8 text; `what` names it in the error.
pub fn text(arg: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(arg.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

/// A word as a signed integer, with Redis's error.
pub fn int(arg: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| NOT_INTEGER.to_string())
}

/// A word in upper case (lossy), for matching keywords.
pub fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

/// Redis's error for a command it does not know.
pub fn unknown_command(args: &[Vec<u8>]) -> String {
    let name: String = args
        .first()
        .map(|a| String::from_utf8_lossy(a).chars().take(128).collect())
        .unwrap_or_default();
    let mut shown = String::new();
    for a in args.iter().skip(1) {
        let a: String = String::from_utf8_lossy(a).chars().take(128).collect();
        if shown.len() + a.len() > 128 {
            break;
        }
        shown.push('\'');
        shown.push_str(&a);
        shown.push_str("' ");
    }
    format!("unknown command '{name}', with args beginning with: {shown}")
}

/// Redis's error for an unknown sub-command of `cmd` (`CLIENT`, ...).
pub fn unknown_sub(cmd: &str, sub: &[u8]) -> String {
    format!(
        "unknown subcommand '{}'. Try {cmd} HELP.",
        String::from_utf8_lossy(sub)
            .chars()
            .take(128)
            .collect::<String>()
    )
}

/// A deadline as the client gave it, turned into wall-clock milliseconds
/// when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This many milliseconds from now (`EX`, `PX`, `EXPIRE`, `PEXPIRE`).
    In(i64),
    /// At this Unix time in milliseconds (`EXAT`, `PXAT`, `EXPIREAT`, ...).
    At(i64),
}

impl When {
    /// The deadline in wall-clock milliseconds, from `now_ms`.
    pub fn deadline(self, now_ms: u64) -> u64 {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let at = match self {
            When::In(ms) => now.saturating_add(ms),
            When::At(ms) => ms,
        };
        u64::try_from(at.max(0)).unwrap_or(0)
    }
}

/// `EX|PX|EXAT|PXAT t` as a deadline (`None` for another word); `cmd` is
/// the command's name for the error.
pub fn parse_when(cmd: &str, unit: &[u8], t: &[u8]) -> Result<Option<When>, String> {
    let u = upper(unit);
    if !["EX", "PX", "EXAT", "PXAT"].contains(&u.as_str()) {
        return Ok(None);
    }
    let invalid = || {
        format!(
            "invalid expire time in '{}' command",
            cmd.to_ascii_lowercase()
        )
    };
    let t = int(t)?;
    if t <= 0 {
        return Err(invalid());
    }
    Ok(Some(match u.as_str() {
        "EX" => When::In(t.checked_mul(1000).ok_or_else(invalid)?),
        "PX" => When::In(t),
        "EXAT" => When::At(t.checked_mul(1000).ok_or_else(invalid)?),
        _ => When::At(t),
    }))
}

/// distro-db's options after the Redis arguments (`R=n`, `W=n`, `CTX=token`).
#[derive(Debug, Default)]
pub struct Options {
    /// Read quorum.
    pub r: Option<usize>,
    /// Write quorum.
    pub w: Option<usize>,
    /// Causal context, as the client sent it: checked when the command
    /// runs, against the key and the cluster key ([`crate::api::Api::context`]).
    pub ctx: Option<Token>,
}

/// True when `arg` looks like one of `allowed` options (`NAME=...`).
pub fn is_option(arg: &[u8], allowed: &[&str]) -> bool {
    let upper = upper(arg);
    allowed
        .iter()
        .any(|o| upper.starts_with(o) && upper.as_bytes().get(o.len()) == Some(&b'='))
}

/// Reads `args` as the options `allowed` of command `name`.
pub fn parse_options(name: &str, args: &[Vec<u8>], allowed: &[&str]) -> Result<Options, String> {
    let mut opts = Options::default();
    for arg in args {
        let arg = text(arg, "option")?;
        let Some((k, v)) = arg.split_once('=') else {
            return Err(SYNTAX.into());
        };
        let k = k.to_ascii_uppercase();
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown option '{k}' for '{}'",
                name.to_ascii_lowercase()
            ));
        }
        let dup = || format!("option {k} given twice");
        match k.as_str() {
            "R" | "W" => {
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("{k} must be a positive integer, got '{v}'"))?;
                let slot = if k == "R" { &mut opts.r } else { &mut opts.w };
                if slot.replace(n).is_some() {
                    return Err(dup());
                }
            }
            "CTX" => {
                if opts.ctx.replace(Token::new(v)).is_some() {
                    return Err(dup());
                }
            }
            _ => return Err(format!("unknown option '{k}'")),
        }
    }
    Ok(opts)
}
