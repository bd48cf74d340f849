//! `shoal`: the node daemon, the Docker-like CLI, the debug CLI and the lab,
//! in one binary.

mod agent;
mod commands;
mod lab;
mod output;
mod table;

use clap::Parser;

fn main() {
    let cli = commands::Cli::parse();
    // The daemon logs what it does; CLI commands only warnings.
    let default = if matches!(cli.cmd, commands::Cmd::Daemon(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = commands::run(cli) {
        // One line naming the problem, as operators expect from a CLI.
        eprintln!("shoal: {e:#}");
        std::process::exit(1);
    }
}
