//! Command line: every flag overrides the matching config key.
//!
//! `--help` leads with what a newcomer needs (config file, listeners, pages,
//! `--print-config`, `--set`, the `token` subcommand) and examples; the tuning,
//! RTMP and TLS flags follow under their own headings.

use std::path::PathBuf;

use clap::Parser;

use std::time::Duration;

use crate::config::{Config, ConfigError, Listen};

/// Headings of `--help` after the common flags.
const TUNING: &str = "Tuning (the defaults fit most setups; each flag mirrors a config key)";
const RTMP: &str = "RTMP ingest";
const TLS: &str = "TLS (https/wss)";
const CLUSTER: &str = "Cluster (several nodes on one Redis)";

/// Shown after the flags: how to run, publish and play.
const EXAMPLES: &str = "\
Examples:
  wsrelay                                       HTTP/WS on 0.0.0.0:8080, RTMP on 0.0.0.0:1935
  wsrelay --http 127.0.0.1:8080 --rtmp 127.0.0.1:1935
                                                the same, reachable from this machine only
  wsrelay --config wsrelay.toml --print-config  check a config file: print what would run
  wsrelay token --stream cam1 --action publish  a publish token (needs [auth] secrets)

Publish from OBS: Settings > Stream > Service: Custom, Server: rtmp://HOST:1935/live,
Stream Key: cam1. Or: ffmpeg -re -i in.mp4 -c copy -f flv rtmp://HOST:1935/live/cam1
Watch: http://HOST:8080/ (web UI), ws://HOST:8080/live/cam1.flv (mpegts.js, flv.js),
ffplay http://HOST:8080/live/cam1.flv";

