//! Client users and their rights, as Redis's ACL users: the
//! `NAME:PASSWORD:RIGHTS` specs a node is started with (`--user`,
//! `--users-file`, `DISTRO_DB_USERS`), the node's table of users ([`Acl`]),
//! `AUTH`'s check, and the `ACL LIST` lines. Pure: no I/O but reading a
//! users file.
//!
//! A user has one of three rights ([`Rights`]): `read` runs the commands the
//! command table declares [`Access::Connection`] or [`Access::Read`],
//! `readwrite` adds [`Access::Write`], `admin` adds [`Access::Admin`] (KILL,
//! SHUTDOWN, FAULT, LEAVE, REMOVE, CONFIG, CLIENT KILL, ...). A session keeps
//! its user's [`User::most`] and compares a command's declared access with
//! it: one comparison of two bytes per command.
//!
//! The `default` user is what Redis's is: with `--password` it has that
//! password and every right (Redis's `requirepass`); with neither a password
//! nor users it has no password (every connection is it from the start, as
//! in Redis); with users but no `--password` it is disabled, and a
//! connection must `AUTH` as one of the users. A spec may also name
//! `default` itself, to give it a password and other rights.
//!
//! Passwords are kept as their SHA-256 (what `ACL LIST` shows, as Redis
//! does), compared in constant time, and never printed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::api::commands::Access;
use crate::config::Secret;

/// The name of the user a password alone (`AUTH password`) is for.
pub const DEFAULT_USER: &str = "default";

/// The environment variable nodes read more user specs from (separated by
/// white space).
pub const USERS_ENV: &str = "DISTRO_DB_USERS";

/// What a client authenticates with (`AUTH [user] password`, `HELLO ...
/// AUTH user password`): a user (none: the default user) and a password.
/// Its `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user; `None` is the default user (`AUTH password`).
    pub user: Option<Vec<u8>>,
    /// The password.
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.user.as_deref().map(String::from_utf8_lossy);
        write!(f, "Credentials({user:?}, ..)")
    }
}

/// What a user may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rights {
    /// Connection commands and reads (keys, reports on the node and cluster).
    Read,
    /// And writes.
    ReadWrite,
    /// Everything: also stopping nodes, layout changes, fault injection,
    /// configuration, other clients' connections.
    Admin,
}

impl Rights {
    /// The most a command may need for this user to run it.
    pub fn most(self) -> Access {
        match self {
            Rights::Read => Access::Read,
            Rights::ReadWrite => Access::Write,
            Rights::Admin => Access::Admin,
        }
    }

    /// The name in a user spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Rights::Read => "read",
            Rights::ReadWrite => "readwrite",
            Rights::Admin => "admin",
        }
    }

    /// Redis's command rules closest to these rights, as `ACL LIST` prints
    /// them (distro-db's connection and transaction commands are open to
    /// every user).
    pub fn redis_rules(self) -> &'static str {
        match self {
            Rights::Read => "-@all +@read +@connection +@transaction",
            Rights::ReadWrite => "-@all +@read +@write +@connection +@transaction",
            Rights::Admin => "+@all",
        }
    }
}

