//! Decoding the AMF0 commands a publishing client sends (`connect`, `createStream`,
//! `publish`, ...), with bounds.
//!
//! Commands arrive before any authentication, so the decoder is the crate `flv`'s
//! bounded AMF0 reader ([`flv::script::read_values`]): it allocates nothing for a
//! count or length before the bytes it announces have arrived, and refuses deep
//! nesting and huge value counts with an error. (`scuffle-amf0` 0.2 pre-allocates
//! whatever count a peer announces and recurses without limit: a 30-byte strict
//! array announcing 2^32 elements aborted the process.) The message itself is
//! bounded before it gets here: `rtmp_settings.pre_publish_max_message_bytes`
//! until a publish is admitted.

use amf::amf0::Value;

/// A command from the client, as far as a publishing server cares.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `connect` with the application name from its command object.
    Connect {
        /// Transaction id.
        txn: f64,
        /// `app` of the command object, as sent.
        app: String,
    },
    /// `createStream`.
    CreateStream {
        /// Transaction id.
        txn: f64,
    },
    /// `publish` with the publishing name (stream key, query included).
    Publish {
        /// The publishing name.
        name: String,
    },
    /// `releaseStream` / `FCPublish`: answered with a plain `_result`.
    Prepare {
        /// Transaction id.
        txn: f64,
    },
    /// `FCUnpublish`, `deleteStream` or `closeStream`: the client stops publishing.
    Unpublish,
    /// `play` / `play2`: this server does not serve RTMP players.
    Play,
    /// Anything else (`_checkbw`, `getStreamLength`, ...): ignored.
    Other(String),
}

/// Why a command could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The body is not well-formed AMF0, or is over the reader's bounds.
    #[error("malformed AMF0")]
    Amf0(#[source] flv::Error),
    /// The body does not start with a command name.
    #[error("no command name")]
    NoName,
    /// A command the session needs lacks a field (`connect` without an object,
    /// `publish` without a name).
    #[error("`{command}` without {missing}")]
    Missing {
        /// The command.
        command: &'static str,
        /// What is missing.
        missing: &'static str,
    },
}

/// The leading command name of a body, read without decoding the rest (for
/// deciding whether an undecodable command matters).
pub fn leading_name(body: &[u8]) -> Option<&str> {
    let (&marker, rest) = body.split_first()?;
    if marker != 0x02 || rest.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    std::str::from_utf8(rest.get(2..2 + len)?).ok()
}

impl Command {
    /// Decodes an AMF0 command message body.
    pub fn parse(body: &[u8]) -> Result<Command, CommandError> {
        let values = flv::script::read_values(body).map_err(CommandError::Amf0)?;
        let mut values = values.into_iter();
        let name = match values.next() {
            Some(Value::String(s)) => s,
            _ => return Err(CommandError::NoName),
        };
        let txn = match values.next() {
            Some(Value::Number(n)) => n,
            _ => 0.0,
        };
        let mut args = values;
        Ok(match name.as_str() {
            "connect" => {
                let app = match args.next() {
                    Some(Value::Object { entries, .. } | Value::EcmaArray { entries }) => entries
                        .into_iter()
                        .find(|p| p.key == "app")
                        .and_then(|p| match p.value {
                            Value::String(s) => Some(s),
                            _ => None,
                        }),
                    _ => None,
                };
                let app = app.ok_or(CommandError::Missing {
                    command: "connect",
                    missing: "a command object with `app`",
                })?;
                Command::Connect { txn, app }
            }
            "createStream" => Command::CreateStream { txn },
            "publish" => {
                // publish(txn, null, name, type)
                let name = args.nth(1).and_then(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                });
                let name = name.ok_or(CommandError::Missing {
                    command: "publish",
                    missing: "a publishing name",
                })?;
                Command::Publish { name }
            }
            "releaseStream" | "FCPublish" => Command::Prepare { txn },
            "FCUnpublish" | "deleteStream" | "closeStream" => Command::Unpublish,
            "play" | "play2" => Command::Play,
            _ => Command::Other(name),
        })
    }

    /// The command's name for log lines and errors.
    pub fn name(&self) -> &str {
        match self {
            Command::Connect { .. } => "connect",
            Command::CreateStream { .. } => "createStream",
            Command::Publish { .. } => "publish",
            Command::Prepare { .. } => "releaseStream/FCPublish",
            Command::Unpublish => "unpublish",
            Command::Play => "play",
            Command::Other(name) => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.push(0x02);
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn number(out: &mut Vec<u8>, n: f64) {
        out.push(0x00);
        out.extend_from_slice(&n.to_be_bytes());
    }

    #[test]
    fn publishing_commands_decode() {
        let mut b = Vec::new();
        string(&mut b, "connect");
        number(&mut b, 1.0);
        b.extend_from_slice(b"\x03\x00\x03app");
        string(&mut b, "live");
        b.extend_from_slice(b"\x00\x00\x09");
        assert_eq!(
            Command::parse(&b).unwrap(),
            Command::Connect {
                txn: 1.0,
                app: "live".into()
            }
        );

        let mut b = Vec::new();
        string(&mut b, "publish");
        number(&mut b, 5.0);
        b.push(0x05);
        string(&mut b, "cam?token=x");
        string(&mut b, "live");
        assert_eq!(
            Command::parse(&b).unwrap(),
            Command::Publish {
                name: "cam?token=x".into()
            }
        );

        let mut b = Vec::new();
        string(&mut b, "FCUnpublish");
        assert_eq!(Command::parse(&b).unwrap(), Command::Unpublish);
    }

    #[test]
    fn hostile_commands_are_errors_not_allocations() {
        // The 30-byte abort from issue 11: a strict array announcing 2^32 - 1 values.
        let mut b = Vec::new();
        string(&mut b, "connect");
        number(&mut b, 1.0);
        b.push(0x0A);
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Command::parse(&b), Err(CommandError::Amf0(_))));
        // An object nested 3,000 deep.
        let mut b = Vec::new();
        string(&mut b, "connect");
        for _ in 0..3000 {
            b.extend_from_slice(&[0x03, 0, 1, b'k']);
        }
        assert!(matches!(Command::parse(&b), Err(CommandError::Amf0(_))));
        // `connect` without an object, `publish` without a name.
        let mut b = Vec::new();
        string(&mut b, "connect");
        number(&mut b, 1.0);
        b.push(0x05);
        assert!(matches!(
            Command::parse(&b),
            Err(CommandError::Missing { .. })
        ));
        assert!(matches!(
            Command::parse(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(CommandError::NoName)
        ));
    }
}
