//! The node config file (`--config FILE`) and how it merges with flags and
//! the environment.
//!
//! The file is a TOML table whose keys are the long names of the
//! subcommand's own flags (`data-dir = "/var/lib/distro-db"`, `seed =
//! ["10.0.0.1:7000"]`, `fault-injection = true`). One rule decides every
//! setting: a value given on the command line wins, then one given through
//! the flag's environment variable (`DISTRO_DB_PASSWORD`, `RUST_LOG`, ...),
//! then the file's, then the flag's default. A file value that neither the
//! command line nor the environment gave is handed to the parser as if it
//! were typed (`--data-dir=/var/lib/distro-db`), so it goes through the same
//! checks as the flag. A flag given on the command line also silences the
//! file's value of a flag it conflicts with (`--cluster-secret` over the
//! file's `cluster-secret-file`).
//!
//! Unknown keys, keys that are not flags of this subcommand and values
//! that do not parse are errors naming the file and the key; nothing starts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// The flag that names the config file (added to the subcommands given to
/// [`parse`]).
pub const CONFIG_FLAG: &str = "config";

/// Why the command line (with its config file) was refused.
#[derive(Debug)]
pub enum Error {
    /// Refused by the command-line parser (including `--help` and
    /// `--version`, which clap reports as errors that exit 0).
    Clap(clap::Error),
    /// The config file is unreadable, not TOML, or has a bad key or value.
    File(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Clap(e) => write!(f, "{e}"),
            Error::File(e) => f.write_str(e),
        }
    }
}

impl Error {
    /// Prints the error (or the help) and exits: 2 for a usage error, as
    /// clap does.
    pub fn exit(self) -> ! {
        match self {
            Error::Clap(e) => e.exit(),
            Error::File(e) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
        }
    }
}

/// Parses the process's command line into `T`, adding `--config FILE` to
/// the subcommands named in `with_config` and merging that file in; prints
/// the error and exits on failure, as [`clap::Parser::parse`] does.
pub fn parse<T: clap::Parser>(with_config: &[&str]) -> T {
    match parse_from(std::env::args_os().collect(), with_config) {
        Ok(t) => t,
        Err(e) => e.exit(),
    }
}

/// [`parse`] of a given command line (`argv[0]` is the program name).
pub fn parse_from<T: clap::Parser>(argv: Vec<OsString>, with_config: &[&str]) -> Result<T, Error> {
    let cmd = with_config_flag(T::command(), with_config);
    let matches = config_matches(&cmd, argv)?;
    T::from_arg_matches(&matches).map_err(Error::Clap)
}

/// Adds `--config FILE` to each named subcommand.
fn with_config_flag(mut cmd: Command, names: &[&str]) -> Command {
    for name in names {
        cmd = cmd.mut_subcommand(name, |sub| {
            sub.arg(
                Arg::new(CONFIG_FLAG)
                    .long(CONFIG_FLAG)
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .display_order(0)
                    .help(
                        "Read settings from this TOML file: its keys are the long flags below \
                         (`data-dir = \"/var/lib/distro-db\"`). A flag on the command line wins \
                         over its environment variable, which wins over the file, which wins \
                         over the default (docs/distro-db.example.toml).",
                    ),
            )
        });
    }
    cmd
}

/// The command with no argument required, so that a first parse succeeds
/// when the config file is to provide a required flag (`db node`'s
/// `--listen`); the final parse uses the real command.
fn relaxed(cmd: &Command) -> Command {
    cmd.clone()
        .mut_subcommands(|sub| sub.mut_args(|a| a.required(false)))
}

