use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsrelay::config::Config;
use wsrelay::config::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if let Some(Command::Token(args)) = &cli.command {
        let config = match cli.config.as_deref().map(Config::from_file).transpose() {
            Ok(config) => config,
            Err(e) => {
                eprintln!("wsrelay: {e}");
                return ExitCode::from(2);
            }
        };
        return match wsrelay::access::auth::mint_token(args, config.as_ref()) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wsrelay token: {e}");
                ExitCode::from(2)
            }
        };
    }
    let print_config = cli.print_config;
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wsrelay: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        return match redacted_toml(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wsrelay: cannot print the config: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let server = match wsrelay::app::spawn(config).await {
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
    if let Some(addr) = server.tls_addr() {
        let _ = writeln!(out, "listening https://{addr}");
    }
    let _ = out.flush();
    drop(out);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "wsrelay started");

    wait_for_signal(&server).await;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("bye");
    ExitCode::SUCCESS
}

/// Resolves on SIGINT or SIGTERM; on SIGHUP reloads the config (same command
/// line, config file re-read) without dropping connections.
async fn wait_for_signal(server: &wsrelay::app::Server) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::pin!(ctrl_c);
                loop {
                    tokio::select! {
                        _ = &mut ctrl_c => return,
                        _ = term.recv() => return,
                        _ = hup.recv() => reload(server),
                    }
                }
            }
            _ => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        let _ = ctrl_c.await;
    }
}

/// Re-reads the command line and config file and applies what can change live.
#[cfg(unix)]
fn reload(server: &wsrelay::app::Server) {
    let applied = Cli::try_parse()
        .map_err(|e| e.to_string())
        .and_then(|cli| cli.into_config().map_err(|e| e.to_string()))
        .and_then(|config| server.reload(&config).map_err(|e| e.to_string()));
    if let Err(e) = applied {
        tracing::error!(error = %e, "SIGHUP: config not reloaded; keeping the current one");
    }
}

/// The config as TOML with secrets replaced, for `--print-config` (secrets never leave
/// the process, not even on request).
fn redacted_toml(config: &wsrelay::config::Config) -> Result<String, toml::ser::Error> {
    let mut table = toml::Table::try_from(config)?;
    let redacted = || toml::Value::String("<redacted>".to_owned());
    if table.contains_key("admin_token") {
        table.insert("admin_token".to_owned(), redacted());
    }
    for (section, key) in [
        ("auth", "secrets"),
        ("signal", "jwt_secret"),
        ("signal", "turn_secret"),
    ] {
        if let Some(toml::Value::Table(t)) = table.get_mut(section)
            && let Some(v) = t.get_mut(key)
        {
            *v = match v {
                toml::Value::Array(a) => toml::Value::Array(a.iter().map(|_| redacted()).collect()),
                _ => redacted(),
            };
        }
    }
    toml::to_string(&table)
}
