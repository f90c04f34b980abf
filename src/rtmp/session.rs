//! The server side of an RTMP publishing session as a state machine, without I/O.
//!
//! Feed it what the socket read ([`Session::handle_input`]), send what it produced
//! ([`Session::take_output`]) and act on its [`SessionEvent`]s. A publish request stops
//! message processing until the caller answers it with [`Session::accept_publish`]
//! or [`Session::reject_publish`], so no media is ever handed out for a stream the
//! caller did not accept.
//!
//! ```
//! use wsrelay::rtmp::session::{Session, SessionConfig, SessionEvent};
//!
//! let mut session = Session::new(SessionConfig::default());
//! // Not an RTMP client: the first byte of C0 must be version 3.
//! assert!(session.handle_input(b"GET / HTTP/1.1\r\n").is_err());
//! ```
//!
//! The handshake is ours (see [`handshake_reply`]: what librtmp and FFmpeg check in
//! S1 and S2); the `scuffle-rtmp` crate computes its HMAC digests, decodes AMF0
//! commands and encodes every response (`_result`, `onStatus`, protocol control
//! messages) as chunks. Chunks are read by [`super::chunk::ChunkReader`] (see there
//! why).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use flv::{Tag, TagType};
use scuffle_amf0::Amf0Error;
use scuffle_amf0::encoder::Amf0Encoder;
use scuffle_rtmp::chunk::writer::ChunkWriter;
use scuffle_rtmp::chunk::{CHUNK_STREAM_ID_COMMAND, Chunk};
use scuffle_rtmp::command_messages::error::CommandError as ScuffleCommandError;
use scuffle_rtmp::command_messages::netconnection::{
    NetConnectionCommand, NetConnectionCommandConnectResult,
};
use scuffle_rtmp::command_messages::on_status::{OnStatus, OnStatusCode};
use scuffle_rtmp::command_messages::{Command as ScuffleCommand, CommandResultLevel, CommandType};
use scuffle_rtmp::error::RtmpError;
use scuffle_rtmp::handshake::RTMP_HANDSHAKE_SIZE;
use scuffle_rtmp::handshake::complex::digest::DigestProcessor;
use scuffle_rtmp::handshake::complex::error::ComplexHandshakeError;
use scuffle_rtmp::handshake::complex::{
    RTMP_CLIENT_KEY_FIRST_HALF, RTMP_DIGEST_LENGTH, RTMP_SERVER_KEY, RTMP_SERVER_KEY_FIRST_HALF,
    RTMP_SERVER_VERSION, SchemaVersion,
};
use scuffle_rtmp::messages::MessageType;
use scuffle_rtmp::protocol_control_messages::{
    ProtocolControlMessageAcknowledgement, ProtocolControlMessageSetChunkSize,
    ProtocolControlMessageSetPeerBandwidth, ProtocolControlMessageSetPeerBandwidthLimitType,
    ProtocolControlMessageWindowAcknowledgementSize,
};
use scuffle_rtmp::user_control_messages::EventMessageStreamBegin;

use super::chunk::{ChunkError, ChunkReader, ChunkReaderConfig, Message, message_type};
use super::command::{Command, CommandError, leading_name};

/// The only RTMP version there is (C0/S0).
const RTMP_VERSION: u8 = 3;

/// Chunk size of what we send: responses are small; 4096 is what most servers use.
const OUT_CHUNK_SIZE: u32 = 4096;

/// Window Acknowledgement Size and peer bandwidth we announce (the common 2.5 MB;
/// publishers do not throttle on it, it only makes them acknowledge our bytes).
const WINDOW_ACK_SIZE: u32 = 2_500_000;

/// Chunk stream for NetStream status messages (what nginx-rtmp and SRS use).
const CHUNK_STREAM_ID_STATUS: u32 = 5;

/// NetStreams one connection may create. Publishers create one; a few more covers
/// clients that retry on the same connection.
const MAX_NET_STREAMS: u32 = 8;

/// `onStatus` code sent when a publish is refused because of its name.
pub const PUBLISH_BAD_NAME: &str = "NetStream.Publish.BadName";
/// `onStatus` code sent when a publish is refused for another reason.
pub const PUBLISH_FAILED: &str = "NetStream.Publish.Failed";

/// Limits of a [`Session`].
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// Limits of the chunk reader once a publish is accepted (`max_message_bytes`
    /// is then the largest tag).
    pub chunk: ChunkReaderConfig,
    /// Largest message before a publish is accepted: commands are a few hundred
    /// bytes, and an unauthenticated client must not pin megabytes of partly
    /// received messages.
    pub pre_publish_max_message_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            chunk: ChunkReaderConfig {
                max_message_bytes: 8 << 20,
                max_chunk_size: 65_536,
                max_chunk_streams: 64,
            },
            pre_publish_max_message_bytes: 64 << 10,
        }
    }
}

