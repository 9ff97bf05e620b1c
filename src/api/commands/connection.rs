//! The connection family: PING, ECHO, QUIT, HELLO, AUTH, SELECT, RESET and
//! the CLIENT sub-commands. Except PING and ECHO they read or change the
//! connection's own state, so the session runs them, alone.

use super::args::{SYNTAX, int, text, unknown_sub, upper};
use super::spec::*;
use super::{Access, Action, Call, ConnReply, ConnectionCommand, Family};
use crate::acl::Credentials;
use crate::api::After;
use crate::api::info::REDIS_VERSION;
use crate::api::resp::{Frame, Proto};
use crate::api::session::Conn;

/// The connection family.
pub const FAMILY: Family = Family {
    name: "connection",
    commands: COMMANDS,
    refused: &[],
};

const CLIENT_TYPES: &[Arg] = &[
    token("normal", "NORMAL"),
    token("master", "MASTER"),
    token("replica", "REPLICA"),
    token("pubsub", "PUBSUB"),
];
const ON_OFF: Arg = oneof("enabled", &[token("on", "ON"), token("off", "OFF")]);

const COMMANDS: &[Spec] = &[
    cmd("ping", -1, CONNECTION, "1.0.0", Access::Connection, |c| {
        match c.args {
            [] => Ok(Action::reply(Frame::Simple("PONG".into()))),
            [m] => Ok(Action::reply(Frame::Bulk(m.clone()))),
            _ => Err(c.arity_error()),
        }
    })
    .doc(
        "Checks that the server answers: replies PONG, or the message if one is given.",
        "O(1)",
    )
    .flags(F_FAST)
    .acl(A_CONN_FAST)
    .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
    .args(&[string("message").opt()])
    .free(),
    cmd("echo", 2, CONNECTION, "1.0.0", Access::Connection, |c| {
        Ok(Action::reply(Frame::Bulk(c.args[0].clone())))
    })
    .doc("Replies with the message it was given.", "O(1)")
    .flags(F_FAST)
    .acl(A_CONN_FAST)
    .args(&[string("message")])
    .free(),
    cmd("quit", -1, CONNECTION, "1.0.0", Access::Connection, |_| {
        Ok(Action::connection(Quit))
    })
    .doc(
        "Asks the server to close the connection once the reply is sent.",
        "O(1)",
    )
    .flags(F_ANYTIME)
    .acl(A_CONN_FAST)
    .deprecated("7.2.0", "just closing the connection")
    .before_auth()
    .not_queued()
    .ends_input(),
    cmd("hello", -1, CONNECTION, "6.0.0", Access::Connection, parse_hello)
        .doc(
            "Chooses the protocol version (2 or 3), optionally authenticating and naming the connection; replies with facts about the server.",
            "O(1)",
        )
        .flags(F_ANYTIME)
        .acl(A_CONN_FAST)
        .args(&[block(
            "arguments",
            &[
                integer("protover"),
                block("username-password", &[string("username"), string("password")])
                    .tok("AUTH")
                    .opt(),
                string("clientname").tok("SETNAME").opt(),
            ],
        )
        .opt()])
        .before_auth(),
    cmd("auth", -2, CONNECTION, "1.0.0", Access::Connection, |c| match c.args {
        [password] => Ok(Action::connection(Auth(Credentials {
            user: None,
            password: password.clone(),
        }))),
        [user, password] => Ok(Action::connection(Auth(Credentials {
            user: Some(user.clone()),
            password: password.clone(),
        }))),
        _ => Err(c.arity_error()),
    })
    .doc(
        "Authenticates the connection, with a password or a user name and password.",
        "O(N) where N is the number of passwords the user has",
    )
    .flags(F_ANYTIME)
    .acl(A_CONN_FAST)
    .args(&[string("username").opt().since("6.0.0"), string("password")])
    .before_auth(),
    cmd("select", 2, CONNECTION, "1.0.0", Access::Connection, |c| {
        Ok(Action::connection(Select(int(&c.args[0])?)))
    })
    .doc(
        "Chooses the logical database of the connection; distro-db has only database 0.",
        "O(1)",
    )
    .flags(&["loading", "stale", "fast"])
    .acl(A_CONN_FAST)
    .args(&[integer("index")]),
    cmd("reset", 1, CONNECTION, "6.2.0", Access::Connection, |_| {
        Ok(Action::connection(Reset))
    })
    .doc(
        "Returns the connection to its initial state: no transaction, no watched keys, no name, RESP2.",
        "O(1)",
    )
    .flags(F_ANYTIME)
    .acl(A_CONN_FAST)
    .not_queued(),
    cmd("client", -2, CONNECTION, "2.4.0", Access::Connection, |c| {
        Err(unknown_sub("CLIENT", c.args.first().map_or(&[][..], |s| s)))
    })
    .doc(
        "A container for commands about client connections.",
        "Depends on the sub-command",
    )
    .subs(CLIENT_SUBS),
];

