//! Publish/play authorization: signed, expiring tokens in the query string.
//!
//! Off until configured: with no `[auth] secrets`, every publish and play is allowed.
//! With secrets, the actions listed per stream-name prefix (`publish_prefixes`,
//! `play_prefixes`) need `?token=JWT`, HS256-signed with one of the secrets, whose
//! claims are:
//!
//! - `stream`: the exact stream name (`cam1`, `team1/cam`), a prefix ending in `/`
//!   (`team1/` covers `team1/cam` and `team1/a/b`), or `*` for every stream;
//! - `action`: `publish` or `play`;
//! - `exp`: expiry, unix seconds.
//!
//! The same check guards HTTP, WebSocket and RTMP (token in the stream key's query:
//! `NAME?token=…`). [`AuthError`] maps each refusal explicitly to what the client is
//! told: an HTTP status ([`AuthError::status`]) and an RTMP `onStatus` code
//! ([`AuthError::rtmp_code`]); refusals are decided before any WebSocket upgrade,
//! so a WebSocket client gets the HTTP status too.
//! Tokens and secrets never appear in logs or error texts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use signaling::Secret;

use crate::config::AuthConfig;
use crate::config::Config;
use crate::config::cli::TokenArgs;
use crate::vocab::Action;

/// The claims of a publish/play token (JWT, HS256).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Exact stream name, a prefix ending in `/`, or `*` (every stream).
    pub stream: String,
    /// The one action the token allows.
    pub action: Action,
    /// Expiry, unix seconds.
    pub exp: u64,
}

impl Claims {
    /// Whether the `stream` claim covers `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.stream == "*"
            || self.stream == name
            || (self.stream.ends_with('/') && name.starts_with(&self.stream))
    }
}

/// Why a publish or play was refused by token auth.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The action needs a token and the query has none (HTTP 401).
    #[error("a token is required to {0} this stream")]
    Missing(Action),
    /// The token is malformed or its signature matches no configured secret (HTTP 401).
    #[error("invalid token")]
    Invalid,
    /// The token's `exp` has passed (HTTP 401).
    #[error("token expired")]
    Expired,
    /// A valid token for another stream (HTTP 403).
    #[error("token is not valid for this stream")]
    WrongStream,
    /// A valid token for the other action (HTTP 403).
    #[error("token does not allow {0}")]
    WrongAction(Action),
}

impl AuthError {
    /// The HTTP status: 401 when the client must get a (new) token, 403 when its
    /// token is genuine but does not cover this request.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing(_) | AuthError::Invalid | AuthError::Expired => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::WrongStream | AuthError::WrongAction(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The RTMP `onStatus` code for a refused publish or play (level `error`, the
    /// description is this error's text).
    pub fn rtmp_code(&self, action: Action) -> &'static str {
        match action {
            Action::Publish => "NetStream.Publish.Unauthorized",
            Action::Play => "NetStream.Play.Unauthorized",
        }
    }

    /// A stable label for metrics (`missing`, `invalid`, `expired`, `wrong_stream`,
    /// `wrong_action`).
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "missing",
            AuthError::Invalid => "invalid",
            AuthError::Expired => "expired",
            AuthError::WrongStream => "wrong_stream",
            AuthError::WrongAction(_) => "wrong_action",
        }
    }
}

/// Decides whether `action` on `stream` is allowed, given the request's query string
/// (`token=` parameter) and the current unix time in seconds.
pub fn authorize(
    config: &AuthConfig,
    action: Action,
    stream: &str,
    query: Option<&str>,
    now_unix_secs: u64,
) -> Result<(), AuthError> {
    if !config.requires(action, stream) {
        return Ok(());
    }
    let token = query
        .and_then(|q| query_param(q, "token"))
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing(action))?;
    let claims = verify(config, token, now_unix_secs)?;
    if !claims.covers(stream) {
        return Err(AuthError::WrongStream);
    }
    if claims.action != action {
        return Err(AuthError::WrongAction(action));
    }
    Ok(())
}