/// What the session tells its driver.
#[derive(Debug)]
pub enum SessionEvent {
    /// `connect` succeeded on this application name (`rtmp://host/APP`).
    Connected {
        /// The application, trailing `/` removed; may carry a `?query`.
        app: String,
    },
    /// `publish`: answer with [`Session::accept_publish`] or [`Session::reject_publish`].
    PublishRequested {
        /// The application from `connect`.
        app: String,
        /// The publishing name (stream key) as sent, query included.
        key: String,
    },
    /// An audio, video or script tag of the published stream (RTMP timestamp).
    Media(Tag),
    /// The client stopped publishing (`FCUnpublish`, `deleteStream`, `closeStream`).
    Unpublished,
}

/// Why a session cannot continue. Each maps to a log line; the connection is closed
/// after any response already produced is sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The first byte is not RTMP version 3 (an HTTP request, TLS, RTMPE, garbage).
    #[error("not an RTMP client (version byte {0:#04x})")]
    NotRtmp(u8),
    /// The digest of a digest ("complex") handshake could not be computed (a bug,
    /// not peer input: a C1 without a valid digest gets the simple handshake).
    #[error("handshake failed: computing the S1/S2 digest")]
    Handshake(#[source] ComplexHandshakeError),
    /// The chunk stream is malformed or over a limit.
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A command is malformed AMF0, over the decoder's bounds, or lacks what the
    /// session needs (`connect` without `app`, `publish` without a name).
    #[error("bad RTMP command")]
    BadCommand(#[source] CommandError),
    /// Commands in an impossible order (publish before connect, ...).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The client asked to play; this server only takes publishers over RTMP
    /// (`NetStream.Play.Failed` is sent first).
    #[error("RTMP play is not supported (play over HTTP-FLV or WebSocket-FLV)")]
    PlayNotSupported,
    /// Encoding a response failed (a bug, not peer input).
    #[error("encoding an RTMP response failed")]
    Encode(#[source] EncodeError),
}

/// Why a response could not be encoded: the error of the `scuffle` encoder that
/// failed. Responses are written to memory, so none of these is expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A protocol control or command message (`scuffle_rtmp` writer).
    #[error("RTMP message")]
    Rtmp(#[from] RtmpError),
    /// An `onStatus` or `_result` command body.
    #[error("RTMP command body")]
    Command(#[from] ScuffleCommandError),
    /// An AMF0 value.
    #[error("AMF0 value")]
    Amf0(#[from] Amf0Error),
    /// Chunking a message.
    #[error("RTMP chunk")]
    Chunk(#[from] std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for C0 + C1.
    C0C1,
    /// Waiting for C2.
    C2,
    /// Exchanging messages.
    Messages,
    /// A publish was refused: everything else the client sends is ignored.
    Refused,
}

#[derive(Clone, Copy, Debug)]
struct PendingPublish {
    stream_id: u32,
}

/// An RTMP server session for one publishing connection.
pub struct Session {
    phase: Phase,
    handshake_buf: BytesMut,
    reader: ChunkReader,
    /// The reader's message limit once a publish is accepted.
    max_message_bytes: usize,
    writer: ChunkWriter,
    out: Vec<u8>,
    events: VecDeque<SessionEvent>,
    app: Option<String>,
    streams_created: u32,
    pending: Option<PendingPublish>,
    publishing: Option<u32>,
    /// Bytes received in total, for acknowledgements (§5.4.3).
    bytes_in: u64,
    /// The peer's Window Acknowledgement Size, once it sent one.
    peer_window: Option<u32>,
    last_ack: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("phase", &self.phase)
            .field("app", &self.app)
            .field("publishing", &self.publishing)
            .field("bytes_in", &self.bytes_in)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session waiting for the client's handshake.
    pub fn new(config: SessionConfig) -> Session {
        Session {
            phase: Phase::C0C1,
            handshake_buf: BytesMut::new(),
            reader: ChunkReader::new(ChunkReaderConfig {
                max_message_bytes: config
                    .pre_publish_max_message_bytes
                    .min(config.chunk.max_message_bytes),
                ..config.chunk
            }),
            max_message_bytes: config.chunk.max_message_bytes,
            writer: ChunkWriter::default(),
            out: Vec::new(),
            events: VecDeque::new(),
            app: None,
            streams_created: 0,
            pending: None,
            publishing: None,
            bytes_in: 0,
            peer_window: None,
            last_ack: 0,
        }
    }

    /// The handshake is complete.
    pub fn handshake_done(&self) -> bool {
        matches!(self.phase, Phase::Messages | Phase::Refused)
    }

    /// Processes received bytes.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), SessionError> {
        self.bytes_in += data.len() as u64;
        match self.phase {
            Phase::C0C1 | Phase::C2 => {
                self.handshake_buf.extend_from_slice(data);
                self.drive_handshake()?;
            }
            Phase::Messages => self.reader.push(data),
            Phase::Refused => return Ok(()),
        }
        if self.phase == Phase::Messages {
            self.acknowledge()?;
            self.process()?;
        }
        Ok(())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Bytes to send to the client, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Accepts the pending publish: `NetStream.Publish.Start`, then processing
    /// resumes (media events follow).
    pub fn accept_publish(&mut self, description: &str) -> Result<(), SessionError> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        self.publishing = Some(pending.stream_id);
        self.reader.set_max_message_bytes(self.max_message_bytes);
        EventMessageStreamBegin {
            stream_id: pending.stream_id,
        }
        .write(&self.writer, &mut self.out)
        .map_err(encode)?;
        self.write_status(
            pending.stream_id,
            CommandResultLevel::Status,
            "NetStream.Publish.Start",
            description,
        )?;
        self.process()
    }

    /// Refuses the pending publish with an error `onStatus` (`code` such as
    /// [`PUBLISH_BAD_NAME`]). The driver sends the output and closes.
    pub fn reject_publish(&mut self, code: &'static str, description: &str) {
        let stream_id = self.pending.take().map_or(0, |p| p.stream_id);
        self.phase = Phase::Refused;
        if let Err(e) = self.write_status(stream_id, CommandResultLevel::Error, code, description) {
            tracing::debug!(error = %e, "could not encode the refusal");
        }
    }

    fn drive_handshake(&mut self) -> Result<(), SessionError> {
        if self.phase == Phase::C0C1 {
            match self.handshake_buf.first() {
                Some(&RTMP_VERSION) => {}
                Some(&other) => return Err(SessionError::NotRtmp(other)),
                None => return Ok(()),
            }
            if self.handshake_buf.len() < 1 + RTMP_HANDSHAKE_SIZE {
                return Ok(());
            }
            let c0c1 = self.handshake_buf.split_to(1 + RTMP_HANDSHAKE_SIZE);
            let kind = handshake_reply(&c0c1[1..], &mut self.out, &mut |b| rand::fill(b))
                .map_err(SessionError::Handshake)?;
            tracing::trace!(?kind, "handshake: S0, S1, S2 sent");
            self.phase = Phase::C2;
        }
        if self.phase == Phase::C2 && self.handshake_buf.len() >= RTMP_HANDSHAKE_SIZE {
            // C2 echoes S1 (or signs it); like every server, we do not check it.
            let _c2 = self.handshake_buf.split_to(RTMP_HANDSHAKE_SIZE);
            self.phase = Phase::Messages;
            let rest = std::mem::take(&mut self.handshake_buf);
            self.reader.push(&rest);
            tracing::trace!("handshake complete");
        }
        Ok(())
    }

    /// Sends an Acknowledgement each time the peer's window of bytes was received.
    fn acknowledge(&mut self) -> Result<(), SessionError> {
        let Some(window) = self.peer_window else {
            return Ok(());
        };
        if self.bytes_in - self.last_ack >= u64::from(window) {
            self.last_ack = self.bytes_in;
            ProtocolControlMessageAcknowledgement {
                // The sequence number wraps like every RTMP counter.
                sequence_number: self.bytes_in as u32,
            }
            .write(&mut self.out, &self.writer)
            .map_err(encode)?;
        }
        Ok(())
    }

    /// Reads messages until more bytes are needed or a publish awaits its answer.
    fn process(&mut self) -> Result<(), SessionError> {
        while self.phase == Phase::Messages && self.pending.is_none() {
            let Some(msg) = self.reader.next_message()? else {
                break;
            };
            self.on_message(msg)?;
        }
        Ok(())
    }

    fn on_message(&mut self, msg: Message) -> Result<(), SessionError> {
        match msg.type_id {
            message_type::AUDIO => self.media(TagType::Audio, msg.timestamp, msg.payload),
            message_type::VIDEO => self.media(TagType::Video, msg.timestamp, msg.payload),
            message_type::DATA_AMF0 => self.media(TagType::Script, msg.timestamp, msg.payload),
            // AMF3 data/command messages start with a format byte, then plain AMF0.
            message_type::DATA_AMF3 if msg.payload.first() == Some(&0) => {
                self.media(TagType::Script, msg.timestamp, msg.payload.slice(1..));
            }
            message_type::COMMAND_AMF0 => return self.on_command(msg.stream_id, msg.payload),
            message_type::COMMAND_AMF3 if msg.payload.first() == Some(&0) => {
                return self.on_command(msg.stream_id, msg.payload.slice(1..));
            }
            message_type::WINDOW_ACK_SIZE => {
                let size = msg
                    .payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                self.peer_window = size.filter(|&s| s > 0);
            }
            message_type::SET_CHUNK_SIZE => {
                tracing::trace!(size = self.reader.chunk_size(), "peer chunk size");
            }
            message_type::ABORT
            | message_type::ACKNOWLEDGEMENT
            | message_type::USER_CONTROL
            | message_type::SET_PEER_BANDWIDTH => {}
            other => {
                tracing::debug!(
                    type_id = other,
                    len = msg.payload.len(),
                    "ignored RTMP message"
                );
            }
        }
        Ok(())
    }

    fn media(&mut self, tag_type: TagType, timestamp: u32, body: Bytes) {
        if self.publishing.is_none() {
            tracing::debug!(?tag_type, "media before publish ignored");
            return;
        }
        if body.is_empty() {
            return;
        }
        self.events
            .push_back(SessionEvent::Media(Tag::new(tag_type, timestamp, body)));
    }

    fn on_command(&mut self, stream_id: u32, payload: Bytes) -> Result<(), SessionError> {
        let command = match Command::parse(&payload) {
            Ok(c) => c,
            Err(e) => {
                let name = leading_name(&payload).unwrap_or("");
                if matches!(name, "connect" | "createStream" | "publish") || name.is_empty() {
                    return Err(SessionError::BadCommand(e));
                }
                // Something we would ignore anyway (`_checkbw` with an AMF3 object...).
                tracing::debug!(command = name, error = %e, "undecodable command ignored");
                return Ok(());
            }
        };
        match command {
            Command::Connect { txn, app } => {
                if self.app.is_some() {
                    return Err(SessionError::Protocol("second `connect`"));
                }
                let app = app.trim_matches('/').to_owned();
                self.on_connect(txn)?;
                self.app = Some(app.clone());
                self.events.push_back(SessionEvent::Connected { app });
            }
            Command::CreateStream { txn } => {
                if self.app.is_none() {
                    return Err(SessionError::Protocol("`createStream` before `connect`"));
                }
                if self.streams_created >= MAX_NET_STREAMS {
                    return Err(SessionError::Protocol("too many `createStream` calls"));
                }
                self.streams_created += 1;
                let id = self.streams_created;
                ScuffleCommand {
                    transaction_id: txn,
                    command_type: CommandType::NetConnection(
                        NetConnectionCommand::CreateStreamResult {
                            stream_id: f64::from(id),
                        },
                    ),
                }
                .write(&mut self.out, &self.writer)
                .map_err(encode)?;
            }
            Command::Publish { name } => {
                let Some(app) = self.app.clone() else {
                    return Err(SessionError::Protocol("`publish` before `connect`"));
                };
                if self.publishing.is_some() {
                    return Err(SessionError::Protocol("second `publish` on one connection"));
                }
                self.pending = Some(PendingPublish { stream_id });
                self.events
                    .push_back(SessionEvent::PublishRequested { app, key: name });
            }
            Command::Unpublish => self.unpublish(),
            Command::Play => {
                self.write_status(
                    stream_id,
                    CommandResultLevel::Error,
                    "NetStream.Play.Failed",
                    "this server takes publishers only; play over HTTP-FLV or WebSocket-FLV",
                )?;
                return Err(SessionError::PlayNotSupported);
            }
            // OBS and ffmpeg send these before `publish`; both accept a plain result.
            Command::Prepare { txn } => self.write_result(txn)?,
            Command::Other(name) => tracing::debug!(command = %name, "command ignored"),
        }
        Ok(())
    }

    fn unpublish(&mut self) {
        if self.publishing.take().is_some() {
            self.events.push_back(SessionEvent::Unpublished);
        }
    }

    fn on_connect(&mut self, txn: f64) -> Result<(), SessionError> {
        ProtocolControlMessageWindowAcknowledgementSize {
            acknowledgement_window_size: WINDOW_ACK_SIZE,
        }
        .write(&mut self.out, &self.writer)
        .map_err(encode)?;
        ProtocolControlMessageSetPeerBandwidth {
            acknowledgement_window_size: WINDOW_ACK_SIZE,
            limit_type: ProtocolControlMessageSetPeerBandwidthLimitType::Dynamic,
        }
        .write(&mut self.out, &self.writer)
        .map_err(encode)?;
        ProtocolControlMessageSetChunkSize {
            chunk_size: OUT_CHUNK_SIZE,
        }
        .write(&mut self.out, &self.writer)
        .map_err(encode)?;
        self.writer.set_chunk_size(OUT_CHUNK_SIZE as usize);
        ScuffleCommand {
            transaction_id: txn,
            command_type: CommandType::NetConnection(NetConnectionCommand::ConnectResult(
                NetConnectionCommandConnectResult::default(),
            )),
        }
        .write(&mut self.out, &self.writer)
        .map_err(encode)
    }

    /// `_result` with a null command object and `undefined` (releaseStream, FCPublish).
    fn write_result(&mut self, txn: f64) -> Result<(), SessionError> {
        let mut body = Vec::new();
        let mut enc = Amf0Encoder::new(&mut body);
        enc.encode_string("_result").map_err(encode)?;
        enc.encode_number(txn).map_err(encode)?;
        enc.encode_null().map_err(encode)?;
        enc.encode_undefined().map_err(encode)?;
        self.writer
            .write_chunk(
                &mut self.out,
                Chunk::new(
                    CHUNK_STREAM_ID_COMMAND,
                    0,
                    MessageType::CommandAMF0,
                    0,
                    body.into(),
                ),
            )
            .map_err(encode)
    }

    fn write_status(
        &mut self,
        stream_id: u32,
        level: CommandResultLevel,
        code: &'static str,
        description: &str,
    ) -> Result<(), SessionError> {
        let mut body = Vec::new();
        OnStatus {
            code: OnStatusCode(code),
            description: Some(description.to_owned().into()),
            level,
            others: None,
        }
        .write(&mut body, 0.0)
        .map_err(encode)?;
        self.writer
            .write_chunk(
                &mut self.out,
                Chunk::new(
                    CHUNK_STREAM_ID_STATUS,
                    0,
                    MessageType::CommandAMF0,
                    stream_id,
                    body.into(),
                ),
            )
            .map_err(encode)
    }
}

fn encode(e: impl Into<EncodeError>) -> SessionError {
    SessionError::Encode(e.into())
}

/// Which handshake a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeKind {
    /// Version field of C1 zero (librtmp/OBS, GStreamer's rtmpsink): S2 echoes C1.
    Simple,
    /// C1 carries a valid digest (FFmpeg; librtmp verifying a SWF) at the offset of
    /// this scheme (0: offset stored at byte 772, librtmp's RTMPE; 1: at byte 8, what
    /// FFmpeg and plain librtmp use).
    Digest {
        /// The digest offset scheme, which S1 uses too.
        scheme: u8,
    },
}

/// Appends S0, S1 and S2 for a client's C1 (`c1`: the 1536 bytes after C0) to `out`.
///
/// What clients check, and so what this produces:
/// - **Simple handshake** (C1 bytes 4..8 zero, as librtmp and so OBS send when not
///   verifying a SWF): librtmp compares the S2 it receives with the C1 it sent byte for
///   byte, time fields included, and logs `client signature does not match!`
///   otherwise. S2 is therefore C1, unchanged; S1 is time 0, version 0 (which also
///   tells librtmp the server does not sign) and random bytes.
/// - **Digest handshake** (C1 has a version and an HMAC-SHA256 digest keyed with
///   "Genuine Adobe Flash Player 001" at scheme 0's or 1's offset, as FFmpeg and
///   librtmp with SWF verification send): S1 carries a server version and its own
///   digest (key "Genuine Adobe Flash Media Server 001") at the same scheme's offset;
///   S2 is 1504 random bytes followed by HMAC-SHA256 of them keyed with
///   HMAC-SHA256(the 68-byte FMS key, C1's digest), which librtmp verifies ("Server
///   not genuine Adobe!" and a failed connect otherwise).
/// - A C1 with a version but no valid digest gets the simple answer.
///
/// `fill` provides the random bytes (a parameter so tests are deterministic).
pub fn handshake_reply(
    c1: &[u8],
    out: &mut Vec<u8>,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Result<HandshakeKind, ComplexHandshakeError> {
    const TIME_VERSION: usize = 8;
    debug_assert_eq!(c1.len(), RTMP_HANDSHAKE_SIZE);
    out.push(RTMP_VERSION);
    let mut s1 = vec![0u8; RTMP_HANDSHAKE_SIZE];
    fill(&mut s1[TIME_VERSION..]);
    let digest = if c1[4..8] == [0; 4] {
        None
    } else {
        DigestProcessor::new(Bytes::copy_from_slice(c1), RTMP_CLIENT_KEY_FIRST_HALF)
            .read_digest()
            .ok()
    };
    let Some((c1_digest, schema)) = digest else {
        out.extend_from_slice(&s1);
        out.extend_from_slice(c1);
        return Ok(HandshakeKind::Simple);
    };
    // S1: time 0, server version, random, its digest at the client's scheme offset.
    s1[4..8].copy_from_slice(&RTMP_SERVER_VERSION.to_be_bytes());
    let filled = DigestProcessor::new(Bytes::from(s1), RTMP_SERVER_KEY_FIRST_HALF)
        .generate_and_fill_digest(schema)?;
    out.extend_from_slice(&filled.left);
    out.extend_from_slice(&filled.digest);
    out.extend_from_slice(&filled.right);
    // S2: random, then the signature keyed with the client's digest.
    let key = DigestProcessor::new(Bytes::new(), RTMP_SERVER_KEY).make_digest(&c1_digest, &[])?;
    let mut s2 = vec![0u8; RTMP_HANDSHAKE_SIZE - RTMP_DIGEST_LENGTH];
    fill(&mut s2);
    let signature = DigestProcessor::new(Bytes::new(), &key).make_digest(&s2, &[])?;
    out.extend_from_slice(&s2);
    out.extend_from_slice(&signature);
    // scuffle's Schema0 reads the digest offset at byte 772, Schema1 at byte 8.
    let scheme = match schema {
        SchemaVersion::Schema0 => 0,
        SchemaVersion::Schema1 => 1,
    };
    Ok(HandshakeKind::Digest { scheme })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::{ChunkEncoder, FirstHeader};
    use scuffle_amf0::{Amf0Object, Amf0Value};

    /// AMF0 values of a test command.
    enum V<'a> {
        S(&'a str),
        N(f64),
        Null,
        /// `{ app: "..." }`
        App(&'a str),
    }
    use V::*;

    fn command(out: &mut Vec<u8>, stream_id: u32, values: &[V<'_>]) {
        let mut body = Vec::new();
        let mut enc = Amf0Encoder::new(&mut body);
        for v in values {
            match v {
                S(s) => enc.encode_string(s).unwrap(),
                N(n) => enc.encode_number(*n).unwrap(),
                Null => enc.encode_null().unwrap(),
                App(app) => {
                    let obj: Amf0Object<'_> =
                        [("app".into(), Amf0Value::String((*app).to_owned().into()))]
                            .into_iter()
                            .collect();
                    enc.encode_object(&obj).unwrap();
                }
            }
        }
        ChunkEncoder::new(128).message(out, 3, FirstHeader::Full, 0, 20, stream_id, &body);
    }

    fn handshake(s: &mut Session) {
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[0u8; RTMP_HANDSHAKE_SIZE]);
        s.handle_input(&c0c1).unwrap();
        let s0s1s2 = s.take_output();
        assert_eq!(s0s1s2.len(), 1 + 2 * RTMP_HANDSHAKE_SIZE);
        assert_eq!(s0s1s2[0], 3);
        assert!(!s.handshake_done());
        s.handle_input(&[0u8; RTMP_HANDSHAKE_SIZE]).unwrap();
        assert!(s.handshake_done());
    }

    fn connect_and_publish(s: &mut Session, app: &str, key: &str) {
        let mut input = Vec::new();
        command(&mut input, 0, &[S("connect"), N(1.0), App(app)]);
        command(&mut input, 0, &[S("releaseStream"), N(2.0), Null, S(key)]);
        command(&mut input, 0, &[S("createStream"), N(4.0), Null]);
        command(
            &mut input,
            1,
            &[S("publish"), N(5.0), Null, S(key), S("live")],
        );
        // Media right behind the publish, in the same read.
        ChunkEncoder::new(128).message(
            &mut input,
            4,
            FirstHeader::Full,
            7,
            8,
            1,
            &[0xAF, 0, 0x12, 0x10],
        );
        s.handle_input(&input).unwrap();
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn publish_is_held_until_answered_then_media_flows() {
        let mut s = Session::new(SessionConfig::default());
        handshake(&mut s);
        connect_and_publish(&mut s, "live/", "cam?token=x");
        assert!(matches!(s.poll_event(), Some(SessionEvent::Connected { app }) if app == "live"));
        match s.poll_event() {
            Some(SessionEvent::PublishRequested { app, key }) => {
                assert_eq!((app.as_str(), key.as_str()), ("live", "cam?token=x"));
            }
            other => panic!("expected a publish request, got {other:?}"),
        }
        assert!(
            s.poll_event().is_none(),
            "no media before the publish is accepted"
        );
        let responses = s.take_output();
        assert!(contains(&responses, b"NetConnection.Connect.Success"));
        s.accept_publish("publishing").unwrap();
        assert!(contains(&s.take_output(), b"NetStream.Publish.Start"));
        match s.poll_event() {
            Some(SessionEvent::Media(tag)) => {
                assert_eq!((tag.tag_type, tag.timestamp), (TagType::Audio, 7));
                assert!(tag.is_sequence_header());
            }
            other => panic!("expected media, got {other:?}"),
        }
        let mut input = Vec::new();
        command(&mut input, 0, &[S("FCUnpublish"), N(6.0), Null, S("cam")]);
        command(&mut input, 0, &[S("deleteStream"), N(7.0), Null, N(1.0)]);
        s.handle_input(&input).unwrap();
        assert!(matches!(s.poll_event(), Some(SessionEvent::Unpublished)));
        assert!(s.poll_event().is_none());
    }

    #[test]
    fn a_refused_publish_gets_an_error_status_and_nothing_more() {
        let mut s = Session::new(SessionConfig::default());
        handshake(&mut s);
        connect_and_publish(&mut s, "live", "cam");
        while s.poll_event().is_some() {}
        s.take_output();
        s.reject_publish(PUBLISH_BAD_NAME, "stream `cam` already has a publisher");
        let out = s.take_output();
        assert!(contains(&out, b"NetStream.Publish.BadName"));
        assert!(contains(&out, b"error"));
        s.handle_input(&[1, 2, 3]).unwrap();
        assert!(s.poll_event().is_none());
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut s = Session::new(SessionConfig::default());
        assert!(matches!(
            s.handle_input(b"\x16\x03\x01"),
            Err(SessionError::NotRtmp(0x16))
        ));

        let mut s = Session::new(SessionConfig::default());
        handshake(&mut s);
        let mut input = Vec::new();
        command(
            &mut input,
            1,
            &[S("publish"), N(5.0), Null, S("x"), S("live")],
        );
        assert!(matches!(
            s.handle_input(&input),
            Err(SessionError::Protocol(_))
        ));

        let mut s = Session::new(SessionConfig::default());
        handshake(&mut s);
        let mut input = Vec::new();
        command(&mut input, 0, &[S("connect"), N(1.0), Null]);
        assert!(matches!(
            s.handle_input(&input),
            Err(SessionError::BadCommand(..))
        ));

        let mut s = Session::new(SessionConfig::default());
        handshake(&mut s);
        let mut input = Vec::new();
        command(&mut input, 0, &[S("connect"), N(1.0), App("live")]);
        command(&mut input, 1, &[S("play"), N(3.0), Null, S("cam")]);
        assert!(matches!(
            s.handle_input(&input),
            Err(SessionError::PlayNotSupported)
        ));
        assert!(contains(&s.take_output(), b"NetStream.Play.Failed"));
    }

    /// HMAC-SHA256 (scuffle's digest helper, used here only as the primitive).
    fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let joined = parts.concat();
        DigestProcessor::new(Bytes::new(), key)
            .make_digest(&joined, &[])
            .unwrap()
    }

    /// librtmp's GenuineFPKey (first 30 bytes) and GenuineFMSKey (36 + 32 bytes).
    const FP_KEY: &[u8] = b"Genuine Adobe Flash Player 001";
    const FMS_KEY_TEXT: &[u8] = b"Genuine Adobe Flash Media Server 001";
    const FMS_KEY_TAIL: [u8; 32] = [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E,
        0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB,
        0x31, 0xAE,
    ];

    /// Digest position: scheme 0 sums the 4 bytes at 772 (librtmp's GetDigestOffset2),
    /// scheme 1 those at 8 (FFmpeg, librtmp's GetDigestOffset1).
    fn digest_pos(sig: &[u8], scheme: u8) -> usize {
        let base = if scheme == 0 { 772 } else { 8 };
        let sum: usize = sig[base..base + 4].iter().map(|&b| usize::from(b)).sum();
        sum % 728 + base + 4
    }

    /// A C1 built as librtmp (FP9) and FFmpeg build it: time, version, pseudo-random
    /// bytes, and an HMAC of everything else keyed with the Flash Player key.
    fn digest_c1(scheme: u8, seed: u8) -> Vec<u8> {
        let mut c1: Vec<u8> = (0..RTMP_HANDSHAKE_SIZE)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        c1[..4].copy_from_slice(&1234u32.to_be_bytes());
        c1[4..8].copy_from_slice(&[10, 0, 45, 2]);
        let pos = digest_pos(&c1, scheme);
        let digest = hmac(FP_KEY, &[&c1[..pos], &c1[pos + 32..]]);
        c1[pos..pos + 32].copy_from_slice(&digest);
        c1
    }

    fn counting_fill() -> impl FnMut(&mut [u8]) {
        let mut n = 1u8;
        move |bytes| {
            for b in bytes {
                *b = n;
                n = n.wrapping_add(7);
            }
        }
    }

    /// Splits S0 S1 S2.
    fn split(out: &[u8]) -> (u8, &[u8], &[u8]) {
        assert_eq!(out.len(), 1 + 2 * RTMP_HANDSHAKE_SIZE);
        let (s1, s2) = out[1..].split_at(RTMP_HANDSHAKE_SIZE);
        (out[0], s1, s2)
    }

    #[test]
    fn simple_handshake_s2_is_c1_byte_for_byte() {
        // librtmp's simple C1: uptime, four zero bytes, random.
        let mut c1: Vec<u8> = (0..RTMP_HANDSHAKE_SIZE).map(|i| (i % 251) as u8).collect();
        c1[..4].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        c1[4..8].copy_from_slice(&[0; 4]);
        let mut out = Vec::new();
        let kind = handshake_reply(&c1, &mut out, &mut counting_fill()).unwrap();
        assert_eq!(kind, HandshakeKind::Simple);
        let (s0, s1, s2) = split(&out);
        assert_eq!(s0, 3);
        assert_eq!(
            s2,
            &c1[..],
            "librtmp memcmp()s S2 with its C1, time fields too"
        );
        assert_eq!(&s1[4..8], &[0; 4], "version 0: the server does not sign");
        assert_ne!(&s1[8..], &c1[8..]);

        // The same through the session, C0+C1 arriving in two pieces.
        let mut s = Session::new(SessionConfig::default());
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&c1);
        s.handle_input(&c0c1[..700]).unwrap();
        assert!(s.take_output().is_empty());
        s.handle_input(&c0c1[700..]).unwrap();
        let out = s.take_output();
        let (s0, _, s2) = split(&out);
        assert_eq!((s0, s2), (3, &c1[..]));
        s.handle_input(&out[1..1 + RTMP_HANDSHAKE_SIZE]).unwrap();
        assert!(s.handshake_done());

        // A version without a valid digest gets the simple answer too.
        c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
        let mut out = Vec::new();
        let kind = handshake_reply(&c1, &mut out, &mut counting_fill()).unwrap();
        assert_eq!(kind, HandshakeKind::Simple);
        assert_eq!(split(&out).2, &c1[..]);
    }

    #[test]
    fn digest_handshake_s1_and_s2_verify_as_librtmp_checks_them() {
        let fms_key = [FMS_KEY_TEXT, &FMS_KEY_TAIL[..]].concat();
        for scheme in [0u8, 1] {
            for seed in [0u8, 0x5A, 0xFF] {
                let c1 = digest_c1(scheme, seed);
                let c1_pos = digest_pos(&c1, scheme);
                let c1_digest = &c1[c1_pos..c1_pos + 32];
                let mut out = Vec::new();
                let kind = handshake_reply(&c1, &mut out, &mut counting_fill()).unwrap();
                assert_eq!(kind, HandshakeKind::Digest { scheme });
                let (s0, s1, s2) = split(&out);
                assert_eq!(s0, 3);
                // S1: a version (librtmp falls back to simple on 0) and a digest keyed
                // with the first 36 bytes of the FMS key at the client's scheme.
                assert_ne!(s1[4], 0);
                let p = digest_pos(s1, scheme);
                assert_eq!(
                    hmac(FMS_KEY_TEXT, &[&s1[..p], &s1[p + 32..]]),
                    s1[p..p + 32],
                    "S1 digest, scheme {scheme}"
                );
                // S2: HMAC(HMAC(full FMS key, C1 digest), S2[..1504]) == S2[1504..].
                let key = hmac(&fms_key, &[c1_digest]);
                let (random, signature) = s2.split_at(RTMP_HANDSHAKE_SIZE - 32);
                assert_eq!(hmac(&key, &[random]), signature, "S2, scheme {scheme}");
                // The check can fail: another client digest gives another signature.
                let other_c1 = digest_c1(scheme, seed ^ 1);
                let q = digest_pos(&other_c1, scheme);
                let other = hmac(&fms_key, &[&other_c1[q..q + 32]]);
                assert_ne!(hmac(&other, &[random]), signature);
            }
        }
    }

    proptest::proptest! {
        /// What the cargo-fuzz target `fuzz/fuzz_targets/rtmp_session.rs` does, in
        /// every CI run: arbitrary bytes after a valid handshake, in arbitrary
        /// pieces, with every publish accepted, never panic; garbage with AMF0-like
        /// markers (strict/ECMA arrays, objects) is mixed in to reach the decoder.
        #[test]
        fn any_input_after_the_handshake_is_an_error_or_progress_never_a_panic(
            body in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    proptest::prelude::Just(0x0Au8),
                    proptest::prelude::Just(0x08u8),
                    proptest::prelude::Just(0x03u8),
                    proptest::prelude::Just(0xFFu8),
                ],
                0..2048,
            ),
            step in 1usize..300,
            prefix_connect in proptest::prelude::any::<bool>(),
        ) {
            let mut s = Session::new(SessionConfig::default());
            handshake(&mut s);
            let mut input = Vec::new();
            if prefix_connect {
                command(&mut input, 0, &[S("connect"), N(1.0), App("live")]);
                command(&mut input, 0, &[S("createStream"), N(2.0), Null]);
                command(&mut input, 1, &[S("publish"), N(3.0), Null, S("k"), S("live")]);
            }
            // The fuzzed bytes as the body of a command message, then raw.
            ChunkEncoder::new(128).message(&mut input, 3, FirstHeader::Full, 0, 20, 0, &body);
            input.extend_from_slice(&body);
            for piece in input.chunks(step) {
                if s.handle_input(piece).is_err() {
                    break;
                }
                while let Some(event) = s.poll_event() {
                    if matches!(event, SessionEvent::PublishRequested { .. }) {
                        let _ = s.accept_publish("ok");
                    }
                }
                let _ = s.take_output();
            }
        }
    }
}