const CLIENT_SUBS: &[Spec] = &[
    cmd(
        "client|id",
        2,
        CONNECTION,
        "5.0.0",
        Access::Connection,
        |_| Ok(client(ClientCmd::Id)),
    )
    .doc("Returns the unique ID of this connection.", "O(1)")
    .flags(F_NOSCRIPT)
    .acl(A_CONN_SLOW),
    cmd(
        "client|getname",
        2,
        CONNECTION,
        "2.6.9",
        Access::Connection,
        |_| Ok(client(ClientCmd::GetName)),
    )
    .doc("Returns the name given to this connection, or nil.", "O(1)")
    .flags(F_NOSCRIPT)
    .acl(A_CONN_SLOW),
    cmd(
        "client|setname",
        3,
        CONNECTION,
        "2.6.9",
        Access::Connection,
        |c| {
            let name = &c.args[0];
            valid_name(name)?;
            Ok(client(ClientCmd::SetName(name.clone())))
        },
    )
    .doc(
        "Gives this connection a name, shown by CLIENT LIST.",
        "O(1)",
    )
    .flags(F_NOSCRIPT)
    .acl(A_CONN_SLOW)
    .args(&[string("connection-name")]),
    cmd(
        "client|list",
        -2,
        CONNECTION,
        "2.4.0",
        Access::Admin,
        parse_client_list,
    )
    .doc(
        "Lists the open client connections, one line each.",
        "O(N) where N is the number of connections",
    )
    .flags(F_ADMIN)
    .acl(A_CONN_ADMIN)
    .tips(T_NONDETERMINISTIC)
    .args(&[
        oneof("client-type", CLIENT_TYPES)
            .tok("TYPE")
            .opt()
            .since("5.0.0"),
        integer("client-id").tok("ID").opt().multi().since("6.2.0"),
    ]),
    cmd(
        "client|info",
        2,
        CONNECTION,
        "6.2.0",
        Access::Connection,
        |_| Ok(client(ClientCmd::Info)),
    )
    .doc(
        "Describes this connection, in the format of a CLIENT LIST line.",
        "O(1)",
    )
    .flags(F_NOSCRIPT)
    .acl(A_CONN_SLOW)
    .tips(T_NONDETERMINISTIC),
    cmd("client|kill", -3, CONNECTION, "2.4.0", Access::Admin, |c| {
        Ok(client(ClientCmd::Kill(parse_kill(c.args)?)))
    })
    .doc(
        "Closes the client connections that match an address or a set of filters.",
        "O(N) where N is the number of connections",
    )
    .flags(F_ADMIN)
    .acl(A_CONN_ADMIN)
    .args(&[oneof(
        "filter",
        &[
            string("old-format").display("ip:port").deprecated("2.8.12"),
            oneof(
                "new-format",
                &[
                    integer("client-id").tok("ID").opt().since("2.8.12"),
                    oneof("client-type", CLIENT_TYPES)
                        .tok("TYPE")
                        .opt()
                        .since("2.8.12"),
                    string("username").tok("USER").opt(),
                    string("addr").tok("ADDR").display("ip:port").opt(),
                    string("laddr")
                        .tok("LADDR")
                        .display("ip:port")
                        .opt()
                        .since("6.2.0"),
                    oneof("skipme", &[token("yes", "YES"), token("no", "NO")])
                        .tok("SKIPME")
                        .opt(),
                ],
            )
            .multi(),
        ],
    )])
    // Without a filter: a syntax error, not Redis's arity error.
    .parser_checks_arity(),
    cmd(
        "client|setinfo",
        4,
        CONNECTION,
        "7.2.0",
        Access::Connection,
        |c| {
            let attr = upper(&c.args[0]);
            if attr != "LIB-NAME" && attr != "LIB-VER" {
                return Err(format!(
                    "Unrecognized option '{}'",
                    String::from_utf8_lossy(&c.args[0])
                ));
            }
            Ok(client(ClientCmd::SetInfo(attr, c.args[1].clone())))
        },
    )
    .doc(
        "Records the name or the version of the client library on this connection.",
        "O(1)",
    )
    .flags(F_NOSCRIPT)
    .acl(A_CONN_SLOW)
    .args(&[oneof(
        "attr",
        &[
            string("libname").tok("LIB-NAME"),
            string("libver").tok("LIB-VER"),
        ],
    )]),
    cmd(
        "client|no-evict",
        3,
        CONNECTION,
        "7.0.0",
        Access::Admin,
        on_off,
    )
    .doc(
        "Sets whether this connection may be closed when clients use too much memory.",
        "O(1)",
    )
    .flags(F_ADMIN)
    .acl(A_CONN_ADMIN)
    .args(&[ON_OFF]),
    cmd(
        "client|no-touch",
        3,
        CONNECTION,
        "7.2.0",
        Access::Connection,
        on_off,
    )
    .doc(
        "Sets whether this connection's commands update the last access time of keys.",
        "O(1)",
    )
    .flags(F_NOSCRIPT)
    .acl(A_CONN_SLOW)
    .args(&[ON_OFF]),
    help(
        "client|help",
        CONNECTION,
        Access::Connection,
        A_CONN_SLOW,
        |_| Ok(client(ClientCmd::Help)),
    )
    // Words after HELP are ignored.
    .parser_checks_arity(),
];