/// wsrelay: live FLV relay (WebSocket-FLV, HTTP-FLV; RTMP/HTTP/WebSocket publish)
/// and WebRTC signaling server.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// TOML config file; flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP/WebSocket listen address, or `off` [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<Listen>,
    /// RTMP listen address, or `off` [default: 0.0.0.0:1935].
    #[arg(long, value_name = "ADDR")]
    pub rtmp: Option<Listen>,
    /// Serve the web pages from this directory instead of the copy built into the binary.
    #[arg(long, value_name = "DIR")]
    pub static_dir: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Set any config key, as in the TOML file: `--set signal.max_peers_per_room=50`,
    /// `--set 'signal.stun_urls=["stun:stun.example.org"]'`. Repeatable; applied after the
    /// file and before the other flags. A value that is not TOML is taken as a string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Access-Control-Allow-Origin for HTTP-FLV and the API [default: *].
    #[arg(long, value_name = "ORIGIN", help_heading = TUNING)]
    pub cors_origin: Option<String>,
    /// Maximum TCP connections on the HTTP listener.
    #[arg(long, value_name = "N", help_heading = TUNING)]
    pub max_connections: Option<usize>,
    /// Players wait this long for a dropped publisher to come back (live.publisher_grace_ms).
    #[arg(long, value_name = "MS", help_heading = TUNING)]
    pub grace_ms: Option<u64>,
    /// A publisher silent this long is cut off (live.publisher_idle_timeout_ms).
    #[arg(long, value_name = "MS", help_heading = TUNING)]
    pub publisher_idle_timeout_ms: Option<u64>,
    /// Largest FLV tag accepted (live.max_tag_bytes).
    #[arg(long, value_name = "BYTES", help_heading = TUNING)]
    pub max_tag_bytes: Option<usize>,
    /// GOP cache bound in bytes (live.gop_max_bytes).
    #[arg(long, value_name = "BYTES", help_heading = TUNING)]
    pub gop_max_bytes: Option<usize>,
    /// GOP cache bound in stream time (live.gop_max_duration_ms).
    #[arg(long, value_name = "MS", help_heading = TUNING)]
    pub gop_max_ms: Option<u32>,
    /// Tags a player may lag before skipping to the next keyframe (live.player_backlog_tags).
    #[arg(long, value_name = "N", help_heading = TUNING)]
    pub player_backlog_tags: Option<usize>,
    /// Disconnect a player behind the live edge this long (live.player_max_behind_ms).
    #[arg(long, value_name = "MS", help_heading = TUNING)]
    pub player_max_behind_ms: Option<u64>,
    /// Disconnect a player whose single write takes this long (live.player_write_timeout_ms).
    #[arg(long, value_name = "MS", help_heading = TUNING)]
    pub player_write_timeout_ms: Option<u64>,
    /// Maximum live streams (live.max_streams).
    #[arg(long, value_name = "N", help_heading = TUNING)]
    pub max_streams: Option<usize>,
    /// Maximum players across streams (live.max_players).
    #[arg(long, value_name = "N", help_heading = TUNING)]
    pub max_players: Option<usize>,
    /// Maximum players per stream (live.max_players_per_stream).
    #[arg(long, value_name = "N", help_heading = TUNING)]
    pub max_players_per_stream: Option<usize>,
    /// Largest WebSocket message a WebSocket publisher may send (live.max_publish_message_bytes).
    #[arg(long, value_name = "BYTES", help_heading = TUNING)]
    pub max_publish_message_bytes: Option<usize>,
    /// Bytes of queued tags merged into one write to a player (live.player_write_batch_bytes).
    #[arg(long, value_name = "BYTES", help_heading = TUNING)]
    pub player_write_batch_bytes: Option<usize>,
    /// Latency budget for writes to players: tags are written once per window (live.write_coalesce_ms; 0 = each tag at once).
    #[arg(long, value_name = "MS", help_heading = TUNING)]
    pub write_coalesce_ms: Option<u64>,
    /// Time allowed for a graceful shutdown (shutdown_timeout_ms).
    #[arg(long, value_name = "MS", help_heading = TUNING)]
    pub shutdown_timeout_ms: Option<u64>,
    /// Maximum simultaneous RTMP connections (rtmp_settings.max_connections).
    #[arg(long, value_name = "N", help_heading = RTMP)]
    pub rtmp_max_connections: Option<usize>,
    /// Close RTMP clients that have not finished the handshake after this
    /// (rtmp_settings.handshake_timeout_ms).
    #[arg(long, value_name = "MS", help_heading = RTMP)]
    pub rtmp_handshake_timeout_ms: Option<u64>,
    /// Close RTMP clients that have not sent `publish` after this
    /// (rtmp_settings.publish_timeout_ms).
    #[arg(long, value_name = "MS", help_heading = RTMP)]
    pub rtmp_publish_timeout_ms: Option<u64>,
    /// A new publisher replaces a live one instead of getting 409 (live.allow_takeover).
    #[arg(long, help_heading = TUNING)]
    pub allow_takeover: bool,
    /// TLS (https/wss) listen address, or `off` (tls_listen) [default: off].
    #[arg(long, value_name = "ADDR", help_heading = TLS)]
    pub tls: Option<Listen>,
    /// PEM certificate chain for --tls (tls_cert).
    #[arg(long, value_name = "FILE", help_heading = TLS)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls (tls_key).
    #[arg(long, value_name = "FILE", help_heading = TLS)]
    pub tls_key: Option<PathBuf>,
    /// Join a cluster: the shared Redis, `redis://HOST:PORT` or
    /// `redis+unix:///path` (cluster.redis) [default: off, single node].
    #[arg(long = "cluster", value_name = "URL", help_heading = CLUSTER)]
    pub cluster: Option<String>,
    /// How other nodes reach this one, `http://HOST:PORT` (cluster.node_url)
    /// [default: the --http address when it is not a wildcard].
    #[arg(long, value_name = "URL", help_heading = CLUSTER)]
    pub node_url: Option<String>,
    /// Shared by all nodes; signs internal pulls (cluster.secret).
    #[arg(
        long,
        value_name = "SECRET",
        env = "WSRELAY_CLUSTER_SECRET",
        hide_env_values = true,
        help_heading = CLUSTER
    )]
    pub cluster_secret: Option<String>,
    /// A subcommand instead of running the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a signed publish/play token for a stream (JWT, HS256).
    Token(TokenArgs),
}

