//! Prometheus metrics (`GET /metrics`, text exposition format).
//!
//! One [`Metrics`] per server, shared as `Arc<Metrics>`: typed families registered
//! once, incremented where things happen (hub, players, publishers, signaling, auth,
//! hooks, listeners), encoded by [`Metrics::render`]. Every label takes values from
//! a fixed set (protocols, reasons, message types, error codes), so series never
//! grow with user input: stream and room names are not labels.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `wsrelay_streams` | gauge | |
//! | `wsrelay_publishers` | gauge | `protocol` (`http`, `ws`, `rtmp`) |
//! | `wsrelay_players` | gauge | `protocol` (`http`, `ws`) |
//! | `wsrelay_bytes_in_total` | counter | `protocol` |
//! | `wsrelay_bytes_out_total` | counter | `protocol` |
//! | `wsrelay_player_writes_total` | counter | `protocol` |
//! | `wsrelay_player_wakeups_total` | counter | `protocol` |
//! | `wsrelay_player_tags_skipped_total` | counter | |
//! | `wsrelay_player_disconnects_total` | counter | `reason` (`too_slow`, `write_stalled`) |
//! | `wsrelay_time_to_first_frame_seconds` | histogram | `protocol` |
//! | `wsrelay_signal_rooms`, `wsrelay_signal_peers` | gauge | |
//! | `wsrelay_signal_messages_total` | counter | `type` |
//! | `wsrelay_signal_errors_total` | counter | `code` |
//! | `wsrelay_signal_resumes_total` | counter | |
//! | `wsrelay_signal_cluster_links` | gauge | `role` (`edge`: clients here whose room is homed elsewhere; `home`: such peers of rooms homed here) |
//! | `wsrelay_signal_cluster_frames_total` | counter | `direction` (`to_home`, `from_home`): frames an edge relayed |
//! | `wsrelay_signal_rehomes_total` | counter | `outcome` (`restored`, `failed`) |
//! | `wsrelay_signal_cluster_errors_total` | counter | `reason` (`redis`, `home_unreachable`, `not_home`, `rejected`) |
//! | `wsrelay_auth_refusals_total` | counter | `action`, `reason` |
//! | `wsrelay_hook_duration_seconds` | histogram | `hook`, `outcome` |
//! | `wsrelay_connections_refused_total` | counter | `reason` |
//!
//! # Formats
//! `/metrics` answers in the Prometheus text format 0.0.4 unless the scraper's
//! `Accept` prefers OpenMetrics ([`Format::negotiate`]): Prometheus itself asks for
//! OpenMetrics first, while `curl`, `promtool check metrics` and older scrapers read
//! 0.0.4. `prometheus-client` only encodes OpenMetrics, so [`openmetrics_to_text`]
//! converts: a counter family `x` (samples `x_total`) gets its `# HELP`/`# TYPE` under
//! `x_total`, as 0.0.4 names the family after its samples; `# UNIT`, `# EOF`,
//! `_created` samples and exemplars have no 0.0.4 form and are dropped.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One label: `[("protocol", "ws")]`.
pub type Label1 = [(&'static str, &'static str); 1];
/// Two labels: `[("action", "play"), ("reason", "expired")]`.
pub type Label2 = [(&'static str, &'static str); 2];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Time-to-first-frame buckets, seconds: a cached GOP arrives in milliseconds, a
/// player waiting for a keyframe may wait seconds.
const FIRST_FRAME_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Hook call buckets, seconds: up to the default 5 s hook timeout.
const HOOK_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// `reason` values of `wsrelay_connections_refused_total`.
pub const REFUSAL_REASONS: [&str; 3] = ["connection_limit", "per_ip_limit", "header_timeout"];

fn first_frame_histogram() -> Histogram {
    Histogram::new(FIRST_FRAME_BUCKETS)
}

