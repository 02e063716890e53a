//! The `codmir` command: runs the server (`serve.rs`), manages API keys on the database
//! (`keys.rs`), and talks to a running server over its API for people and scripts
//! (`remote/`). Argument parsing and wiring live here; the server itself is `codmir-server`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod keys;
mod remote;
mod secrets;
mod serve;

use remote::{Failure, Remote};

/// mimalloc instead of the system allocator: the hot path allocates many small, short-lived
/// buffers on several threads, where glibc's malloc showed up as ~12 % of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// codmir: a ticket tracker that sends signed, reliable webhooks.
#[derive(Parser)]
#[command(version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// Log lines as `text` (for people) or `json` (one object per line, for log stacks).
    #[arg(long, global = true, env = "CODMIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "Examples:
  codmir serve                                   # API on 127.0.0.1:8080, ./codmir.db
  export CODMIR_API_KEY=cmk_…                    # the key `serve` printed on first start
  codmir webhooks create https://example.com/hooks --events 'ticket.*'
  codmir webhooks ping wh_…
  codmir deliveries list --status failed
  codmir deliveries redeliver dlv_…
  codmir listen --forward-to http://localhost:3000/webhooks/codmir
  codmir trigger ticket.created

The API commands take --url (CODMIR_URL), --api-key (CODMIR_API_KEY) and --json.
Exit codes: 0 success; 1 the API refused the request or failed (its error is printed); 2 bad
usage; 3 the server could not be reached; 4 the API key was refused; 5 not found.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server and the webhook delivery engine.
    #[command(
        after_help = "Examples:\n  codmir serve\n  codmir serve --listen 0.0.0.0:8080 \
                            --metrics-listen 127.0.0.1:9100 --log-format json\n  codmir serve \
                            --database-url postgres://codmir@db:5432/codmir"
    )]
    Serve(Box<serve::ServeArgs>),
    /// Manage API keys, on the database (works beside a running server).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// The master key that seals webhook secrets at rest.
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Register, inspect, change, ping and measure webhooks (over the API).
    Webhooks {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: remote::webhooks::WebhooksCommand,
    },
    /// The delivery log: list, show with attempts, redeliver (over the API).
    Deliveries {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: remote::deliveries::DeliveriesCommand,
    },
    /// Send a webhook the events of a time window again (over the API).
    Replay {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: remote::deliveries::ReplayArgs,
    },
    /// The event log (over the API).
    Events {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: remote::events::EventsCommand,
    },
    /// The catalog of event types a webhook can subscribe to (over the API).
    #[command(after_help = "Example:\n  codmir event-types")]
    EventTypes {
        #[command(flatten)]
        remote: Remote,
    },
    /// Receive events locally: a temporary webhook whose deliveries are printed and forwarded
    /// unchanged to your app, removed when you stop (Ctrl-C).
    #[command(
        after_help = "Example:\n  codmir listen --forward-to http://localhost:3000/webhooks/codmir --events 'ticket.*'\n\n\
                      A local server must run with --allow-private-targets to deliver to the listener;\n\
                      for a remote one, give --public-url (a tunnel to the listener)."
    )]
    Listen {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: remote::listen::ListenArgs,
    },
    /// Cause a real event of a type through the API (a project, ticket, member, comment,
    /// change or deletion as needed) and print its id.
    #[command(
        after_help = "Examples:\n  codmir trigger ticket.created\n  codmir trigger comment.created --project proj_…"
    )]
    Trigger {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: remote::trigger::TriggerArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return Failure::api(format!("cannot start the runtime: {e}")).exit(),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::serve(*args).await.map_err(Failure::from),
            Command::Keys { command } => keys::run(command).await,
            Command::Secrets { command } => secrets::run(command).await,
            Command::Webhooks { remote, command } => remote::webhooks::run(&remote, command).await,
            Command::Deliveries { remote, command } => {
                remote::deliveries::run(&remote, command).await
            }
            Command::Replay { remote, args } => remote::deliveries::replay(&remote, args).await,
            Command::Events { remote, command } => remote::events::run(&remote, command).await,
            Command::EventTypes { remote } => remote::events::event_types(&remote).await,
            Command::Listen { remote, args } => remote::listen::listen(&remote, args).await,
            Command::Trigger { remote, args } => remote::trigger::trigger(&remote, args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}

fn init_logging(format: LogFormat) {
    let level = std::env::var("CODMIR_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    // Colour codes only for a person at a terminal who did not ask for none (NO_COLOR), never
    // in a file, a pipe or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    /// clap's own checks of the command tree: no two arguments of a command share a name
    /// (a global `--url` and a subcommand's `--url` would shadow each other silently).
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
