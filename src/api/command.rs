//! Client commands: parsing the arguments of a RESP command into a
//! [`Command`], with the clear errors a user sees for wrong names, wrong arity
//! and bad options. Pure: no I/O, unit-tested on its own.
//!
//! Per-request options follow the fixed arguments, as `NAME=value`:
//! `GET k R=1`, `SET k v W=3 CTX=<token>`. Because they come after the value,
//! a value that looks like an option (`SET k W=2`) is still just a value.

use crate::object::decode_context;
use crate::vclock::VClock;

/// A parsed client command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `PING [message]`
    Ping(Option<Vec<u8>>),
    /// `ECHO message`
    Echo(Vec<u8>),
    /// `GET key [R=n]`: value, nil, or an array of siblings.
    Get {
        /// Key.
        key: Vec<u8>,
        /// Read quorum override.
        r: Option<usize>,
    },
    /// `VGET key [R=n]`: `[context, sibling...]`.
    VGet {
        /// Key.
        key: Vec<u8>,
        /// Read quorum override.
        r: Option<usize>,
    },
    /// `SET key value [W=n] [CTX=token]`
    Set {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Write quorum override.
        w: Option<usize>,
        /// Causal context from a read.
        ctx: Option<VClock>,
    },
    /// `DEL key [W=n] [CTX=token]`
    Del {
        /// Key.
        key: Vec<u8>,
        /// Write quorum override.
        w: Option<usize>,
        /// Causal context from a read.
        ctx: Option<VClock>,
    },
    /// `NODES`
    Nodes,
    /// `OWNERS key`
    Owners(Vec<u8>),
    /// `REPLICAS key`: what each replica (and stand-in) stores.
    Replicas(Vec<u8>),
    /// `STATUS` (also `INFO`)
    Status,
    /// `KILL node-id`
    Kill(String),
    /// `SHUTDOWN`: stop this node.
    Shutdown,
    /// `SHUTDOWN CLUSTER`: stop every node.
    ShutdownCluster,
    /// `QUIT`: close this connection (Redis meaning).
    Quit,
    /// `COMMAND ...`: introspection redis-cli sends on start; answered empty.
    CommandDocs,
    /// `CLIENT ...`, `SELECT 0`: connection settings libraries send; accepted.
    Noop,
    /// `FAULT ...`: fault injection (only with `--fault-injection`).
    Fault(FaultCmd),
}

/// A fault-injection command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultCmd {
    /// `FAULT PARTITION <node>...`: drop all traffic to and from these nodes.
    Partition(Vec<String>),
    /// `FAULT DELAY <node> <ms>`: add latency to traffic with that node.
    Delay(String, u64),
    /// `FAULT LOSS <node> <percent>`: drop that share of traffic with that node.
    Loss(String, u8),
    /// `FAULT HEAL`: remove every rule.
    Heal,
    /// `FAULT SHOW`: list the rules in force.
    Show,
}

fn arity(name: &str) -> String {
    format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )
}

