use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsrelay::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match Cli::parse().into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wsrelay: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match wsrelay::server::spawn(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("wsrelay: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One line per listener on stdout, so scripts and tests can find the ports.
    let mut out = std::io::stdout().lock();
    if let Some(addr) = server.http_addr() {
        let _ = writeln!(out, "listening http://{addr}");
    }
    if let Some(addr) = server.rtmp_addr() {
        let _ = writeln!(out, "listening rtmp://{addr}");
    }
    let _ = out.flush();
    drop(out);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "wsrelay started");

    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("bye");
    ExitCode::SUCCESS
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
