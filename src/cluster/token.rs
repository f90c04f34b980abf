//! The token an edge shows the origin when it pulls a stream: who pulls, which
//! stream, until when, signed with the cluster secret (HMAC-SHA256). Pure: the time
//! is an argument.
//!
//! Format: `NODE.EXP.SIG`, with `NODE` the pulling node's id (hex), `EXP` unix
//! seconds and `SIG` the hex HMAC of `wsrelay-pull NAME NODE EXP` (newline
//! separated). Short-lived ([`TOKEN_TTL_S`]); never a player's own token.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a pull token is valid: an edge signs a fresh one for every connection
/// to the origin, so a minute covers clock skew between nodes and nothing more.
pub const TOKEN_TTL_S: u64 = 60;

/// Why a pull token was refused (HTTP 401 at the origin).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not `NODE.EXP.SIG`.
    #[error("malformed pull token")]
    Malformed,
    /// The signature does not match (another secret, or another stream).
    #[error("pull token signature does not match (wrong cluster secret?)")]
    BadSignature,
    /// Past its expiry.
    #[error("pull token expired")]
    Expired,
}

fn mac(secret: &[u8], stream: &str, node: &str, exp: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("wsrelay-pull\n{stream}\n{node}\n{exp}").as_bytes());
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A token for `node` to pull `stream`, valid until `now + TOKEN_TTL_S`.
pub fn sign(secret: &[u8], stream: &str, node: &str, now_unix_s: u64) -> String {
    let exp = now_unix_s + TOKEN_TTL_S;
    let sig = mac(secret, stream, node, exp).finalize().into_bytes();
    format!("{node}.{exp}.{}", hex(&sig))
}

/// Checks a token for `stream`; returns the pulling node's id.
pub fn verify(
    secret: &[u8],
    stream: &str,
    token: &str,
    now_unix_s: u64,
) -> Result<String, TokenError> {
    let mut parts = token.split('.');
    let (Some(node), Some(exp), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if node.is_empty() || !node.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed);
    }
    let exp: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let sig = unhex(sig).ok_or(TokenError::Malformed)?;
    // Constant-time comparison.
    mac(secret, stream, node, exp)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    if exp < now_unix_s {
        return Err(TokenError::Expired);
    }
    Ok(node.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_stream_secret_and_time() {
        let t = sign(b"s3cret", "cam", "a1b2", 1_000);
        assert_eq!(verify(b"s3cret", "cam", &t, 1_000), Ok("a1b2".to_owned()));
        assert_eq!(
            verify(b"s3cret", "cam", &t, 1_000 + TOKEN_TTL_S),
            Ok("a1b2".into())
        );
        assert_eq!(
            verify(b"s3cret", "cam", &t, 1_001 + TOKEN_TTL_S),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(b"other", "cam", &t, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", "cam2", &t, 1_000),
            Err(TokenError::BadSignature)
        );
        // A forged node id or expiry breaks the signature.
        let forged = t.replacen("a1b2", "ffff", 1);
        assert_eq!(
            verify(b"s3cret", "cam", &forged, 1_000),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "x",
            "a.b",
            "a1.10.zz",
            "a1.x.00",
            "a.1.00.extra",
            ".1.00",
        ] {
            assert_eq!(
                verify(b"s3cret", "cam", bad, 0),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }
}