impl std::str::FromStr for Rights {
    type Err = String;
    fn from_str(s: &str) -> Result<Rights, String> {
        match s.to_ascii_lowercase().as_str() {
            "read" => Ok(Rights::Read),
            "readwrite" => Ok(Rights::ReadWrite),
            "admin" => Ok(Rights::Admin),
            _ => Err(format!(
                "unknown rights '{s}' (use read, readwrite or admin)"
            )),
        }
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user as configured (its `Debug` does not show the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The name clients give to `AUTH`.
    pub name: String,
    /// The password.
    pub password: Secret,
    /// What the user may run.
    pub rights: Rights,
}

impl std::str::FromStr for UserSpec {
    type Err = String;

    /// `NAME:PASSWORD:RIGHTS`: the name up to the first colon, the rights
    /// after the last one, the password (which may hold colons) between.
    /// Errors name the user but never show the password.
    fn from_str(spec: &str) -> Result<UserSpec, String> {
        let shape = "a user is NAME:PASSWORD:RIGHTS (rights: read, readwrite or admin)";
        let (Some((name, rest)), Some((_, rights))) = (spec.split_once(':'), spec.rsplit_once(':'))
        else {
            return Err(shape.into());
        };
        let Some((password, _)) = rest.rsplit_once(':') else {
            return Err(shape.into());
        };
        if name.is_empty() {
            return Err(format!("{shape}: the name is empty"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '#' | '~' | '&' | '>' | '<'))
        {
            return Err(format!(
                "user '{}': the name may not hold {c:?} (printable ASCII, no spaces, and not # ~ & < >)",
                name.escape_debug()
            ));
        }
        if password.is_empty() {
            return Err(format!("user '{name}': the password is empty"));
        }
        // The error does not echo the rights: a spec written in the wrong
        // order (NAME:RIGHTS:PASSWORD) would show the password.
        let rights = rights.parse().map_err(|_| {
            format!(
                "user '{name}': the rights (after the last ':') must be read, readwrite or admin"
            )
        })?;
        Ok(UserSpec {
            name: name.to_string(),
            password: Secret::new(password),
            rights,
        })
    }
}

/// The user specs of a users file: one `NAME:PASSWORD:RIGHTS` per line;
/// blank lines and lines starting with `#` are skipped, and white space
/// around a spec is ignored. Errors name the line.
pub fn parse_users_file(text: &str) -> Result<Vec<UserSpec>, String> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        users.push(line.parse().map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(users)
}

/// Every user a node is given: the `--user` specs, then those of
/// `--users-file`, then those of [`USERS_ENV`] (`env`: specs separated by
/// white space). A name given twice is an error (checked by [`Acl::new`]).
pub fn gather_users(
    flags: &[String],
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Vec<UserSpec>, String> {
    let mut users = Vec::new();
    for spec in flags {
        users.push(spec.parse().map_err(|e| format!("--user: {e}"))?);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?;
        let more = parse_users_file(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        users.extend(more);
    }
    if let Some(env) = env {
        for spec in env.split_whitespace() {
            users.push(spec.parse().map_err(|e| format!("{USERS_ENV}: {e}"))?);
        }
    }
    Ok(users)
}

/// SHA-256 of a password.
fn hash(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

/// Compares two hashes in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// What a user authenticates with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Password {
    /// Any password (`nopass`: the default user of a node without passwords).
    Any,
    /// The password whose SHA-256 this is.
    Hash([u8; 32]),
    /// None: the user cannot authenticate (the default user when the node
    /// has users but no `--password`).
    Disabled,
}

/// One user, as sessions hold it.
pub struct User {
    /// The name.
    pub name: String,
    /// The most a command may need for this user to run it: the session
    /// refuses a command whose declared access is above it.
    pub most: Access,
    rights: Option<Rights>,
    password: Password,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User({}, {:?})", self.name, self.rights)
    }
}

impl User {
    /// Whether this user may run a command that needs `access`.
    #[inline]
    pub fn may(&self, access: Access) -> bool {
        access <= self.most
    }

    /// The user's rights (`None`: a disabled user, which has none).
    pub fn rights(&self) -> Option<Rights> {
        self.rights
    }

    /// The user as one `ACL LIST` line, in Redis's format (the password as
    /// its SHA-256, as Redis shows it).
    pub fn acl_line(&self) -> String {
        let state = match self.password {
            Password::Any => "on nopass".to_string(),
            Password::Hash(h) => {
                let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
                format!("on #{hex}")
            }
            Password::Disabled => "off".to_string(),
        };
        let rules = self.rights.map_or("-@all", Rights::redis_rules);
        format!("user {} {state} ~* &* {rules}", self.name)
    }
}

/// The users of a node.
#[derive(Debug)]
pub struct Acl {
    /// Sorted by name (as Redis lists them).
    users: Vec<Arc<User>>,
    /// The default user, which a connection is before any `AUTH` when it
    /// has no password.
    default: Arc<User>,
}

impl Default for Acl {
    /// No password and no users: everyone is the default user, with every
    /// right.
    fn default() -> Acl {
        Acl::new(None, &[]).unwrap_or_else(|_| unreachable!("no users cannot clash"))
    }
}

impl Acl {
    /// The users of a node started with `password` (`--password`: the
    /// default user's) and `users`. Refuses a name given twice (`default`
    /// given as a user and by `--password` too).
    pub fn new(password: Option<&Secret>, users: &[UserSpec]) -> Result<Acl, String> {
        let mut table: Vec<Arc<User>> = Vec::with_capacity(users.len() + 1);
        for spec in users {
            if table.iter().any(|u| u.name == spec.name) {
                return Err(format!("user '{}' is given twice", spec.name));
            }
            if spec.name == DEFAULT_USER && password.is_some() {
                return Err(format!(
                    "user '{DEFAULT_USER}' is given twice: by --password (DISTRO_DB_PASSWORD) and as a user"
                ));
            }
            table.push(Arc::new(User {
                name: spec.name.clone(),
                most: spec.rights.most(),
                rights: Some(spec.rights),
                password: Password::Hash(hash(spec.password.expose())),
            }));
        }
        if !table.iter().any(|u| u.name == DEFAULT_USER) {
            let (pw, rights) = match password {
                Some(p) => (Password::Hash(hash(p.expose())), Some(Rights::Admin)),
                None if users.is_empty() => (Password::Any, Some(Rights::Admin)),
                None => (Password::Disabled, None),
            };
            table.push(Arc::new(User {
                name: DEFAULT_USER.into(),
                // A disabled user never authenticates; it needs no rights.
                most: rights.map_or(Access::Connection, Rights::most),
                rights,
                password: pw,
            }));
        }
        table.sort_by(|a, b| a.name.cmp(&b.name));
        let default = table
            .iter()
            .find(|u| u.name == DEFAULT_USER)
            .cloned()
            .unwrap_or_else(|| unreachable!("the default user was added"));
        Ok(Acl {
            users: table,
            default,
        })
    }

    /// The user a new connection is before any `AUTH`: the default user
    /// when it needs no password, else none (every command but `AUTH`,
    /// `HELLO ... AUTH` and `QUIT` then answers `NOAUTH`).
    pub fn initial(&self) -> Option<Arc<User>> {
        (self.default.password == Password::Any).then(|| self.default.clone())
    }

    /// True when the default user needs no password (Redis's `nopass`):
    /// `AUTH password` is then an error rather than a wrong password.
    pub fn default_is_open(&self) -> bool {
        self.default.password == Password::Any
    }

    /// The user `name` if `password` is its password. Takes as long for an
    /// unknown or disabled user as for a wrong password.
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let given = hash(password);
        let user = self.users.iter().find(|u| u.name.as_bytes() == name);
        let ok = match user.map(|u| u.password) {
            Some(Password::Any) => true,
            Some(Password::Hash(h)) => same(&h, &given),
            Some(Password::Disabled) | None => {
                let _ = same(&[0; 32], &given);
                false
            }
        };
        user.filter(|_| ok).cloned()
    }

    /// The user named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<User>> {
        self.users.iter().find(|u| u.name.as_bytes() == name)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.iter()
    }

    /// `ACL LIST`: one line per user, by name.
    pub fn list(&self) -> Vec<String> {
        self.users.iter().map(|u| u.acl_line()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Result<UserSpec, String> {
        s.parse()
    }

    #[test]
    fn specs_parse() {
        let u = spec("alice:s3cret:read").unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.password, Secret::new("s3cret"));
        assert_eq!(u.rights, Rights::Read);
        assert_eq!(spec("bob:pw:READWRITE").unwrap().rights, Rights::ReadWrite);
        assert_eq!(spec("root:pw:admin").unwrap().rights, Rights::Admin);
        // The password may hold colons (and spaces): the name ends at the
        // first colon, the rights start after the last.
        let u = spec("carol:a:b c:d:admin").unwrap();
        assert_eq!(u.password, Secret::new("a:b c:d"));
        assert_eq!(u.rights, Rights::Admin);
    }

    #[test]
    fn malformed_specs_are_refused_without_showing_the_password() {
        for (bad, why) in [
            ("", "NAME:PASSWORD:RIGHTS"),
            ("alice", "NAME:PASSWORD:RIGHTS"),
            ("alice:topsecret", "NAME:PASSWORD:RIGHTS"),
            (":topsecret:read", "the name is empty"),
            ("alice::read", "the password is empty"),
            ("alice:topsecret:", "must be read, readwrite or admin"),
            (
                "alice:topsecret:superuser",
                "must be read, readwrite or admin",
            ),
            ("alice:read:topsecret", "must be read, readwrite or admin"),
            ("al ice:topsecret:read", "may not hold ' '"),
            ("al#ice:topsecret:read", "may not hold '#'"),
        ] {
            let e = spec(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(!e.contains("topsecret"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_debug_form_hides_passwords() {
        let u = spec("alice:topsecret:read").unwrap();
        assert!(!format!("{u:?}").contains("topsecret"));
        let acl = Acl::new(Some(&Secret::new("topsecret")), &[u]).unwrap();
        let shown = format!("{acl:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        // Parsed AUTH and HELLO commands, whose Debug an error may show.
        for line in [
            &["AUTH", "topsecret"][..],
            &["AUTH", "alice", "topsecret"],
            &["HELLO", "3", "AUTH", "alice", "topsecret"],
        ] {
            let words: Vec<Vec<u8>> = line.iter().map(|w| w.as_bytes().to_vec()).collect();
            let cmd = crate::api::commands::parse(&words).unwrap();
            let shown = format!("{cmd:?}");
            assert!(!shown.contains("topsecret"), "{shown}");
        }
    }

    #[test]
    fn files_and_the_environment() {
        let users = parse_users_file(
            "# who may do what\n\nalice:pw one:read\n  bob:pw2:readwrite  \n#carol:x:admin\n",
        )
        .unwrap();
        let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(users[0].password, Secret::new("pw one"));
        let e = parse_users_file("alice:pw:read\nbob:pw:root\n").unwrap_err();
        assert!(e.starts_with("line 2: user 'bob'"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, "bob:pw:readwrite\n").unwrap();
        let all = gather_users(
            &["alice:pw:read".into()],
            Some(&file),
            Some(" carol:pw:admin\n dave:pw:read "),
        )
        .unwrap();
        let names: Vec<_> = all.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol", "dave"]);
        let e = gather_users(&[], None, Some("carol:pw:boss")).unwrap_err();
        assert!(e.starts_with(USERS_ENV), "{e}");
        let e = gather_users(&["x".into()], None, None).unwrap_err();
        assert!(e.starts_with("--user"), "{e}");
        let e = gather_users(&[], Some(&dir.path().join("none")), None).unwrap_err();
        assert!(e.contains("cannot read the users file"), "{e}");
    }

    #[test]
    fn duplicates_are_refused() {
        let a = spec("alice:pw:read").unwrap();
        let a2 = spec("alice:other:admin").unwrap();
        let e = Acl::new(None, &[a.clone(), a2]).unwrap_err();
        assert!(e.contains("'alice' is given twice"), "{e}");
        let d = spec("default:pw:read").unwrap();
        let e = Acl::new(Some(&Secret::new("x")), std::slice::from_ref(&d)).unwrap_err();
        assert!(e.contains("--password"), "{e}");
        // Without --password the default user may be configured.
        let acl = Acl::new(None, &[a, d]).unwrap();
        assert!(acl.initial().is_none());
        let u = acl.authenticate(b"default", b"pw").unwrap();
        assert_eq!(u.rights(), Some(Rights::Read));
    }

    #[test]
    fn the_default_user_follows_redis() {
        // Nothing configured: everyone is `default`, with every right.
        let open = Acl::default();
        let u = open.initial().expect("authenticated from the start");
        assert_eq!((u.name.as_str(), u.most), ("default", Access::Admin));
        assert!(open.default_is_open());
        assert!(open.authenticate(b"default", b"anything").is_some());
        assert_eq!(open.list(), ["user default on nopass ~* &* +@all"]);

        // --password: the default user's, with every right.
        let pw = Acl::new(Some(&Secret::new("pw")), &[]).unwrap();
        assert!(pw.initial().is_none() && !pw.default_is_open());
        assert!(pw.authenticate(b"default", b"pw").is_some());
        assert!(pw.authenticate(b"default", b"pw ").is_none());
        assert!(pw.authenticate(b"default", b"").is_none());

        // Users without --password: the default user is disabled.
        let alice = spec("alice:apw:read").unwrap();
        let users = Acl::new(None, std::slice::from_ref(&alice)).unwrap();
        assert!(users.initial().is_none() && !users.default_is_open());
        assert!(users.authenticate(b"default", b"").is_none());
        assert!(users.authenticate(b"default", b"apw").is_none());
        assert!(users.authenticate(b"alice", b"apw").is_some());
        assert!(users.authenticate(b"alice", b"bpw").is_none());
        assert!(users.authenticate(b"bob", b"apw").is_none());
        assert!(users.authenticate(b"ALICE", b"apw").is_none());
        assert_eq!(
            users.list(),
            [
                format!(
                    "user alice on #{} ~* &* -@all +@read +@connection +@transaction",
                    hex(&hash(b"apw"))
                ),
                "user default off ~* &* -@all".to_string(),
            ]
        );
    }

    fn hex(h: &[u8; 32]) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn acl_list_shows_the_sha256_that_redis_shows() {
        // Redis 7.0.15 printed this hash for the password `apw`.
        assert_eq!(
            hex(&hash(b"apw")),
            "e528e908837a6f2c169a132a07f95107a5cc523f61d09d028c2fa799aeef4257"
        );
        let acl = Acl::new(
            Some(&Secret::new("dpw")),
            &[
                spec("bob:bpw:admin").unwrap(),
                spec("alice:apw:read").unwrap(),
                spec("carol:cpw:readwrite").unwrap(),
            ],
        )
        .unwrap();
        let lines = acl.list();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            "user alice on #e528e908837a6f2c169a132a07f95107a5cc523f61d09d028c2fa799aeef4257 ~* &* -@all +@read +@connection +@transaction"
        );
        assert!(lines[1].starts_with("user bob on #") && lines[1].ends_with(" ~* &* +@all"));
        assert!(lines[2].ends_with("-@all +@read +@write +@connection +@transaction"));
        assert_eq!(
            lines[3],
            "user default on #6e73de19be339f23d11536e634820a7952a76daddb1e20b59df06c00d298a83b ~* &* +@all"
        );
    }

    #[test]
    fn rights_map_to_the_command_table_access() {
        let most = |r: Rights| r.most();
        use Access::*;
        for (rights, allowed) in [
            (Rights::Read, &[Connection, Read][..]),
            (Rights::ReadWrite, &[Connection, Read, Write]),
            (Rights::Admin, &[Connection, Read, Write, Admin]),
        ] {
            for access in [Connection, Read, Write, Admin] {
                assert_eq!(
                    access <= most(rights),
                    allowed.contains(&access),
                    "{rights} {access:?}"
                );
            }
        }
    }
}