/// `wsrelay token --stream NAME --action play --ttl 1h`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Stream name, a prefix ending in `/` (`team1/`), or `*` for every stream.
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// `publish` or `play`.
    #[arg(long, value_name = "ACTION")]
    pub action: crate::vocab::Action,
    /// Lifetime: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, value_name = "TTL", default_value = "1h", value_parser = parse_ttl)]
    pub ttl: std::time::Duration,
    /// Signing secret; default: $WSRELAY_SECRET, then the first of the config's
    /// `[auth] secrets` (--config).
    #[arg(
        long,
        value_name = "SECRET",
        env = "WSRELAY_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
}

impl Cli {
    /// Builds the effective config: defaults, then the file, then the flags.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if !self.set.is_empty() {
            let mut table = match &self.config {
                Some(path) => Config::read_table(path)?,
                None => toml::Table::new(),
            };
            for assignment in &self.set {
                apply_set(&mut table, assignment)?;
            }
            c = table
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid(format!("--set: {e}")))?;
        }
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        set(&mut c.http, self.http);
        set(&mut c.rtmp, self.rtmp);
        if self.static_dir.is_some() {
            c.static_dir = self.static_dir;
        }
        set(&mut c.cors_origin, self.cors_origin);
        set(&mut c.max_connections, self.max_connections);
        set(&mut c.shutdown_timeout_ms, self.shutdown_timeout_ms);
        set(&mut c.tls_listen, self.tls);
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key;
        }
        if self.cluster.is_some() {
            c.cluster.redis = self.cluster;
        }
        if self.node_url.is_some() {
            c.cluster.node_url = self.node_url;
        }
        if let Some(secret) = self.cluster_secret {
            c.cluster.secret = Some(signaling::Secret::new(secret));
        }
        let rtmp = &mut c.rtmp_settings;
        set(&mut rtmp.max_connections, self.rtmp_max_connections);
        set(
            &mut rtmp.handshake_timeout_ms,
            self.rtmp_handshake_timeout_ms,
        );
        set(&mut rtmp.publish_timeout_ms, self.rtmp_publish_timeout_ms);
        let live = &mut c.live;
        set(&mut live.publisher_grace_ms, self.grace_ms);
        set(
            &mut live.publisher_idle_timeout_ms,
            self.publisher_idle_timeout_ms,
        );
        set(&mut live.max_tag_bytes, self.max_tag_bytes);
        set(
            &mut live.max_publish_message_bytes,
            self.max_publish_message_bytes,
        );
        set(
            &mut live.player_write_batch_bytes,
            self.player_write_batch_bytes,
        );
        set(&mut live.write_coalesce_ms, self.write_coalesce_ms);
        set(&mut live.gop_max_bytes, self.gop_max_bytes);
        set(&mut live.gop_max_duration_ms, self.gop_max_ms);
        set(&mut live.player_backlog_tags, self.player_backlog_tags);
        set(&mut live.player_max_behind_ms, self.player_max_behind_ms);
        set(
            &mut live.player_write_timeout_ms,
            self.player_write_timeout_ms,
        );
        set(&mut live.max_streams, self.max_streams);
        set(&mut live.max_players, self.max_players);
        set(
            &mut live.max_players_per_stream,
            self.max_players_per_stream,
        );
        if self.allow_takeover {
            live.allow_takeover = true;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Applies `a.b.c=VALUE` to a TOML table (creating tables on the way).
fn apply_set(table: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid(format!("--set {assignment}: {why}"));
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| invalid("expected KEY=VALUE"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut path: Vec<&str> = key.trim().split('.').collect();
    let last = path
        .pop()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid("empty key"))?;
    let mut node = table;
    for part in path {
        node = node
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| invalid(&format!("`{part}` is not a table")))?;
    }
    node.insert(last.to_owned(), value);
    Ok(())
}

