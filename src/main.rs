use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    let summary_config = config.clone();
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
    let listeners = Listeners {
        http: server.http_addr(),
        rtmp: server.rtmp_addr(),
        tls: server.tls_addr(),
    };
    for line in startup_summary(&summary_config, &listeners) {
        tracing::info!("{line}");
    }

    wait_for_signal(&server).await;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("bye");
    ExitCode::SUCCESS
}

/// The addresses the listeners are bound to (`None`: off).
struct Listeners {
    http: Option<SocketAddr>,
    rtmp: Option<SocketAddr>,
    tls: Option<SocketAddr>,
}

/// An address a client on this machine can use for `addr`: a wildcard bind
/// (`0.0.0.0`, `::`) becomes loopback, with the same port.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `"for streams under a/, b/"` or `""` (every stream) for a prefix list.
fn scope(prefixes: &[String]) -> String {
    if prefixes.iter().any(String::is_empty) {
        String::new()
    } else {
        format!(" for streams under {}", prefixes.join(", "))
    }
}

/// The lines logged once the listeners are bound: where the web UI is, what to put
/// in OBS, how to play, and whether auth and the admin API are on. Never a secret.
fn startup_summary(config: &wsrelay::config::Config, listeners: &Listeners) -> Vec<String> {
    let mut lines = Vec::new();
    let fmt = |kind: &str, addr: Option<SocketAddr>| match addr {
        Some(a) => format!("{kind} {a}"),
        None => format!("{kind} off"),
    };
    lines.push(format!(
        "listeners: {}, {}, {}",
        fmt("http", listeners.http),
        fmt("rtmp", listeners.rtmp),
        fmt("tls", listeners.tls)
    ));
    let pages = match &config.static_dir {
        None => "pages built into the binary".to_owned(),
        Some(dir) => format!("pages from {}", dir.display()),
    };
    let web = listeners
        .http
        .map(|a| ("http", a))
        .or(listeners.tls.map(|a| ("https", a)));
    match web {
        Some((scheme, addr)) => {
            let url = format!("{scheme}://{}/", reachable(addr));
            if addr.ip().is_unspecified() {
                lines.push(format!(
                    "web UI: {url} ({pages}); bound to {addr}, so also at http://THIS-HOST:{}/ from other machines",
                    addr.port()
                ));
            } else {
                lines.push(format!("web UI: {url} ({pages})"));
            }
            let base = reachable(addr);
            let ws = if scheme == "https" { "wss" } else { "ws" };
            lines.push(format!(
                "play NAME: {ws}://{base}/live/NAME.flv (WebSocket-FLV: mpegts.js, flv.js), \
                 {scheme}://{base}/live/NAME.flv (HTTP-FLV: ffplay, VLC), \
                 {scheme}://{base}/player.html?stream=NAME (the player page)"
            ));
        }
        None => lines.push("web UI: off (no HTTP or TLS listener)".to_owned()),
    }
    match listeners.rtmp {
        Some(addr) => {
            let elsewhere = if addr.ip().is_unspecified() {
                format!(
                    " (from other machines: rtmp://THIS-HOST:{}/live)",
                    addr.port()
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "OBS: Server rtmp://{}/live{elsewhere}, Stream Key = NAME (any name{}); ffmpeg: -f flv rtmp://{}/live/NAME",
                reachable(addr),
                if config.auth.secrets.is_empty() {
                    ""
                } else {
                    "; with a token: NAME?token=TOKEN"
                },
                reachable(addr),
            ));
        }
        None => lines.push("RTMP: off (publish over HTTP POST or WebSocket)".to_owned()),
    }
    let auth = &config.auth;
    if auth.secrets.is_empty() {
        lines.push(
            "auth: off, anyone may publish and play (set [auth] secrets to require tokens)"
                .to_owned(),
        );
    } else {
        let publish = if auth.publish_prefixes.is_empty() {
            "publish open".to_owned()
        } else {
            format!("publish needs a token{}", scope(&auth.publish_prefixes))
        };
        let play = if auth.play_prefixes.is_empty() {
            "play open".to_owned()
        } else {
            format!("play needs a token{}", scope(&auth.play_prefixes))
        };
        lines.push(format!(
            "auth: on ({} secret{}): {publish}; {play} (mint one: wsrelay token --stream NAME --action publish)",
            auth.secrets.len(),
            if auth.secrets.len() == 1 { "" } else { "s" },
        ));
    }
    lines.push(if config.admin_token.is_some() {
        "admin API: on (Authorization: Bearer <admin_token>)".to_owned()
    } else {
        "admin API: off (set admin_token to enable kick and details)".to_owned()
    });
    lines.push(match &config.cluster.redis {
        None => "cluster: off".to_owned(),
        Some(redis) => format!(
            "cluster: on (Redis {}, reached by other nodes at {})",
            wsrelay::config::cluster::redact_url(redis),
            config
                .cluster
                .node_url
                .as_deref()
                .unwrap_or("the --http address")
        ),
    });
    lines
}