/// Parses `argv` with `cmd`, merging the config file if one is named.
fn config_matches(cmd: &Command, argv: Vec<OsString>) -> Result<ArgMatches, Error> {
    let strict = |argv: &[OsString]| cmd.clone().try_get_matches_from(argv).map_err(Error::Clap);
    // Without a file, one parse: building the relaxed copies of the whole
    // command tree costs every node hundreds of KiB of heap it keeps.
    let prefix = format!("--{CONFIG_FLAG}");
    if !argv.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == prefix || a.starts_with(&format!("{prefix}=")))
    }) {
        return strict(&argv);
    }
    let loose = relaxed(cmd);
    let Ok(first) = loose.clone().try_get_matches_from(&argv) else {
        // Help, version and usage errors come from the real command.
        return strict(&argv);
    };
    let (names, leaf, leaf_matches) = leaf(cmd, &first);
    let Some(file) = leaf_matches
        .try_get_one::<PathBuf>(CONFIG_FLAG)
        .ok()
        .flatten()
    else {
        return strict(&argv);
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::File(format!("cannot read config file {}: {e}", file.display())))?;
    let settings = file_settings(file, &text, leaf, leaf_matches, &names)?;
    let at = after_subcommand(&argv, &names);
    let merged = |extra: &[OsString]| {
        let mut v = argv.clone();
        v.splice(at..at, extra.iter().cloned());
        v
    };
    let all: Vec<OsString> = settings.iter().flat_map(|s| s.args.clone()).collect();
    match cmd.clone().try_get_matches_from(merged(&all)) {
        Ok(m) => Ok(m),
        Err(e) => {
            // Blame the first key whose value alone is refused.
            for s in &settings {
                if let Err(one) = loose.clone().try_get_matches_from(merged(&s.args)) {
                    return Err(Error::File(format!(
                        "config file {}: `{}`: {}",
                        file.display(),
                        s.key,
                        first_line(&one)
                    )));
                }
            }
            match e.kind() {
                clap::error::ErrorKind::MissingRequiredArgument => Err(Error::Clap(e)),
                _ => Err(Error::File(format!(
                    "config file {}: {}",
                    file.display(),
                    first_line(&e)
                ))),
            }
        }
    }
}

/// The first line of a clap error, without its `error: `.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// The innermost subcommand: the names leading to it, its definition and
/// its matches.
fn leaf<'a>(
    cmd: &'a Command,
    matches: &'a ArgMatches,
) -> (Vec<String>, &'a Command, &'a ArgMatches) {
    let (mut c, mut m) = (cmd, matches);
    let mut names = Vec::new();
    while let Some((name, sub)) = m.subcommand() {
        let Some(sc) = c.find_subcommand(name) else {
            break;
        };
        names.push(name.to_string());
        c = sc;
        m = sub;
    }
    (names, c, m)
}

/// The index in `argv` just after the innermost subcommand's name (where
/// the file's flags go, before any `--`).
fn after_subcommand(argv: &[OsString], names: &[String]) -> usize {
    let mut at = 1;
    for name in names {
        match argv[at.min(argv.len())..]
            .iter()
            .position(|a| a.to_str() == Some(name.as_str()))
        {
            Some(i) => at += i + 1,
            None => return argv.len(),
        }
    }
    at.min(argv.len())
}

/// One key of the file, as the flags it stands for.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    key: String,
    args: Vec<OsString>,
}

/// True when the value of `id` came from the command line or the environment.
fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The file's settings that neither the command line nor the environment
/// overrides, as flags; an error for an unknown key or a value of the
/// wrong shape.
fn file_settings(
    file: &Path,
    text: &str,
    cmd: &Command,
    matches: &ArgMatches,
    names: &[String],
) -> Result<Vec<Setting>, Error> {
    let here = |what: String| Error::File(format!("config file {}: {what}", file.display()));
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| here(e.to_string().trim_end().to_string()))?;
    let usage = format!("db {}", names.join(" "));
    let mut settings = Vec::new();
    for (key, value) in &table {
        let Some(arg) = flag(cmd, key) else {
            let hint = match flag(cmd, &key.replace('_', "-")) {
                Some(_) => format!(" (did you mean `{}`?)", key.replace('_', "-")),
                None => String::new(),
            };
            return Err(here(format!(
                "unknown key `{key}`{hint}: the keys are the long flags of `{usage}` (see {usage} --help)"
            )));
        };
        let id = arg.get_id().as_str();
        let overridden = explicit(matches, id)
            || cmd.get_arguments().any(|other| {
                explicit(matches, other.get_id().as_str())
                    && (cmd
                        .get_arg_conflicts_with(other)
                        .iter()
                        .any(|c| c.get_id() == id)
                        || cmd
                            .get_arg_conflicts_with(arg)
                            .iter()
                            .any(|c| c.get_id() == other.get_id()))
            });
        let args = flag_args(key, arg, value).map_err(|e| here(format!("`{key}`: {e}")))?;
        if !overridden {
            settings.push(Setting {
                key: key.clone(),
                args,
            });
        }
    }
    Ok(settings)
}

