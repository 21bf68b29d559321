use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// paddockd: the Paddock agent. Supervises redis-server on this machine and
/// serves the controller's gRPC API.
#[derive(Parser)]
#[command(name = "paddockd", version, about)]
struct Args {
    /// The agent's TOML config (listen, data_dir, redis_server).
    #[arg(long, short, default_value = "/etc/paddock/agent.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check the config and what it names (TLS files, redis-server, the
    /// Redis user, data_dir) without starting anything; exit 2 if the agent
    /// could not start with it.
    ///
    /// Example: paddockd check-config --config /etc/paddock/agent.toml
    CheckConfig,
}

/// Exit codes (for systemd's RestartPreventExitStatus=), decided by
/// `Error::exit_code`: 2 bad config, unreadable TLS files, unusable
/// user or data_dir; 3 the listen port is taken or forbidden (an address
/// not configured yet is waited for instead); 1 anything else.
fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PADDOCK_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match paddock_agent::AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    if let Some(Command::CheckConfig) = args.command {
        return match paddock_agent::check_config(&config) {
            Ok(notes) => {
                println!("{}: ok", args.config.display());
                for n in notes {
                    println!("  {n}");
                }
                ExitCode::SUCCESS
            }
            // Whatever stops the agent from starting is a setup problem here.
            Err(e) => {
                eprintln!("paddockd: {e}");
                ExitCode::from(paddock_agent::error::EXIT_SETUP)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("paddockd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // An address not configured yet (at boot) is waited for while the
        // instances are supervised; a taken port exits 3 at once.
        let served = match paddock_agent::bind(&config).await {
            Ok(l) => paddock_agent::run(config, l, shutdown_signal()).await,
            Err(e) if e.address_not_yet_configured() => {
                paddock_agent::run_binding(config, shutdown_signal()).await
            }
            Err(e) => return failed(&e),
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        }
    })
}

/// Says why the agent stops, and exits with the status that error means.
fn failed(e: &paddock_agent::Error) -> ExitCode {
    eprintln!("paddockd: {e}");
    ExitCode::from(e.exit_code())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the agent can still be stopped by SIGKILL.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
    }
}
