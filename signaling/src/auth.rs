//! JWT join tokens, TURN REST credentials and the wall clock they need.
//!
//! Both need unix time, which the pure crate never reads: the shell anchors a
//! [`WallClock`] (one `Instant` and the unix time at that instant) and the room
//! derives unix time from the `now: Instant` of each input.

use std::time::Instant;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use crate::config::Secret;
use crate::protocol::{AuthError, IceServer};

/// Maps monotonic time to unix time: the unix time (ms) at one `Instant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    anchor: Instant,
    unix_ms: u64,
}

impl WallClock {
    /// `unix_ms` is the unix time in milliseconds at `anchor`; the shell takes
    /// both from its clocks at the same moment.
    pub fn new(anchor: Instant, unix_ms: u64) -> Self {
        WallClock { anchor, unix_ms }
    }

    /// Unix time in milliseconds at `now` (times before the anchor map to it).
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.anchor).as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// Claims of a signaling join token (JWT, HS256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The room the token is valid for.
    pub room: String,
    /// If present, the only peer id the token may join as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Expiry, unix seconds.
    pub exp: u64,
}

/// Issue a join token (HS256), for applications and tests.
pub fn issue_token(secret: &Secret, claims: &Claims) -> String {
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    // Cannot fail: HMAC accepts any key length and `Claims` always serializes.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .expect("HS256 encoding of plain claims cannot fail")
}

/// Checks join tokens against one secret.
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway_ms: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("leeway_ms", &self.leeway_ms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub(crate) fn new(secret: &Secret, leeway_ms: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` must be present (jsonwebtoken checks that), but it is compared
        // below against the room's wall clock, not the system clock.
        validation.validate_exp = false;
        validation.validate_aud = false;
        Verifier {
            key: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            leeway_ms,
        }
    }

    /// Verify `token` for `room` at `unix_ms`.
    pub(crate) fn verify(
        &self,
        token: &str,
        room: &str,
        unix_ms: u64,
    ) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| AuthError::Invalid)?;
        let claims = data.claims;
        if claims
            .exp
            .saturating_mul(1000)
            .saturating_add(self.leeway_ms)
            <= unix_ms
        {
            return Err(AuthError::Expired);
        }
        if claims.room != room {
            return Err(AuthError::WrongRoom);
        }
        Ok(claims)
    }
}

/// TURN REST credentials (draft-uberti-behave-turn-rest, coturn
/// `use-auth-secret`): username `expiry:peer` with `expiry` in unix seconds,
/// credential base64(HMAC-SHA1(secret, username)).
pub fn turn_credentials(secret: &Secret, peer: &str, expiry_unix_secs: u64) -> (String, String) {
    let username = format!("{expiry_unix_secs}:{peer}");
    // Cannot fail: HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// The `welcome.ice_servers` list for `peer` at unix time `unix_ms`.
pub(crate) fn ice_servers(config: &crate::Config, peer: &str, unix_ms: u64) -> Vec<IceServer> {
    let mut servers = Vec::new();
    if !config.stun_urls.is_empty() {
        servers.push(IceServer {
            urls: config.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    if let Some(secret) = &config.turn_secret
        && !config.turn_urls.is_empty()
    {
        let expiry = unix_ms.saturating_add(config.turn_ttl_ms) / 1000;
        let (username, credential) = turn_credentials(secret, peer, expiry);
        servers.push(IceServer {
            urls: config.turn_urls.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    servers
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn turn_rest_credentials_match_coturn_formula() {
        // Reference: `echo -n "1700000000:alice" | openssl dgst -sha1 -hmac secret -binary | base64`
        let (u, c) = turn_credentials(&Secret::new("secret"), "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        assert_eq!(c, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn wall_clock_follows_instants() {
        let t0 = Instant::now();
        let w = WallClock::new(t0, 1_000);
        assert_eq!(w.unix_ms(t0 + Duration::from_millis(2_500)), 3_500);
        assert_eq!(w.unix_ms(t0), 1_000);
    }

    #[test]
    fn jwt_accept_and_reject() {
        let secret = Secret::new("s3cret");
        let v = Verifier::new(&secret, 0);
        let claims = Claims {
            room: "r".into(),
            peer: Some("p".into()),
            exp: 2_000,
        };
        let tok = issue_token(&secret, &claims);
        assert_eq!(v.verify(&tok, "r", 1_999_000), Ok(claims.clone()));
        assert_eq!(v.verify(&tok, "r", 2_000_000), Err(AuthError::Expired));
        assert_eq!(v.verify(&tok, "other", 1_000), Err(AuthError::WrongRoom));
        let forged = issue_token(&Secret::new("guess"), &claims);
        assert_eq!(v.verify(&forged, "r", 1_000), Err(AuthError::Invalid));
        assert_eq!(v.verify("not.a.jwt", "r", 1_000), Err(AuthError::Invalid));
        let lenient = Verifier::new(&secret, 30_000);
        assert!(lenient.verify(&tok, "r", 2_010_000).is_ok());
    }
}
