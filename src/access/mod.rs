//! Who may connect, publish, play and administer.
//!
//! - `admission`: every connection's permit and per-IP slot.
//! - `policy`: the reloadable policy (tokens, hooks, admin token, proxies, limits)
//!   and the publish/play decision (`policy::admit`).
//! - [`auth`]: signed, expiring publish/play tokens.
//! - `hooks`: `on_publish` / `on_play` / `on_unpublish` HTTP callbacks.
//! - `quiet`: one log line per client and refusal reason per window.

pub(crate) mod admission;
pub mod auth;
pub(crate) mod hooks;
pub(crate) mod policy;
pub(crate) mod quiet;