/// Parses a duration like `90s`, `30m`, `1h`, `7d` or a plain number of seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 30m, 1h or 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: unknown unit (use s, m, h or d)")),
    };
    n.checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_reaches_any_key_and_reports_bad_ones() {
        let cli = Cli::parse_from([
            "wsrelay",
            "--set",
            "signal.max_peers_per_room=3",
            "--set",
            "signal.stun_urls=[\"stun:a.example\"]",
            "--set",
            "cors_origin=https://b.example",
            "--set",
            "live.max_streams=9",
            "--max-streams",
            "10",
        ]);
        let c = cli.into_config().unwrap();
        assert_eq!(c.signal.max_peers_per_room, 3);
        assert_eq!(c.signal.stun_urls, vec!["stun:a.example".to_owned()]);
        assert_eq!(c.cors_origin, "https://b.example");
        assert_eq!(c.live.max_streams, 10, "dedicated flags win over --set");
        for bad in [
            "nokey",
            "live.nope=1",
            "live.max_streams=\"x\"",
            "cors_origin.x=1",
        ] {
            let cli = Cli::parse_from(["wsrelay", "--set", bad]);
            assert!(cli.into_config().is_err(), "{bad}");
        }
    }

    #[test]
    fn help_leads_with_the_common_flags_and_an_example() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let at = |needle: &str| {
            help.find(needle)
                .unwrap_or_else(|| panic!("`{needle}` not in --help:\n{help}"))
        };
        let tuning = at("Tuning (");
        let common = [
            "token",
            "--config <FILE>",
            "--http <ADDR>",
            "--rtmp <ADDR>",
            "--static-dir <DIR>",
            "--print-config",
            "--set <KEY=VALUE>",
        ];
        let mut last = 0;
        for flag in common {
            let i = at(flag);
            assert!(i > last && i < tuning, "`{flag}` comes first, in order");
            last = i;
        }
        for flag in [
            "--grace-ms",
            "--max-streams",
            "--cors-origin",
            "--allow-takeover",
        ] {
            assert!(at(flag) > tuning, "`{flag}` is under Tuning");
        }
        let rtmp = at("RTMP ingest:");
        assert!(rtmp > tuning && at("--rtmp-handshake-timeout-ms") > rtmp);
        assert!(at("--tls-cert") > at("TLS (https/wss):"));
        let examples = at("Examples:");
        assert!(examples > at("--tls-key"), "examples come after the flags");
        at("wsrelay --http 127.0.0.1:8080 --rtmp 127.0.0.1:1935");
        at("rtmp://HOST:1935/live");
    }

    #[test]
    fn every_flag_still_parses() {
        let cli = Cli::try_parse_from([
            "wsrelay",
            "--config=c.toml",
            "--http=127.0.0.1:1",
            "--rtmp=off",
            "--static-dir=s",
            "--print-config",
            "--set=a=1",
            "--cors-origin=*",
            "--max-connections=1",
            "--grace-ms=1",
            "--publisher-idle-timeout-ms=1",
            "--max-tag-bytes=1",
            "--gop-max-bytes=1",
            "--gop-max-ms=1",
            "--player-backlog-tags=1",
            "--player-max-behind-ms=1",
            "--player-write-timeout-ms=1",
            "--max-streams=1",
            "--max-players=1",
            "--max-players-per-stream=1",
            "--max-publish-message-bytes=1",
            "--player-write-batch-bytes=1",
            "--shutdown-timeout-ms=1",
            "--rtmp-max-connections=1",
            "--rtmp-handshake-timeout-ms=1",
            "--rtmp-publish-timeout-ms=1",
            "--allow-takeover",
            "--tls=off",
            "--tls-cert=c.pem",
            "--tls-key=k.pem",
        ])
        .unwrap();
        assert!(cli.print_config && cli.allow_takeover);
        assert_eq!(cli.rtmp_publish_timeout_ms, Some(1));
        let token = Cli::try_parse_from(["wsrelay", "token", "--stream", "a", "--action", "play"]);
        assert!(matches!(token.unwrap().command, Some(Command::Token(_))));
    }

    #[test]
    fn flags_override_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("wsrelay-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "cors_origin = \"https://a.example\"\n[live]\nmax_streams = 7\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "wsrelay",
            "--config",
            file.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--rtmp",
            "off",
            "--grace-ms",
            "250",
        ]);
        let c = cli.into_config().unwrap();
        assert_eq!(c.http, Listen::On("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.rtmp, Listen::Off);
        assert_eq!(c.cors_origin, "https://a.example");
        assert_eq!(c.live.max_streams, 7);
        assert_eq!(c.live.publisher_grace_ms, 250);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
