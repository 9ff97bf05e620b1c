//! `db-bench`: the command line of the load generator (the library next to
//! it owns the generator). Prints the report on standard output, and as JSON
//! to `--json FILE`; exits 1 when the options are refused or no request
//! succeeded.

use anyhow::Context as _;
use clap::Parser;
use db_bench::BenchArgs;

/// Load a running distro-db cluster (or Redis, or etcd) and report throughput and latency.
///
/// A closed loop: each of --connections keeps exactly --pipeline requests in
/// flight. Prints a table on standard output (and JSON with --json FILE),
/// a progress line on standard error while it runs (when that is a terminal).
/// Examples: `db-bench --target 127.0.0.1:55551,127.0.0.1:55552 --workload mix`;
/// `db-bench --protocol etcd --target 127.0.0.1:2379 --workload get`;
/// `db-bench --target 127.0.0.1:6379 --wait-aof 1,1` (each SET acknowledged
/// once a replica has it in its fsynced AOF).
#[derive(Parser, Debug)]
#[command(name = "db-bench", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() {
    let cli = Cli::parse();
    match run(&cli.args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &BenchArgs) -> anyhow::Result<()> {
    distro_db::logs::init(
        &distro_db::logs::LogTo::Stderr,
        &distro_db::logs::LogArgs::default(),
    )?;
    let config = args.validate()?;
    let report = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(db_bench::run(config))?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json() + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.ok == 0 {
        anyhow::bail!("no request succeeded");
    }
    Ok(())
}