/// Verifies a token's signature (against every configured secret) and expiry.
fn verify(config: &AuthConfig, token: &str, now_unix_secs: u64) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    // `exp` is required (jsonwebtoken checks presence) but compared below against
    // the `now` we are given, not the system clock.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    let claims = config
        .secrets
        .iter()
        .find_map(|secret| {
            let key = DecodingKey::from_secret(secret.expose().as_bytes());
            jsonwebtoken::decode::<Claims>(token, &key, &validation).ok()
        })
        .ok_or(AuthError::Invalid)?
        .claims;
    let leeway = config.leeway_ms.div_ceil(1000);
    if claims.exp.saturating_add(leeway) <= now_unix_secs {
        return Err(AuthError::Expired);
    }
    Ok(claims)
}

/// Signs a token for `stream` and `action`, valid for `ttl` from `now_unix_secs`.
pub fn mint(
    secret: &Secret,
    stream: &str,
    action: Action,
    ttl: Duration,
    now_unix_secs: u64,
) -> String {
    let claims = Claims {
        stream: stream.to_owned(),
        action,
        exp: now_unix_secs.saturating_add(ttl.as_secs()),
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    // Cannot fail: HMAC takes keys of any length and `Claims` always serializes.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .expect("HS256 encoding of plain claims cannot fail")
}

/// The current unix time in seconds (the shell's clock; the checks take it as input).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The raw value of `key` in a query string (`a=1&token=xyz`). Tokens are
/// URL-safe base64 with dots, so no percent-decoding is needed for them.
pub fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// `wsrelay token`: a token signed with the secret from the flag, the environment
/// or `config`.
pub fn mint_token(args: &TokenArgs, config: Option<&Config>) -> Result<String, String> {
    let secret = match (&args.secret, config) {
        (Some(s), _) if !s.is_empty() => signaling::Secret::new(s.clone()),
        (_, Some(c)) if !c.auth.secrets.is_empty() => c.auth.secrets[0].clone(),
        _ => {
            return Err(
                "no secret: pass --secret, set WSRELAY_SECRET, or --config a file with [auth] secrets"
                    .into(),
            );
        }
    };
    Ok(mint(
        &secret,
        &args.stream,
        args.action,
        args.ttl,
        unix_now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::parse_ttl;

    const NOW: u64 = 1_800_000_000;

    fn config(secrets: &[&str]) -> AuthConfig {
        AuthConfig {
            secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
            publish_prefixes: vec![String::new()],
            play_prefixes: vec!["private/".into()],
            leeway_ms: 0,
        }
    }

    fn q(token: &str) -> String {
        format!("publish&token={token}")
    }

    #[test]
    fn open_when_no_secret_is_configured() {
        let c = AuthConfig::default();
        assert_eq!(authorize(&c, Action::Publish, "cam", None, NOW), Ok(()));
        assert_eq!(authorize(&c, Action::Play, "private/x", None, NOW), Ok(()));
    }

    #[test]
    fn accepts_a_valid_token_and_prefix_claims() {
        let c = config(&["s3cret"]);
        let s = Secret::new("s3cret");
        let t = mint(&s, "cam1", Action::Publish, Duration::from_secs(60), NOW);
        assert_eq!(
            authorize(&c, Action::Publish, "cam1", Some(&q(&t)), NOW),
            Ok(())
        );
        let t = mint(&s, "team1/", Action::Publish, Duration::from_secs(60), NOW);
        assert_eq!(
            authorize(&c, Action::Publish, "team1/a/b", Some(&q(&t)), NOW),
            Ok(())
        );
        assert_eq!(
            authorize(&c, Action::Publish, "team10/a", Some(&q(&t)), NOW),
            Err(AuthError::WrongStream)
        );
        let t = mint(&s, "*", Action::Play, Duration::from_secs(60), NOW);
        let query = format!("token={t}");
        assert_eq!(
            authorize(&c, Action::Play, "private/x", Some(&query), NOW),
            Ok(())
        );
    }

    #[test]
    fn play_outside_protected_prefixes_is_open() {
        let c = config(&["k"]);
        assert_eq!(authorize(&c, Action::Play, "public", None, NOW), Ok(()));
        assert_eq!(
            authorize(&c, Action::Play, "private/x", None, NOW),
            Err(AuthError::Missing(Action::Play))
        );
        assert_eq!(
            authorize(&c, Action::Publish, "public", Some("token="), NOW),
            Err(AuthError::Missing(Action::Publish))
        );
    }

    #[test]
    fn rejects_expired_wrong_stream_wrong_action_and_bad_signature() {
        let c = config(&["k"]);
        let k = Secret::new("k");
        let expired = mint(
            &k,
            "cam",
            Action::Publish,
            Duration::from_secs(10),
            NOW - 11,
        );
        let e = authorize(&c, Action::Publish, "cam", Some(&q(&expired)), NOW).unwrap_err();
        assert_eq!(e, AuthError::Expired);
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);

        let other = mint(&k, "other", Action::Publish, Duration::from_secs(60), NOW);
        let e = authorize(&c, Action::Publish, "cam", Some(&q(&other)), NOW).unwrap_err();
        assert_eq!(e, AuthError::WrongStream);
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.status(), StatusCode::FORBIDDEN);

        let play = mint(&k, "cam", Action::Play, Duration::from_secs(60), NOW);
        let e = authorize(&c, Action::Publish, "cam", Some(&q(&play)), NOW).unwrap_err();
        assert_eq!(e, AuthError::WrongAction(Action::Publish));
        assert_eq!(
            e.rtmp_code(Action::Publish),
            "NetStream.Publish.Unauthorized"
        );

        let forged = mint(
            &Secret::new("nope"),
            "cam",
            Action::Publish,
            Duration::from_secs(60),
            NOW,
        );
        let e = authorize(&c, Action::Publish, "cam", Some(&q(&forged)), NOW).unwrap_err();
        assert_eq!(e, AuthError::Invalid);
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            authorize(&c, Action::Publish, "cam", Some("token=garbage"), NOW),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn any_configured_secret_verifies_for_rotation() {
        let c = config(&["new", "old"]);
        let t = mint(
            &Secret::new("old"),
            "cam",
            Action::Publish,
            Duration::from_secs(60),
            NOW,
        );
        assert_eq!(
            authorize(&c, Action::Publish, "cam", Some(&q(&t)), NOW),
            Ok(())
        );
    }

    #[test]
    fn leeway_extends_expiry() {
        let mut c = config(&["k"]);
        c.leeway_ms = 30_000;
        let t = mint(
            &Secret::new("k"),
            "cam",
            Action::Publish,
            Duration::from_secs(10),
            NOW - 20,
        );
        assert_eq!(
            authorize(&c, Action::Publish, "cam", Some(&q(&t)), NOW),
            Ok(())
        );
    }

    #[test]
    fn errors_never_contain_the_token() {
        let c = config(&["k"]);
        let t = mint(
            &Secret::new("x"),
            "cam",
            Action::Publish,
            Duration::from_secs(60),
            NOW,
        );
        let e = authorize(&c, Action::Publish, "cam", Some(&q(&t)), NOW).unwrap_err();
        assert!(!e.to_string().contains(&t));
        assert!(!format!("{c:?}").contains("\"k\""));
    }

    #[test]
    fn ttl_and_query_parsing() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
        assert_eq!(query_param("a=1&token=x.y.z&b", "token"), Some("x.y.z"));
        assert_eq!(query_param("publish", "publish"), Some(""));
        assert_eq!(query_param("tokens=1", "token"), None);
    }
}
