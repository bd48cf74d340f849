//! `shoal`: the node daemon, the Docker-like CLI, the debug CLI and the lab,
//! in one binary.

mod agent;
mod api;
mod asks;
mod clock;
mod cni;
mod commands;
mod control_port;
mod docker_driver;
mod files;
mod gossip;
mod heavy;
mod lab;
mod metrics;
mod orchestrator;
mod output;
mod pki;
mod raft;
mod stack;
mod wire;

use clap::Parser;

/// A clap error as one line naming the problem: its first line and the
/// detail clap puts on the lines below it (the missing arguments, the
/// possible values, a tip), without the usage and the help hint.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let mut out = first.trim_start_matches("error: ").trim_end().to_string();
    let detail: Vec<&str> = lines
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    if out.ends_with(':') {
        // A list: "...not provided: --name <NAME>, <COMMAND>..."
        out = format!("{out} {}", detail.join(", "));
    } else {
        for d in detail {
            // "[possible values: a, b]" reads on; a tip is a clause of its own.
            out.push_str(if d.starts_with('[') { " " } else { "; " });
            out.push_str(d);
        }
    }
    out
}

fn main() {
    // Runtimes call CNI plugins by their file name (a link to this binary).
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new(cni::PLUGIN_NAME)) {
        cni::main();
    }
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
            eprintln!("shoal: {} (see --help)", one_line(&e.to_string()));
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
            .init();
    }
    if let Err(e) = commands::run(cli) {
        // One line naming the problem, as operators expect from a CLI.
        eprintln!("shoal: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use clap::Parser;

    fn parse_error(args: &[&str]) -> String {
        let e = crate::commands::Cli::try_parse_from(args).expect_err("a usage error");
        one_line(&e.to_string())
    }

    #[test]
    fn missing_arguments_are_named() {
        assert_eq!(
            parse_error(&["shoal", "service", "create"]),
            "the following required arguments were not provided: --name <NAME>, <COMMAND>..."
        );
    }

    #[test]
    fn possible_values_and_tips_stay_on_the_line() {
        let bad_value = parse_error(&["shoal", "lab", "ls", "--format", "yaml"]);
        assert!(
            bad_value.starts_with("invalid value 'yaml' for '--format <FORMAT>'")
                && bad_value.ends_with("[possible values: table, json]"),
            "{bad_value}"
        );
        let unexpected = parse_error(&["shoal", "lab", "ls", "--form", "json"]);
        assert!(
            unexpected
                == "unexpected argument '--form' found; tip: a similar argument exists: '--format'",
            "{unexpected}"
        );
        for line in [bad_value, unexpected] {
            assert!(!line.contains('\n') && !line.contains("Usage"), "{line}");
        }
    }

    #[test]
    fn clap_layouts_become_one_line() {
        let text = "error: the following required arguments were not provided:\n  --name <NAME>\n  <COMMAND>...\n\nUsage: shoal service create --name <NAME> <COMMAND>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "the following required arguments were not provided: --name <NAME>, <COMMAND>..."
        );
        let text = "error: unrecognized subcommand 'frob'\n\n  tip: a similar subcommand exists: 'up'\n\nUsage: shoal lab <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "unrecognized subcommand 'frob'; tip: a similar subcommand exists: 'up'"
        );
        assert_eq!(
            one_line("error: invalid value 'x' for '--nodes <NODES>': invalid digit found in string\n\nFor more information, try '--help'.\n"),
            "invalid value 'x' for '--nodes <NODES>': invalid digit found in string"
        );
    }
}
