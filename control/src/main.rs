//! `shoal`: the node daemon, the Docker-like CLI, the debug CLI and the lab,
//! in one binary.

mod agent;
mod api;
mod asks;
mod clock;
mod commands;
mod control_port;
mod gossip;
mod lab;
mod metrics;
mod orchestrator;
mod output;
mod pki;
mod raft;
mod stack;
mod wire;

use clap::Parser;

fn main() {
    let cli = match commands::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                e.exit();
            }
            // One line naming the problem (clap adds usage and a hint).
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "shoal: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    };
    // The daemon logs what it does; CLI commands only warnings.
    let default = if matches!(cli.cmd, commands::Cmd::Daemon(_)) {
        "info"
    } else {
        "warn"
    };
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    // No colour codes in journald or log files.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .with(gossip::transport::MalformedCounter)
            .init();
    }
    if let Err(e) = commands::run(cli) {
        // One line naming the problem, as operators expect from a CLI.
        eprintln!("shoal: {e:#}");
        std::process::exit(1);
    }
}