fn hook_histogram() -> Histogram {
    Histogram::new(HOOK_BUCKETS)
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Live streams (published, or waiting for their publisher within the grace period).
    pub streams: Gauge,
    /// Connected publishers by protocol.
    pub publishers: Family<Label1, Gauge>,
    /// Connected players by protocol.
    pub players: Family<Label1, Gauge>,
    /// FLV bytes received from publishers, by protocol.
    pub bytes_in: Family<Label1, Counter>,
    /// Bytes written to players, by protocol.
    pub bytes_out: Family<Label1, Counter>,
    /// Writes handed to player sockets (one vectored write, or one HTTP chunk), by
    /// protocol: with `bytes_out` and the tag rate, the cost model of fan-out.
    pub player_writes: Family<Label1, Counter>,
    /// Times a player task woke up to take tags from its stream, by protocol.
    pub player_wakeups: Family<Label1, Counter>,
    /// Tags players skipped because they fell behind.
    pub tags_skipped: Counter,
    /// Players disconnected for being too slow, by reason.
    pub player_disconnects: Family<Label1, Counter>,
    /// Time from a player's request to its first media tag, by protocol.
    pub first_frame: HistogramFamily<Label1>,
    /// Signaling rooms.
    pub signal_rooms: Gauge,
    /// Signaling peers (connected or within their resume grace period).
    pub signal_peers: Gauge,
    /// Signaling messages received, by `type`.
    pub signal_messages: Family<Label1, Counter>,
    /// Signaling `error` messages sent, by `code`.
    pub signal_errors: Family<Label1, Counter>,
    /// Signaling sessions resumed with a session token.
    pub signal_resumes: Counter,
    /// Publishes and plays refused by auth (tokens or hooks), by action and reason.
    pub auth_refusals: Family<Label2, Counter>,
    /// HTTP hook call durations, by hook and outcome (`allow`, `refuse`, `timeout`, `error`).
    pub hook_duration: HistogramFamily<Label2>,
    /// Connections refused or cut by the listener, by reason.
    pub connections_refused: Family<Label1, Counter>,
    /// Cluster: pulls of remote streams running on this node.
    pub cluster_pulls: Gauge,
    /// Cluster: pull connections that ended, by `outcome` (`idle`, `ended`, `lost`,
    /// `shutdown`).
    pub cluster_pull_starts: Family<Label1, Counter>,
    /// Cluster: origin leases held by this node.
    pub cluster_leases: Gauge,
    /// Cluster: leases found taken by another node at renewal (publisher stopped).
    pub cluster_leases_lost: Counter,
    /// Cluster: Redis commands that failed or timed out.
    pub cluster_redis_errors: Counter,
    /// Cluster signaling: links between a client's node and its room's home, by
    /// `role` (`edge`, `home`).
    pub signal_cluster_links: Family<Label1, Gauge>,
    /// Cluster signaling: frames relayed by an edge, by `direction`.
    pub signal_cluster_frames: Family<Label1, Counter>,
    /// Cluster signaling: peers moved to a new home after theirs was lost, by `outcome`.
    pub signal_rehomes: Family<Label1, Counter>,
    /// Cluster signaling: clients that got `cluster-unavailable` (or a failed link),
    /// by `reason`.
    pub signal_cluster_errors: Family<Label1, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all registered under the `wsrelay_` prefix.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("wsrelay"),
            streams: Gauge::default(),
            publishers: Family::default(),
            players: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            player_writes: Family::default(),
            player_wakeups: Family::default(),
            tags_skipped: Counter::default(),
            player_disconnects: Family::default(),
            first_frame: Family::new_with_constructor(first_frame_histogram),
            signal_rooms: Gauge::default(),
            signal_peers: Gauge::default(),
            signal_messages: Family::default(),
            signal_errors: Family::default(),
            signal_resumes: Counter::default(),
            auth_refusals: Family::default(),
            hook_duration: Family::new_with_constructor(hook_histogram),
            connections_refused: Family::default(),
            cluster_pulls: Gauge::default(),
            cluster_pull_starts: Family::default(),
            cluster_leases: Gauge::default(),
            cluster_leases_lost: Counter::default(),
            cluster_redis_errors: Counter::default(),
            signal_cluster_links: Family::default(),
            signal_cluster_frames: Family::default(),
            signal_rehomes: Family::default(),
            signal_cluster_errors: Family::default(),
        };
        let mut m = m;
        // Series with a fixed label set exist from the start (at 0), so dashboards
        // and `rate()` see them before the first event.
        for protocol in ["http", "ws", "rtmp"] {
            m.publishers.get_or_create_owned(&[("protocol", protocol)]);
            m.bytes_in.get_or_create_owned(&[("protocol", protocol)]);
        }
        for protocol in ["http", "ws"] {
            m.players.get_or_create_owned(&[("protocol", protocol)]);
            m.bytes_out.get_or_create_owned(&[("protocol", protocol)]);
            m.player_writes
                .get_or_create_owned(&[("protocol", protocol)]);
            m.player_wakeups
                .get_or_create_owned(&[("protocol", protocol)]);
        }
        for reason in ["too_slow", "write_stalled"] {
            m.player_disconnects
                .get_or_create_owned(&[("reason", reason)]);
        }
        for reason in REFUSAL_REASONS {
            m.connections_refused
                .get_or_create_owned(&[("reason", reason)]);
        }
        let r = &mut m.registry;
        r.register("streams", "Live streams", m.streams.clone());
        r.register("publishers", "Connected publishers", m.publishers.clone());
        r.register("players", "Connected players", m.players.clone());
        r.register(
            "bytes_in",
            "Bytes received from publishers",
            m.bytes_in.clone(),
        );
        r.register("bytes_out", "Bytes written to players", m.bytes_out.clone());
        r.register(
            "player_writes",
            "Writes to player sockets (one vectored write or one HTTP chunk each)",
            m.player_writes.clone(),
        );
        r.register(
            "player_wakeups",
            "Times a player task woke up to take tags from its stream (not counted: \
             the writes of a stream's writer shard to players at the live edge)",
            m.player_wakeups.clone(),
        );
        r.register(
            "player_tags_skipped",
            "Tags skipped by players that fell behind",
            m.tags_skipped.clone(),
        );
        r.register(
            "player_disconnects",
            "Players disconnected for being too slow",
            m.player_disconnects.clone(),
        );
        r.register(
            "time_to_first_frame_seconds",
            "Time from a play request to the first media tag",
            m.first_frame.clone(),
        );
        r.register("signal_rooms", "Signaling rooms", m.signal_rooms.clone());
        r.register("signal_peers", "Signaling peers", m.signal_peers.clone());
        r.register(
            "signal_messages",
            "Signaling messages received",
            m.signal_messages.clone(),
        );
        r.register(
            "signal_errors",
            "Signaling error messages sent",
            m.signal_errors.clone(),
        );
        r.register(
            "signal_resumes",
            "Signaling sessions resumed",
            m.signal_resumes.clone(),
        );
        r.register(
            "auth_refusals",
            "Publishes and plays refused by tokens or hooks",
            m.auth_refusals.clone(),
        );
        r.register(
            "hook_duration_seconds",
            "HTTP hook call durations",
            m.hook_duration.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused or cut by the HTTP listener",
            m.connections_refused.clone(),
        );
        r.register(
            "cluster_pulls",
            "Cluster: pulls of remote streams running on this node",
            m.cluster_pulls.clone(),
        );
        r.register(
            "cluster_pull_starts",
            "Cluster: pull connections to an origin that ended, by outcome",
            m.cluster_pull_starts.clone(),
        );
        r.register(
            "cluster_leases",
            "Cluster: stream origin leases held",
            m.cluster_leases.clone(),
        );
        r.register(
            "cluster_leases_lost",
            "Cluster: leases found taken by another node",
            m.cluster_leases_lost.clone(),
        );
        r.register(
            "cluster_redis_errors",
            "Cluster: Redis commands that failed or timed out",
            m.cluster_redis_errors.clone(),
        );
        r.register(
            "signal_cluster_links",
            "Cluster signaling: links between a client's node and its room's home node",
            m.signal_cluster_links.clone(),
        );
        r.register(
            "signal_cluster_frames",
            "Cluster signaling: frames an edge relayed to or from a room's home node",
            m.signal_cluster_frames.clone(),
        );
        r.register(
            "signal_rehomes",
            "Cluster signaling: peers moved to a new home node after theirs was lost",
            m.signal_rehomes.clone(),
        );
        r.register(
            "signal_cluster_errors",
            "Cluster signaling: failures to reach a room's home node, by reason",
            m.signal_cluster_errors.clone(),
        );
        m
    }

    /// Every metric in the OpenMetrics 1.0 text format (what `prometheus-client`
    /// encodes).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Every metric in the Prometheus text format 0.0.4 ([`openmetrics_to_text`] of
    /// [`Metrics::render`]).
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render())
    }

    /// Every metric in `format`.
    pub fn render_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.render(),
            Format::Text => self.render_text(),
        }
    }

    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str = Format::OpenMetrics.content_type();

    /// Counts an auth refusal.
    pub fn auth_refused(&self, action: &'static str, reason: &'static str) {
        self.auth_refusals
            .get_or_create(&[("action", action), ("reason", reason)])
            .inc();
    }

    /// A gauge held up while the returned guard lives (a player or a publisher).
    pub fn hold(family: &Family<Label1, Gauge>, label: Label1) -> GaugeGuard {
        let gauge = family.get_or_create_owned(&label);
        gauge.inc();
        GaugeGuard { gauge }
    }
}

