//! `[hooks]`: the HTTP callbacks asked before a publish or play (the calling is in
//! `access::hooks`).

use std::time::Duration;

use hyper::Uri;
use serde::{Deserialize, Serialize};

/// Hook settings (`[hooks]` in TOML).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// `http://` URL asked before a publisher is accepted. Default none.
    pub on_publish: Option<String>,
    /// `http://` URL asked before a player is accepted. Default none.
    pub on_play: Option<String>,
    /// `http://` URL told when a publisher leaves. Default none.
    pub on_unpublish: Option<String>,
    /// Time a hook has to answer (including waiting for a free call slot); past it
    /// the publish/play is refused. Default 5,000 ms (SRS's default; a hook is a
    /// quick local lookup, and a client waits this long at worst).
    pub timeout_ms: u64,
    /// Hook calls in flight at once. Default 64: enough for bursts of joins, few
    /// enough that a hung hook server cannot exhaust sockets.
    pub max_concurrent: usize,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            on_publish: None,
            on_play: None,
            on_unpublish: None,
            timeout_ms: 5_000,
            max_concurrent: 64,
        }
    }
}

impl HooksConfig {
    /// The effective timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks that every URL is a plain `http://` URL and the limits are positive.
    pub fn validate(&self) -> Result<(), String> {
        for (name, url) in self.urls() {
            if let Some(url) = url {
                parse_url(url).map_err(|e| format!("hooks.{name}: {e}"))?;
            }
        }
        if self.max_concurrent == 0 {
            return Err("hooks.max_concurrent must be greater than 0".into());
        }
        if self.timeout_ms == 0 {
            return Err("hooks.timeout_ms must be greater than 0".into());
        }
        Ok(())
    }

    fn urls(&self) -> [(&'static str, Option<&String>); 3] {
        [
            ("on_publish", self.on_publish.as_ref()),
            ("on_play", self.on_play.as_ref()),
            ("on_unpublish", self.on_unpublish.as_ref()),
        ]
    }
}

pub fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err("hook URLs must be http://host[:port]/path".into());
    }
    Ok(uri)
}
