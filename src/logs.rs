//! Where a process's logs go and in what shape: the `--log` filter
//! (tracing's env-filter syntax, also read from `RUST_LOG`), `--log-format
//! text|json`, and the writer (standard error or a file).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// The filter when neither `--log` nor `RUST_LOG` gives one.
pub const DEFAULT_FILTER: &str = "info,chitchat=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`,
    /// `span`...), for log shippers.
    Json,
}

/// The logging flags of a node.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or
    /// per-module directives (`info,distro_db::workers=debug`) [default:
    /// info,chitchat=warn].
    #[arg(long = "log", env = "RUST_LOG", value_name = "FILTER", value_parser = parse_filter)]
    pub filter: Option<String>,
    /// The shape of log lines: `text`, or `json` (one object a line, for
    /// log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// Checks a filter, keeping its text.
fn parse_filter(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("not a log filter ({e}); e.g. `info` or `warn,distro_db=debug`"))
}

/// Where logs go.
#[derive(Debug, Clone)]
pub enum LogTo {
    /// Standard error (coloured when it is a terminal and the format is text).
    Stderr,
    /// Appended to this file (its directory is made if missing).
    File(PathBuf),
}

/// Sets up tracing for this process: `args.filter` (else `RUST_LOG`, else
/// [`DEFAULT_FILTER`]) in `args.log_format`, written to `to`.
pub fn init(to: &LogTo, args: &LogArgs) -> anyhow::Result<()> {
    let filter = match &args.filter {
        Some(f) => EnvFilter::try_new(f).with_context(|| format!("bad log filter '{f}'"))?,
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        }
    };
    let (writer, ansi) = match to {
        LogTo::File(path) => {
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).ok();
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            (BoxMakeWriter::new(Arc::new(f)), false)
        }
        LogTo::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,distro_db::workers=debug").is_ok());
        let e = parse_filter("info,=[").unwrap_err();
        assert!(e.contains("not a log filter"), "{e}");
    }
}