/// An exposition format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`): the default.
    Text,
    /// OpenMetrics 1.0 (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The format to answer a request whose `Accept` header is `accept`: OpenMetrics
    /// when the header names `application/openmetrics-text` with a quality at least
    /// that of any text or wildcard range it also accepts, else the 0.0.4 text.
    ///
    /// Prometheus sends `application/openmetrics-text;version=1.0.0,…,
    /// text/plain;version=0.0.4;q=0.5,*/*;q=0.1` (OpenMetrics); `curl` sends `*/*`
    /// (text).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Converts OpenMetrics text (as `prometheus-client` encodes it) to the Prometheus
/// text format 0.0.4.
///
/// - `counter` family `x`: `# HELP x_total` / `# TYPE x_total counter` (the samples
///   already are `x_total`); its `x_created` samples are dropped.
/// - `info` family `x`: `# TYPE x_info gauge` (0.0.4 has no info type).
/// - `unknown`, `stateset`, `gaugehistogram`: `untyped`.
/// - `# UNIT`, `# EOF` and exemplars (` # {…} v` after a sample) are dropped; `HELP`
///   text loses OpenMetrics' `\"` escape (0.0.4 escapes only `\\` and `\n`).
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    // Family name -> OpenMetrics type, from the `# TYPE` lines.
    let types: std::collections::HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    let renamed = |family: &str| -> String {
        match types.get(family).copied() {
            Some("counter") => format!("{family}_total"),
            Some("info") => format!("{family}_info"),
            _ => family.to_owned(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (family, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {}\n", renamed(family), help_text(help)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                "info" => "gauge",
                _ => "untyped",
            };
            out.push_str(&format!("# TYPE {} {kind}\n", renamed(family)));
        } else if line.starts_with('#') || line.is_empty() {
            // `# UNIT`, `# EOF`: no 0.0.4 form.
        } else {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            if let Some(family) = name.strip_suffix("_created")
                && matches!(
                    types.get(family).copied(),
                    Some("counter" | "histogram" | "summary")
                )
            {
                continue;
            }
            out.push_str(strip_exemplar(line));
            out.push('\n');
        }
    }
    out
}