/// A Redis URL without its password (`redis://:PASS@host` → `redis://***@host`).
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
        ("cluster", "secret"),
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
    // A Redis URL may carry a password (redis://:PASSWORD@host).
    if let Some(toml::Value::Table(t)) = table.get_mut("cluster")
        && let Some(toml::Value::String(url)) = t.get_mut("redis")
    {
        *url = wsrelay::config::cluster::redact_url(url);
    }
    toml::to_string(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(tweak: impl FnOnce(&mut wsrelay::config::Config), l: &Listeners) -> String {
        let mut config = wsrelay::config::Config::default();
        tweak(&mut config);
        startup_summary(&config, l).join("\n")
    }

    #[test]
    fn print_config_hides_secrets_and_the_redis_password() {
        let mut config = wsrelay::config::Config::default();
        config.cluster.redis = Some("redis://:pw-never-printed@10.0.0.9:6379/0".to_owned());
        config.cluster.secret = Some(signaling::Secret::new("cluster-never-printed"));
        config.admin_token = Some(signaling::Secret::new("admin-never-printed"));
        let text = redacted_toml(&config).unwrap();
        assert!(!text.contains("never-printed"), "{text}");
        assert!(text.contains("redis://***@10.0.0.9:6379/0"), "{text}");
    }

    #[test]
    fn startup_summary_says_where_things_are_and_hides_secrets() {
        let wildcard = Listeners {
            http: Some("0.0.0.0:8080".parse().unwrap()),
            rtmp: Some("0.0.0.0:1935".parse().unwrap()),
            tls: None,
        };
        let text = summary(|_| {}, &wildcard);
        assert!(text.contains("listeners: http 0.0.0.0:8080, rtmp 0.0.0.0:1935, tls off"));
        assert!(text.contains("web UI: http://127.0.0.1:8080/ (pages built into the binary)"));
        assert!(text.contains("bound to 0.0.0.0:8080"));
        assert!(text.contains(
            "OBS: Server rtmp://127.0.0.1:1935/live (from other machines: rtmp://THIS-HOST:1935/live), Stream Key = NAME"
        ));
        assert!(text.contains("ws://127.0.0.1:8080/live/NAME.flv"));
        assert!(text.contains("auth: off"));
        assert!(text.contains("admin API: off"));
        assert!(text.contains("cluster: off"));

        let secret = "s3cr3t-value-never-logged";
        let text = summary(
            |c| {
                c.auth.secrets = vec![signaling::Secret::new(secret)];
                c.auth.play_prefixes = vec!["private/".to_owned()];
                c.admin_token = Some(signaling::Secret::new("admin-secret-never-logged"));
                c.static_dir = Some("/srv/pages".into());
            },
            &Listeners {
                http: Some("[::]:8080".parse().unwrap()),
                rtmp: None,
                tls: None,
            },
        );
        assert!(text.contains("web UI: http://[::1]:8080/ (pages from /srv/pages)"));
        assert!(text.contains(
            "auth: on (1 secret): publish needs a token; play needs a token for streams under private/"
        ));
        assert!(text.contains("admin API: on"));
        assert!(text.contains("RTMP: off"));
        assert!(!text.contains("never-logged"), "{text}");

        let loopback = Listeners {
            http: Some("127.0.0.1:9000".parse().unwrap()),
            rtmp: Some("127.0.0.1:1936".parse().unwrap()),
            tls: None,
        };
        let text = summary(|_| {}, &loopback);
        assert!(text.contains("web UI: http://127.0.0.1:9000/ (pages built into the binary)\n"));
        assert!(!text.contains("bound to"));
    }
}
