//! The web pages at `/`: the copy of `static/` built into the binary (the pages and
//! the vendored player libraries under `/vendor/`, see `build.rs`), or the files of
//! `static_dir` when one is configured (for developing the pages without rebuilding).
//! Paths that could leave the directory are refused.

use std::path::Path;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::{Body, method_not_allowed};
use crate::config::Config;
use crate::state::AppState;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/static_files.rs"));
}

/// Where the pages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source<'a> {
    /// The copy built into the binary (no `static_dir` configured).
    Embedded,
    /// A directory given as `static_dir` (`--static-dir`); it replaces the embedded
    /// pages entirely, `/vendor/` included.
    Dir(&'a Path),
}

/// The source the server serves `config`'s pages from.
pub(crate) fn source(config: &Config) -> Source<'_> {
    match &config.static_dir {
        None => Source::Embedded,
        Some(dir) => Source::Dir(dir),
    }
}

/// Serves a page or a vendored library.
pub(crate) async fn serve(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let path = req.uri().path();
    let Some(rel) = relative_path(path) else {
        return super::text(StatusCode::NOT_FOUND, "not found");
    };
    match source(&state.config) {
        Source::Embedded => match lookup(&rel) {
            Some((bytes, hash)) => {
                let etag = format!("\"{hash:016x}\"");
                let fresh = req
                    .headers()
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
                let mut res = if fresh {
                    let mut res = Response::new(super::full(Vec::new()));
                    *res.status_mut() = StatusCode::NOT_MODIFIED;
                    res
                } else {
                    Response::new(super::full(bytes))
                };
                let h = res.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    h.insert(header::ETAG, v);
                }
                file_headers(res, &rel)
            }
            None => super::text(StatusCode::NOT_FOUND, "not found"),
        },
        Source::Dir(dir) => match tokio::fs::read(dir.join(&rel)).await {
            Ok(bytes) => file_headers(Response::new(super::full(bytes)), &rel),
            Err(_) if rel.starts_with("vendor/") => super::text(
                StatusCode::NOT_FOUND,
                format!(
                    "player library not in static_dir {}: the binary has them built in \
                     (start it without --static-dir), or copy static/vendor/ there",
                    dir.display()
                ),
            ),
            Err(_) => super::text(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

fn file_headers(mut res: Response<Body>, rel: &str) -> Response<Body> {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(rel)),
    );
    // Revalidate every time: a new binary or an edited page shows at the next load.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// An embedded file's bytes and content hash.
fn lookup(rel: &str) -> Option<(&'static [u8], u64)> {
    let files = embedded::FILES;
    files
        .binary_search_by(|(path, _, _)| (*path).cmp(rel))
        .ok()
        .map(|i| (files[i].1, files[i].2))
}

/// Maps a URL path to a path relative to the pages' root (`/` separators), refusing
/// anything that could leave it: `..`, empty segments, dot-files, backslashes.
fn relative_path(url_path: &str) -> Option<String> {
    let rest = url_path.trim_start_matches('/');
    let rest = if rest.is_empty() || rest.ends_with('/') {
        format!("{rest}index.html")
    } else {
        rest.to_owned()
    };
    let safe = rest
        .split('/')
        .all(|s| !s.is_empty() && !s.starts_with('.') && !s.contains('\\'));
    safe.then_some(rest)
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ if path.ends_with("/LICENSE") || path.ends_with("SHA256SUMS") => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside_the_root() {
        assert_eq!(relative_path("/").as_deref(), Some("index.html"));
        assert_eq!(
            relative_path("/js/signaling.js").as_deref(),
            Some("js/signaling.js")
        );
        assert_eq!(
            relative_path("/vendor/mpegts.js/dist/mpegts.js").as_deref(),
            Some("vendor/mpegts.js/dist/mpegts.js")
        );
        assert_eq!(relative_path("/../etc/passwd"), None);
        assert_eq!(relative_path("/vendor/../../x"), None);
        assert_eq!(relative_path("/.git/config"), None);
        assert_eq!(relative_path("/js//x.js"), None);
        assert_eq!(relative_path("/js\\..\\x"), None);
    }

    #[test]
    fn the_pages_and_libraries_are_embedded() {
        let names: Vec<&str> = embedded::FILES.iter().map(|f| f.0).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "binary search needs a sorted table");
        for page in [
            "index.html",
            "player.html",
            "call.html",
            "css/wsrelay.css",
            "js/live-player.js",
            "vendor/mpegts.js/dist/mpegts.js",
            "vendor/flv.js/dist/flv.min.js",
            "vendor/mpegts.js/LICENSE",
        ] {
            let (bytes, _) = lookup(page).unwrap_or_else(|| panic!("{page} not embedded"));
            assert!(!bytes.is_empty(), "{page} is empty");
        }
        assert!(lookup("node_modules/x").is_none());
        assert!(names.iter().all(|n| !n.contains("node_modules")));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("vendor/flv.js/dist/flv.min.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("vendor/flv.js/LICENSE"),
            "text/plain; charset=utf-8"
        );
    }
}
