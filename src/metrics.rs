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
//! | `wsrelay_player_tags_skipped_total` | counter | |
//! | `wsrelay_player_disconnects_total` | counter | `reason` (`too_slow`, `write_stalled`) |
//! | `wsrelay_time_to_first_frame_seconds` | histogram | `protocol` |
//! | `wsrelay_signal_rooms`, `wsrelay_signal_peers` | gauge | |
//! | `wsrelay_signal_messages_total` | counter | `type` |
//! | `wsrelay_signal_errors_total` | counter | `code` |
//! | `wsrelay_signal_resumes_total` | counter | |
//! | `wsrelay_auth_refusals_total` | counter | `action`, `reason` |
//! | `wsrelay_hook_duration_seconds` | histogram | `hook`, `outcome` |
//! | `wsrelay_connections_refused_total` | counter | `reason` |

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
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
}