/// The flag a key names: a long flag of the subcommand other than
/// `--config`, `--help` and `--version`.
fn flag<'a>(cmd: &'a Command, key: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| {
        !a.is_positional()
            && a.get_long() == Some(key)
            && !matches!(a.get_id().as_str(), CONFIG_FLAG | "help" | "version")
    })
}

/// The command-line form of `key = value`.
fn flag_args(key: &str, arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let with = |v: String| OsString::from(format!("--{key}={v}"));
    match arg.get_action() {
        ArgAction::SetTrue => match value {
            toml::Value::Boolean(true) => Ok(vec![OsString::from(format!("--{key}"))]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!("expected true or false, got {}", shown(other))),
        },
        ArgAction::Append => match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|v| scalar(v).map(with))
                .collect::<Result<_, _>>(),
            other => Ok(vec![with(scalar(other)?)]),
        },
        ArgAction::Set => Ok(vec![with(scalar(value)?)]),
        _ => Err("cannot be set in a config file".into()),
    }
}

/// A value as an error message shows it.
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("\"{s}\""),
        other => scalar(other).unwrap_or_else(|_| format!("a {}", other.type_str())),
    }
}

/// A string, number or boolean as the text a flag would take.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(_) => Err("expected one value, got a list".into()),
        other => Err(format!(
            "expected a string, a number or a boolean, got {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A stand-in for the `db` command line with the shapes of flag it has.
    #[derive(Parser, Debug)]
    #[command(name = "db")]
    struct Cli {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Node {
            #[arg(long)]
            listen: String,
            #[arg(long, default_value_t = 2000)]
            timeout_ms: u64,
            #[arg(long = "seed", value_delimiter = ',')]
            seeds: Vec<String>,
            #[arg(long)]
            fault_injection: bool,
            #[arg(long, conflicts_with = "secret_file")]
            secret: Option<String>,
            #[arg(long)]
            secret_file: Option<String>,
            #[arg(long, default_value_t = 0.1)]
            chance: f64,
            #[arg(long)]
            log_file: Option<String>,
        },
        Other {
            #[arg(long)]
            x: Option<u8>,
        },
    }

    /// Parses `args` after writing `toml` to a file named by `--config`.
    fn parse(toml: &str, args: &[&str]) -> Result<Sub, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, toml).unwrap();
        let mut argv: Vec<OsString> = vec!["db".into(), "node".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.push("--config".into());
        argv.push(path.into());
        parse_from::<Cli>(argv, &["node"])
            .map(|c| c.cmd)
            .map_err(|e| match e {
                Error::Clap(e) => e.render().to_string(),
                Error::File(e) => e,
            })
    }

    #[test]
    fn the_file_fills_in_what_the_command_line_leaves_out() {
        let toml = r#"
            listen = "10.0.0.1:7000"
            timeout-ms = 1500
            seed = ["10.0.0.2:7000", "10.0.0.3:7000"]
            fault-injection = true
            chance = 0.5
            log-file = "-"
        "#;
        let Sub::Node {
            listen,
            timeout_ms,
            seeds,
            fault_injection,
            chance,
            log_file,
            ..
        } = parse(toml, &[]).unwrap()
        else {
            panic!("node");
        };
        assert_eq!(listen, "10.0.0.1:7000");
        assert_eq!(timeout_ms, 1500);
        assert_eq!(seeds, ["10.0.0.2:7000", "10.0.0.3:7000"]);
        assert!(fault_injection);
        assert_eq!(chance, 0.5);
        assert_eq!(log_file.as_deref(), Some("-"));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let toml = "listen = \"10.0.0.1:7000\"\nseed = [\"a:1\", \"b:2\"]\nsecret-file = \"/s\"\n";
        let Sub::Node {
            listen,
            timeout_ms,
            seeds,
            secret,
            secret_file,
            fault_injection,
            ..
        } = parse(
            toml,
            &["--listen", "127.0.0.1:1", "--seed", "c:3", "--secret", "x"],
        )
        .unwrap()
        else {
            panic!("node");
        };
        assert_eq!(listen, "127.0.0.1:1");
        assert_eq!(timeout_ms, 2000);
        // A list flag given replaces the file's list; it does not add to it.
        assert_eq!(seeds, ["c:3"]);
        // A flag silences the file's value of a flag it conflicts with.
        assert_eq!((secret.as_deref(), secret_file), (Some("x"), None));
        assert!(!fault_injection);
    }

    #[test]
    fn bad_files_name_the_file_and_the_key() {
        let e = parse("listen = \"a:1\"\ndata_dir = \"/x\"\n", &[]).unwrap_err();
        assert!(e.contains("node.toml: unknown key `data_dir`"), "{e}");
        assert!(e.contains("see db node --help"), "{e}");
        let e = parse("listen = \"a:1\"\nlog_file = \"/x\"\n", &[]).unwrap_err();
        assert!(e.contains("(did you mean `log-file`?)"), "{e}");
        let e = parse("listen = \"a:1\"\ntimeout-ms = \"soon\"\n", &[]).unwrap_err();
        assert!(
            e.contains("node.toml: `timeout-ms`: invalid value 'soon'"),
            "{e}"
        );
        let e = parse("listen = \"a:1\"\nfault-injection = \"yes\"\n", &[]).unwrap_err();
        assert!(
            e.contains("`fault-injection`: expected true or false"),
            "{e}"
        );
        let e = parse("listen = [\"a:1\"]\n", &[]).unwrap_err();
        assert!(
            e.contains("`listen`: expected one value, got a list"),
            "{e}"
        );
        let e = parse("listen = \"a:1\"\n[section]\nx = 1\n", &[]).unwrap_err();
        assert!(e.contains("unknown key `section`"), "{e}");
        let e = parse("listen = \n", &[]).unwrap_err();
        assert!(e.contains("node.toml: TOML parse error at line 1"), "{e}");
        // Keys of another subcommand, and the positional or built-in ones, are unknown.
        for key in ["x", "help", "config"] {
            let e = parse(&format!("listen = \"a:1\"\n{key} = 1\n"), &[]).unwrap_err();
            assert!(e.contains(&format!("unknown key `{key}`")), "{e}");
        }
        // Two values that conflict, both from the file.
        let e = parse(
            "listen = \"a:1\"\nsecret = \"s\"\nsecret-file = \"f\"\n",
            &[],
        )
        .unwrap_err();
        assert!(e.contains("node.toml: the argument '--secret"), "{e}");
        // A required flag missing from both is the parser's usual error.
        let e = parse("timeout-ms = 1\n", &[]).unwrap_err();
        assert!(e.contains("--listen"), "{e}");
    }

    #[test]
    fn without_a_file_parsing_is_unchanged() {
        let argv: Vec<OsString> = ["db", "node", "--listen", "x:1"].map(OsString::from).into();
        let Sub::Node { listen, .. } = parse_from::<Cli>(argv, &["node"]).unwrap().cmd else {
            panic!("node");
        };
        assert_eq!(listen, "x:1");
        let argv: Vec<OsString> = ["db", "node"].map(OsString::from).into();
        assert!(matches!(
            parse_from::<Cli>(argv, &["node"]),
            Err(Error::Clap(e)) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument
        ));
        let argv: Vec<OsString> = ["db", "other", "--config", "f"].map(OsString::from).into();
        assert!(parse_from::<Cli>(argv, &["node"]).is_err());
    }

    #[test]
    fn file_flags_go_right_after_the_subcommand() {
        let argv: Vec<OsString> = ["db", "local", "--nodes", "3", "--", "local"]
            .map(OsString::from)
            .into();
        assert_eq!(after_subcommand(&argv, &["local".into()]), 2);
        assert_eq!(after_subcommand(&argv, &[]), 1);
    }
}