/// OpenMetrics `HELP` text re-escaped for 0.0.4: `\"` becomes `"`.
fn help_text(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('"') => out.push('"'),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A sample line without its exemplar (` # {labels} value [timestamp]`), which
/// 0.0.4 has no syntax for. Label values may contain ` # {`, so the exemplar is
/// searched after the label set.
fn strip_exemplar(line: &str) -> &str {
    let after_labels = match line.find('{') {
        Some(open) if open < line.find(' ').unwrap_or(line.len()) => {
            // The closing brace of the label set: the first `}` outside quotes.
            let mut quoted = false;
            let mut escaped = false;
            let mut close = None;
            for (i, c) in line.char_indices().skip(open) {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            close.map_or(line.len(), |c| c + 1)
        }
        _ => 0,
    };
    match line[after_labels..].find(" # ") {
        Some(i) => &line[..after_labels + i],
        None => line,
    }
}

/// Decrements its gauge when dropped.
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: Gauge,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_contains_every_family_and_moves() {
        let m = Metrics::new();
        m.streams.inc();
        let player = Metrics::hold(&m.players, [("protocol", "ws")]);
        m.bytes_out
            .get_or_create(&[("protocol", "ws")])
            .inc_by(1234);
        m.first_frame
            .get_or_create(&[("protocol", "http")])
            .observe(0.02);
        m.auth_refused("publish", "expired");
        m.hook_duration
            .get_or_create(&[("hook", "on_publish"), ("outcome", "allow")])
            .observe(0.003);
        for t in ["offer", "invalid"] {
            m.signal_messages.get_or_create(&[("type", t)]).inc();
        }
        m.signal_errors.get_or_create(&[("code", "bad-json")]).inc();
        let text = m.render();
        for family in [
            "wsrelay_streams",
            "wsrelay_publishers",
            "wsrelay_players",
            "wsrelay_bytes_in",
            "wsrelay_bytes_out",
            "wsrelay_player_writes",
            "wsrelay_player_wakeups",
            "wsrelay_player_tags_skipped",
            "wsrelay_player_disconnects",
            "wsrelay_time_to_first_frame_seconds",
            "wsrelay_signal_rooms",
            "wsrelay_signal_peers",
            "wsrelay_signal_messages",
            "wsrelay_signal_errors",
            "wsrelay_signal_resumes",
            "wsrelay_auth_refusals",
            "wsrelay_hook_duration_seconds",
            "wsrelay_connections_refused",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing in\n{text}"
            );
        }
        assert!(text.contains("wsrelay_streams 1\n"), "{text}");
        assert!(
            text.contains("wsrelay_publishers{protocol=\"rtmp\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("wsrelay_connections_refused_total{reason=\"per_ip_limit\"} 0\n"));
        assert!(
            text.contains("wsrelay_players{protocol=\"ws\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("wsrelay_bytes_out_total{protocol=\"ws\"} 1234\n"),
            "{text}"
        );
        assert!(
            text.contains("wsrelay_auth_refusals_total{action=\"publish\",reason=\"expired\"} 1\n")
        );
        assert!(
            text.contains(
                "wsrelay_time_to_first_frame_seconds_bucket{le=\"0.025\",protocol=\"http\"} 1\n"
            ) || text.contains(
                "wsrelay_time_to_first_frame_seconds_bucket{protocol=\"http\",le=\"0.025\"} 1\n"
            ),
            "{text}"
        );
        for (t, n) in [("offer", 1), ("invalid", 1)] {
            assert!(
                text.contains(&format!(
                    "wsrelay_signal_messages_total{{type=\"{t}\"}} {n}\n"
                )),
                "{text}"
            );
        }
        drop(player);
        assert!(m.render().contains("wsrelay_players{protocol=\"ws\"} 0\n"));
    }

    #[test]
    fn text_format_names_counter_families_after_their_samples() {
        let m = Metrics::new();
        m.bytes_in.get_or_create(&[("protocol", "http")]).inc_by(7);
        m.first_frame
            .get_or_create(&[("protocol", "ws")])
            .observe(0.02);
        m.signal_messages.get_or_create(&[("type", "offer")]).inc();
        let text = m.render_text();
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# HELP wsrelay_bytes_in_total Bytes received from publishers.\n"));
        assert!(
            text.contains("# TYPE wsrelay_bytes_in_total counter\n"),
            "{text}"
        );
        assert!(text.contains("wsrelay_bytes_in_total{protocol=\"http\"} 7\n"));
        assert!(!text.contains("# TYPE wsrelay_bytes_in counter"), "{text}");
        assert!(text.contains("# TYPE wsrelay_streams gauge\n"));
        assert!(text.contains("# TYPE wsrelay_time_to_first_frame_seconds histogram\n"));
        assert!(text.contains("# TYPE wsrelay_signal_messages_total counter\n"));
        // Every sample belongs to a family with HELP and TYPE (what promtool checks).
        let mut typed = std::collections::HashSet::new();
        let mut helped = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_owned());
            } else {
                let name = &line[..line.find(['{', ' ']).unwrap()];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{name} has no TYPE in\n{text}");
                assert!(helped.contains(family), "{name} has no HELP in\n{text}");
            }
        }
    }

    #[test]
    fn conversion_of_what_prometheus_client_may_emit() {
        let om = "# HELP a_requests Requests with \\\"quotes\\\" and \\\\ a backslash.\n\
                  # TYPE a_requests counter\n\
                  # UNIT a_requests requests\n\
                  a_requests_total{path=\"/x # {y}\"} 3 # {trace=\"1\"} 1.0\n\
                  a_requests_created 1.7e9\n\
                  # HELP a_build Build.\n\
                  # TYPE a_build info\n\
                  a_build_info{version=\"1\"} 1\n\
                  # HELP a_thing Something.\n\
                  # TYPE a_thing unknown\n\
                  a_thing 2\n\
                  # EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_requests_total Requests with \"quotes\" and \\\\ a backslash.\n\
             # TYPE a_requests_total counter\n\
             a_requests_total{path=\"/x # {y}\"} 3\n\
             # HELP a_build_info Build.\n\
             # TYPE a_build_info gauge\n\
             a_build_info{version=\"1\"} 1\n\
             # HELP a_thing Something.\n\
             # TYPE a_thing untyped\n\
             a_thing 2\n"
        );
    }

    #[test]
    fn negotiation() {
        use Format::*;
        let prometheus = "application/openmetrics-text;version=1.0.0,\
                          application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (None, Text),
            (Some("*/*"), Text),
            (Some("text/plain"), Text),
            (Some("text/plain;version=0.0.4;q=0.3,*/*;q=0.2"), Text),
            (Some(prometheus), OpenMetrics),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0.2, text/plain"), Text),
            (Some("application/openmetrics-text;q=0, */*"), Text),
            (Some("application/json"), Text),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
        assert!(Text.content_type().starts_with("text/plain; version=0.0.4"));
        assert_eq!(Metrics::CONTENT_TYPE, OpenMetrics.content_type());
    }
}
