//! `[auth]`: which publishes and plays need a signed token (the checking is in
//! [`crate::access::auth`]).

use serde::{Deserialize, Serialize};
use signaling::Secret;

use crate::vocab::Action;

/// Publish/play auth settings (`[auth]` in TOML).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secrets. A token signed with any of them is accepted (list the new one
    /// first when rotating); `wsrelay token` signs with the first. Default empty:
    /// auth is off and everything is allowed.
    pub secrets: Vec<Secret>,
    /// Stream-name prefixes whose publishing needs a token; `""` is every stream.
    /// Default `[""]`: once a secret is set, publishing always needs a token.
    pub publish_prefixes: Vec<String>,
    /// Stream-name prefixes whose playing needs a token. Default empty: playing is
    /// open (list `""` to protect every stream, or e.g. `"private/"`).
    pub play_prefixes: Vec<String>,
    /// Clock skew allowed when checking `exp`. Default 30,000 ms (the usual JWT
    /// leeway; servers and token issuers are rarely further apart).
    pub leeway_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secrets: Vec::new(),
            publish_prefixes: vec![String::new()],
            play_prefixes: Vec::new(),
            leeway_ms: 30_000,
        }
    }
}

impl AuthConfig {
    /// Whether `action` on `stream` needs a token.
    pub fn requires(&self, action: Action, stream: &str) -> bool {
        if self.secrets.is_empty() {
            return false;
        }
        let prefixes = match action {
            Action::Publish => &self.publish_prefixes,
            Action::Play => &self.play_prefixes,
        };
        prefixes.iter().any(|p| stream.starts_with(p.as_str()))
    }

    /// Checks `settings` values that would make auth misbehave.
    pub fn validate(&self) -> Result<(), String> {
        if self.secrets.iter().any(|s| s.expose().is_empty()) {
            return Err("auth.secrets must not contain an empty secret".into());
        }
        Ok(())
    }
}