/// `QUIT`: close this connection.
#[derive(Debug, PartialEq)]
pub struct Quit;

impl ConnectionCommand for Quit {
    fn run(self: Box<Self>, _conn: &mut Conn) -> ConnReply {
        ConnReply::Now(Frame::ok(), After::Close)
    }
}

/// `RESET`: the connection back to its initial state.
#[derive(Debug, PartialEq)]
pub struct Reset;

impl ConnectionCommand for Reset {
    fn run(self: Box<Self>, conn: &mut Conn) -> ConnReply {
        conn.proto = Proto::V2;
        conn.client.set_proto(2);
        conn.client.set_name(b"");
        conn.multi = None;
        conn.multi_failed = false;
        // As Redis: back to the default user if it needs no password,
        // else unauthenticated.
        conn.user = conn.api.acl.initial();
        conn.client.set_user(crate::acl::DEFAULT_USER);
        Frame::Simple("RESET".into()).into()
    }
}

/// `SELECT index`
#[derive(Debug, PartialEq)]
pub struct Select(pub i64);

impl ConnectionCommand for Select {
    fn run(self: Box<Self>, _conn: &mut Conn) -> ConnReply {
        match self.0 {
            0 => Frame::ok(),
            _ => Frame::err("DB index is out of range"),
        }
        .into()
    }
}

/// `AUTH [user] password` (its `Debug` does not show the password).
#[derive(Debug, PartialEq)]
pub struct Auth(pub Credentials);

impl ConnectionCommand for Auth {
    fn run(self: Box<Self>, conn: &mut Conn) -> ConnReply {
        auth(conn, &self.0).into()
    }
}