fn text(arg: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(arg.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

/// Options accepted after the fixed arguments.
#[derive(Default)]
struct Options {
    r: Option<usize>,
    w: Option<usize>,
    ctx: Option<VClock>,
}

fn parse_options(
    name: &str,
    key: &[u8],
    args: &[Vec<u8>],
    allowed: &[&str],
) -> Result<Options, String> {
    let mut opts = Options::default();
    for arg in args {
        let arg = text(arg, "option")?;
        let Some((k, v)) = arg.split_once('=') else {
            return Err(format!(
                "unexpected argument '{arg}' for '{}' (options look like {})",
                name.to_ascii_lowercase(),
                allowed
                    .iter()
                    .map(|o| format!("{o}=..."))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
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
                if opts.ctx.replace(decode_context(key, v)?).is_some() {
                    return Err(dup());
                }
            }
            _ => return Err(format!("unknown option '{k}'")),
        }
    }
    Ok(opts)
}

/// Parses one command from its RESP arguments.
pub fn parse(args: &[Vec<u8>]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Err("empty command".into());
    };
    let name = String::from_utf8_lossy(first).to_ascii_uppercase();
    let rest = &args[1..];
    let need = |min: usize| {
        if rest.len() < min {
            Err(arity(&name))
        } else {
            Ok(())
        }
    };
    let exactly = |n: usize| {
        if rest.len() != n {
            Err(arity(&name))
        } else {
            Ok(())
        }
    };
    Ok(match name.as_str() {
        "PING" => {
            if rest.len() > 1 {
                return Err(arity(&name));
            }
            Command::Ping(rest.first().cloned())
        }
        "ECHO" => {
            exactly(1)?;
            Command::Echo(rest[0].clone())
        }
        "GET" | "VGET" => {
            need(1)?;
            let o = parse_options(&name, &rest[0], &rest[1..], &["R"])?;
            let key = rest[0].clone();
            if name == "GET" {
                Command::Get { key, r: o.r }
            } else {
                Command::VGet { key, r: o.r }
            }
        }
        "SET" => {
            need(2)?;
            let o = parse_options(&name, &rest[0], &rest[2..], &["W", "CTX"])?;
            Command::Set {
                key: rest[0].clone(),
                value: rest[1].clone(),
                w: o.w,
                ctx: o.ctx,
            }
        }
        "DEL" => {
            need(1)?;
            let o = parse_options(&name, &rest[0], &rest[1..], &["W", "CTX"])?;
            Command::Del {
                key: rest[0].clone(),
                w: o.w,
                ctx: o.ctx,
            }
        }
        "NODES" => {
            exactly(0)?;
            Command::Nodes
        }
        "OWNERS" => {
            exactly(1)?;
            Command::Owners(rest[0].clone())
        }
        "REPLICAS" => {
            exactly(1)?;
            Command::Replicas(rest[0].clone())
        }
        "STATUS" | "INFO" => Command::Status,
        "KILL" => {
            exactly(1)?;
            Command::Kill(text(&rest[0], "node id")?)
        }
        "SHUTDOWN" => match rest {
            [] => Command::Shutdown,
            [scope] if scope.eq_ignore_ascii_case(b"CLUSTER") => Command::ShutdownCluster,
            [_] => {
                return Err(
                    "SHUTDOWN takes no argument (this node) or CLUSTER (every node)".into(),
                );
            }
            _ => return Err(arity(&name)),
        },
        "QUIT" => Command::Quit,
        "FAULT" => Command::Fault(parse_fault(rest)?),
        "COMMAND" => Command::CommandDocs,
        "CLIENT" => Command::Noop,
        "SELECT" => {
            exactly(1)?;
            if rest[0] != b"0" {
                return Err("distro-db has a single keyspace: only SELECT 0 is accepted".into());
            }
            Command::Noop
        }
        _ => return Err(unknown_command(first, rest)),
    })
}

/// Redis 7's text for an unknown command, byte for byte, so Redis clients
/// and users see what they know: the name as typed (at most 128 bytes), then
/// the first arguments, each in single quotes followed by a space, until 128
/// bytes of them are shown.
fn unknown_command(name: &[u8], args: &[Vec<u8>]) -> String {
    const LIMIT: usize = 128;
    let clip = |b: &[u8], max: usize| String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned();
    let mut shown = String::new();
    for arg in args {
        if shown.len() >= LIMIT {
            break;
        }
        let room = LIMIT - shown.len();
        shown.push('\'');
        shown.push_str(&clip(arg, room));
        shown.push_str("' ");
    }
    format!(
        "unknown command '{}', with args beginning with: {shown}",
        clip(name, LIMIT)
    )
}

fn parse_fault(rest: &[Vec<u8>]) -> Result<FaultCmd, String> {
    let usage = "usage: FAULT PARTITION <node>... | FAULT DELAY <node> <ms> | FAULT LOSS <node> <percent> | FAULT HEAL | FAULT SHOW";
    let Some((sub, args)) = rest.split_first() else {
        return Err(usage.into());
    };
    let args: Vec<String> = args
        .iter()
        .map(|a| text(a, "node id"))
        .collect::<Result<_, _>>()?;
    Ok(
        match (
            String::from_utf8_lossy(sub).to_ascii_uppercase().as_str(),
            args.as_slice(),
        ) {
            ("PARTITION", nodes) if !nodes.is_empty() => FaultCmd::Partition(nodes.to_vec()),
            ("DELAY", [node, ms]) => FaultCmd::Delay(
                node.clone(),
                ms.parse()
                    .map_err(|_| format!("delay must be milliseconds, got '{ms}'"))?,
            ),
            ("LOSS", [node, pct]) => FaultCmd::Loss(
                node.clone(),
                pct.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("loss must be a percentage 0-100, got '{pct}'"))?,
            ),
            ("HEAL", []) => FaultCmd::Heal,
            ("SHOW", []) => FaultCmd::Show,
            _ => return Err(usage.into()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::encode_context;

    fn p(line: &[&str]) -> Result<Command, String> {
        let args: Vec<Vec<u8>> = line.iter().map(|s| s.as_bytes().to_vec()).collect();
        parse(&args)
    }

    #[test]
    fn parses_commands_and_options() {
        assert_eq!(
            p(&["get", "k"]),
            Ok(Command::Get {
                key: b"k".to_vec(),
                r: None
            })
        );
        assert_eq!(
            p(&["GET", "k", "r=1"]),
            Ok(Command::Get {
                key: b"k".to_vec(),
                r: Some(1)
            })
        );
        let token = encode_context(b"k", &VClock::new());
        let ctx_arg = format!("CTX={token}");
        assert_eq!(
            p(&["SET", "k", "v", "W=3", &ctx_arg]),
            Ok(Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                w: Some(3),
                ctx: Some(VClock::new())
            })
        );
        // A value that looks like an option is a value.
        assert_eq!(
            p(&["SET", "k", "W=2"]),
            Ok(Command::Set {
                key: b"k".to_vec(),
                value: b"W=2".to_vec(),
                w: None,
                ctx: None
            })
        );
        assert_eq!(p(&["SHUTDOWN", "cluster"]), Ok(Command::ShutdownCluster));
        assert_eq!(p(&["SHUTDOWN"]), Ok(Command::Shutdown));
        assert_eq!(p(&["KILL", "node-1"]), Ok(Command::Kill("node-1".into())));
    }

    #[test]
    fn clear_errors() {
        assert_eq!(
            p(&["GET"]).unwrap_err(),
            "wrong number of arguments for 'get' command"
        );
        assert_eq!(
            p(&["SET", "k"]).unwrap_err(),
            "wrong number of arguments for 'set' command"
        );
        // Exactly Redis 7's text: name as typed, each argument quoted and
        // followed by a space.
        assert_eq!(
            p(&["FROB"]).unwrap_err(),
            "unknown command 'FROB', with args beginning with: "
        );
        assert_eq!(
            p(&["frob", "a", "b c"]).unwrap_err(),
            "unknown command 'frob', with args beginning with: 'a' 'b c' "
        );
        let long = "x".repeat(200);
        let err = p(&["frob", &long, "next"]).unwrap_err();
        assert_eq!(
            err,
            format!(
                "unknown command 'frob', with args beginning with: '{}' ",
                "x".repeat(128)
            )
        );
        assert!(
            p(&["GET", "k", "W=2"])
                .unwrap_err()
                .contains("unknown option 'W'")
        );
        assert!(
            p(&["GET", "k", "R=0"])
                .unwrap_err()
                .contains("positive integer")
        );
        assert!(
            p(&["GET", "k", "R=1", "R=2"])
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            p(&["SET", "k", "v", "EX"])
                .unwrap_err()
                .contains("unexpected argument")
        );
        assert!(
            p(&["SET", "k", "v", "CTX=!!"])
                .unwrap_err()
                .contains("context token")
        );
        assert!(p(&["SHUTDOWN", "now"]).is_err());
        assert!(p(&["FAULT"]).unwrap_err().starts_with("usage: FAULT"));
        assert!(
            p(&["FAULT", "LOSS", "n", "101"])
                .unwrap_err()
                .contains("0-100")
        );
        assert_eq!(
            p(&["fault", "partition", "a", "b"]),
            Ok(Command::Fault(FaultCmd::Partition(vec![
                "a".into(),
                "b".into()
            ])))
        );
        assert_eq!(
            p(&["FAULT", "DELAY", "a", "50"]),
            Ok(Command::Fault(FaultCmd::Delay("a".into(), 50)))
        );
        assert!(p(&[]).is_err());
    }
}
