//! node-media-server (nms) as a peer in `live`: installed with npm into a cache
//! directory once, started by a small launcher script on loopback with free ports.
//!
//! nms 2.x has no listen-address option: `NodeRtmpServer::run` and
//! `NodeHttpServer::run` call `server.listen(port, callback)`, which binds the
//! wildcard address, and a port of 0 falls back to its defaults (1935, 80). The
//! launcher therefore wraps `net.Server.prototype.listen` before loading nms: a call
//! whose first argument is a port number is rewritten to
//! `listen({ port: 0, host: '127.0.0.1' }, callback)`. Once both servers listen it
//! prints `listening rtmp://…` / `listening http://…` like wsrelay, so the harness
//! finds the ports the same way. Its WebSocket server shares the HTTP server.
//!
//! Configuration: RTMP chunk size 60,000, GOP cache on, no auth, no transcoding,
//! relay or API, `logType` 0 (no logs). It exits when the harness (its parent) is
//! gone, so an interrupted run leaves no node process behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The version compared.
pub const VERSION: &str = "2.7.4";

/// The launcher (see the module docs). `argv[2]` is the npm prefix nms is in.
const LAUNCHER: &str = r#"// Written by the wsrelay load harness (benches/load/nms.rs); rewritten each run.
'use strict';
const net = require('net');
const path = require('path');

// nms 2.x calls server.listen(port, cb): wildcard address, and port 0 means its
// default. Put every listener on 127.0.0.1 and a free port instead.
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number') {
    args[0] = { port: 0, host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};

const NodeMediaServer = require(path.join(process.argv[2], 'node_modules', 'node-media-server'));
const nms = new NodeMediaServer({
  logType: 0,
  rtmp: { port: 1935, chunk_size: 60000, gop_cache: true, ping: 30, ping_timeout: 60 },
  http: { port: 8000, allow_origin: '*', api: false },
});
nms.run();

const announce = (server, scheme) => {
  const say = () => {
    const a = server.address();
    process.stdout.write(`listening ${scheme}://${a.address}:${a.port}\n`);
  };
  if (server.listening) say(); else server.once('listening', say);
};
announce(nms.nrs.tcpServer, 'rtmp');
announce(nms.nhs.httpServer, 'http');

// Gone with the harness.
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 1000).unref();
"#;

/// An installed nms and how to start it.
#[derive(Debug)]
pub struct Nms {
    /// `node`.
    pub node: PathBuf,
    /// The npm prefix (`DIR/node_modules/node-media-server`).
    pub dir: PathBuf,
    /// The launcher script.
    pub launcher: PathBuf,
}

fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The installed version under `dir`, if any.
fn installed(dir: &Path) -> Option<String> {
    let pkg = dir.join("node_modules/node-media-server/package.json");
    let text = std::fs::read_to_string(pkg).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_owned)
}

/// Installs nms [`VERSION`] into `dir` unless it is there already, and writes the
/// launcher into `out_dir`.
pub fn prepare(dir: &Path, out_dir: &Path) -> Result<Nms, String> {
    let node_version = tool_version("node").ok_or(
        "the nms peer needs Node.js (`node` on PATH; Node 16 or later), or pass --no-peer",
    )?;
    if installed(dir).as_deref() != Some(VERSION) {
        tool_version("npm").ok_or("the nms peer needs npm on PATH, or pass --no-peer")?;
        let tmp = dir.with_extension("installing");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        eprintln!(
            "installing node-media-server@{VERSION} into {} (once; node {node_version})",
            dir.display()
        );
        let status = Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&tmp)
            .arg(format!("node-media-server@{VERSION}"))
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if !status.success() || installed(&tmp).as_deref() != Some(VERSION) {
            return Err(format!(
                "npm install node-media-server@{VERSION} failed ({status}); pass --no-peer to skip nms"
            ));
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::rename(&tmp, dir)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), dir.display()))?;
    }
    let launcher = out_dir.join("nms-launch.js");
    std::fs::write(&launcher, LAUNCHER)
        .map_err(|e| format!("cannot write {}: {e}", launcher.display()))?;
    let abs = |p: &Path| std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()));
    Ok(Nms {
        node: PathBuf::from("node"),
        dir: abs(dir)?,
        launcher: abs(&launcher)?,
    })
}