/// Authenticates `conn` with `creds` (no user: the default user), as
/// Redis's AUTH does: a wrong pair leaves the connection as it was.
fn auth(conn: &mut Conn, creds: &Credentials) -> Frame {
    let acl = &conn.api.acl;
    let (user, password) = (creds.user.as_deref(), &creds.password);
    if user.is_none() && acl.default_is_open() {
        return Frame::err(
            "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    }
    // An empty user name is the default user (`redis-cli` sends one
    // for `redis://:pw@host`).
    let name = user
        .filter(|u| !u.is_empty())
        .unwrap_or(crate::acl::DEFAULT_USER.as_bytes());
    match acl.authenticate(name, password) {
        Some(u) => {
            conn.client.set_user(&u.name);
            conn.user = Some(u);
            Frame::ok()
        }
        None => {
            Frame::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
        }
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]` (its `Debug` does not
/// show the password).
#[derive(Debug, PartialEq)]
pub struct Hello {
    /// 2 or 3.
    pub proto: Option<i64>,
    /// Credentials (always with a user).
    pub auth: Option<Credentials>,
    /// A connection name.
    pub setname: Option<Vec<u8>>,
}

fn parse_hello(c: &Call) -> Result<Action, String> {
    let Some((first, mut opts)) = c.args.split_first() else {
        return Ok(Action::connection(Hello {
            proto: None,
            auth: None,
            setname: None,
        }));
    };
    let proto = int(first).map_err(|_| "Protocol version is not an integer or out of range")?;
    let mut auth = None;
    let mut setname = None;
    while let Some((word, more)) = opts.split_first() {
        match upper(word).as_str() {
            "AUTH" if more.len() >= 2 => {
                auth = Some(Credentials {
                    user: Some(more[0].clone()),
                    password: more[1].clone(),
                });
                opts = &more[2..];
            }
            "SETNAME" if !more.is_empty() => {
                setname = Some(more[0].clone());
                opts = &more[1..];
            }
            _ => {
                return Err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(word)
                ));
            }
        }
    }
    Ok(Action::connection(Hello {
        proto: Some(proto),
        auth,
        setname,
    }))
}

impl ConnectionCommand for Hello {
    fn run(self: Box<Self>, conn: &mut Conn) -> ConnReply {
        let wanted = match self.proto {
            None => conn.proto,
            Some(2) => Proto::V2,
            Some(3) => Proto::V3,
            Some(_) => return Frame::Error("NOPROTO unsupported protocol version".into()).into(),
        };
        if let Some(creds) = &self.auth {
            let r = auth(conn, creds);
            if matches!(r, Frame::Error(_)) {
                return r.into();
            }
        } else if conn.user.is_none() {
            return Frame::Error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into(),
            )
            .into();
        }
        if let Some(name) = &self.setname {
            if let Err(e) = valid_name(name) {
                return Frame::err(e).into();
            }
            conn.client.set_name(name);
        }
        conn.proto = wanted;
        let v = if wanted == Proto::V3 { 3 } else { 2 };
        conn.client.set_proto(v);
        Frame::map([
            ("server", Frame::bulk("redis")),
            ("version", Frame::bulk(REDIS_VERSION)),
            ("proto", Frame::Integer(i64::from(v))),
            ("id", Frame::Integer(conn.client.id as i64)),
            ("mode", Frame::bulk("cluster")),
            ("role", Frame::bulk("master")),
            ("modules", Frame::Array(Vec::new())),
        ])
        .into()
    }
}

/// A connection name may not hold spaces or control characters.
fn valid_name(name: &[u8]) -> Result<(), String> {
    if name.iter().any(|&b| b <= b' ' || b > b'~') {
        Err("Client names cannot contain spaces, newlines or special characters.".into())
    } else {
        Ok(())
    }
}

/// `CLIENT` sub-commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCmd {
    /// `CLIENT ID`
    Id,
    /// `CLIENT GETNAME`
    GetName,
    /// `CLIENT SETNAME name`
    SetName(Vec<u8>),
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`
    SetInfo(String, Vec<u8>),
    /// `CLIENT LIST [TYPE normal|...] [ID id...]`
    List {
        /// Only these ids.
        ids: Vec<u64>,
    },
    /// `CLIENT INFO`
    Info,
    /// `CLIENT KILL ip:port` or `CLIENT KILL [ID id] [ADDR a] [LADDR a] [SKIPME yes|no]`
    Kill(KillFilter),
    /// `CLIENT NO-EVICT`, `NO-TOUCH`: accepted, nothing to change.
    Accept,
    /// `CLIENT HELP`
    Help,
}

fn client(c: ClientCmd) -> Action {
    Action::connection(c)
}

fn on_off(c: &Call) -> Result<Action, String> {
    match upper(&c.args[0]).as_str() {
        "ON" | "OFF" => Ok(client(ClientCmd::Accept)),
        _ => Err(SYNTAX.into()),
    }
}

fn parse_client_list(c: &Call) -> Result<Action, String> {
    let args = c.args;
    let mut ids = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match upper(&args[i]).as_str() {
            "TYPE" if i + 1 < args.len() => i += 2,
            "ID" => {
                i += 1;
                while i < args.len() {
                    let id = int(&args[i]).map_err(|_| "Invalid client ID".to_string())?;
                    ids.push(u64::try_from(id).map_err(|_| "Invalid client ID")?);
                    i += 1;
                }
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    Ok(client(ClientCmd::List { ids }))
}

impl ConnectionCommand for ClientCmd {
    fn run(self: Box<Self>, conn: &mut Conn) -> ConnReply {
        let clients = &conn.api.clients;
        match *self {
            ClientCmd::Id => Frame::Integer(conn.client.id as i64),
            ClientCmd::GetName => conn.client.name().map_or(Frame::Null, Frame::bulk),
            ClientCmd::SetName(name) => {
                conn.client.set_name(&name);
                Frame::ok()
            }
            ClientCmd::SetInfo(attr, value) => {
                conn.client.set_lib(&attr, &value);
                Frame::ok()
            }
            ClientCmd::List { ids } => {
                Frame::Verbatim("txt".into(), clients.list(&ids).into_bytes())
            }
            ClientCmd::Info => {
                Frame::Verbatim("txt".into(), (conn.client.line() + "\n").into_bytes())
            }
            ClientCmd::Kill(filter) => {
                let n = clients.kill(&filter, conn.client.id);
                match (filter.legacy, n) {
                    (true, 0) => Frame::err("No such client"),
                    (true, _) => Frame::ok(),
                    (false, n) => Frame::Integer(n as i64),
                }
            }
            ClientCmd::Accept => Frame::ok(),
            ClientCmd::Help => {
                crate::api::catalog::subcommand_help(b"client").unwrap_or(Frame::Array(Vec::new()))
            }
        }
        .into()
    }
}

/// Which connections `CLIENT KILL` closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillFilter {
    /// This connection id.
    pub id: Option<u64>,
    /// This peer address (`ip:port`).
    pub addr: Option<String>,
    /// This local address.
    pub laddr: Option<String>,
    /// Skip the calling connection (default yes, in the new form).
    pub skipme: bool,
    /// The old form (`CLIENT KILL addr`): answers `+OK` or an error, not a count.
    pub legacy: bool,
    /// Only connections authenticated as this user (`USER`).
    pub user: Option<String>,
    /// `TYPE` named something no connection here is (`pubsub`,
    /// `replica`): nothing matches.
    pub matches_none: bool,
    /// Only connections older than this many seconds (`MAXAGE`).
    pub older_than_secs: Option<u64>,
}

fn parse_kill(args: &[Vec<u8>]) -> Result<KillFilter, String> {
    if let [addr] = args {
        return Ok(KillFilter {
            addr: Some(text(addr, "address")?),
            legacy: true,
            ..KillFilter::default()
        });
    }
    if args.is_empty() || args.len() % 2 != 0 {
        return Err(SYNTAX.into());
    }
    let mut f = KillFilter {
        skipme: true,
        ..KillFilter::default()
    };
    for pair in args.chunks(2) {
        match upper(&pair[0]).as_str() {
            "ID" => {
                let id = int(&pair[1]).map_err(|_| "client-id should be greater than 0")?;
                f.id = Some(u64::try_from(id).map_err(|_| "client-id should be greater than 0")?);
            }
            "ADDR" => f.addr = Some(text(&pair[1], "address")?),
            "LADDR" => f.laddr = Some(text(&pair[1], "address")?),
            "SKIPME" => {
                f.skipme = match upper(&pair[1]).as_str() {
                    "YES" => true,
                    "NO" => false,
                    _ => return Err(SYNTAX.into()),
                }
            }
            // Every connection here is a normal client of user `default`.
            "TYPE" => match upper(&pair[1]).as_str() {
                "NORMAL" => {}
                "MASTER" | "REPLICA" | "SLAVE" | "PUBSUB" => f.matches_none = true,
                other => {
                    return Err(format!(
                        "Unknown client type '{}'",
                        other.to_ascii_lowercase()
                    ));
                }
            },
            "USER" => f.user = Some(String::from_utf8_lossy(&pair[1]).into_owned()),
            "MAXAGE" => {
                let age = int(&pair[1])?;
                f.older_than_secs = Some(u64::try_from(age).unwrap_or(0));
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    Ok(f)
}
