//! The web pages: files under `static_dir` at `/`, and the player libraries from
//! its `node_modules` at `/vendor/`. Paths that could leave the directory are
//! refused.

use std::path::{Component, Path, PathBuf};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::{Body, method_not_allowed};
use crate::state::AppState;

/// Serves the web pages from `static_dir` and `/vendor/` from its `node_modules`.
pub(crate) async fn serve(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let path = req.uri().path();
    let Some(file) = static_path(&state.config.static_dir, path) else {
        return super::text(StatusCode::NOT_FOUND, "not found");
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut res = Response::new(super::full(bytes));
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        Err(_) if path.starts_with("/vendor/") => super::text(
            StatusCode::NOT_FOUND,
            "vendor library not installed: run `npm ci --prefix static`",
        ),
        Err(_) => super::text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Maps a URL path to a file under `root`, refusing anything that could leave it.
fn static_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    let (base, rest) = match url_path.strip_prefix("/vendor/") {
        Some(rest) => (root.join("node_modules"), rest),
        None => (root.to_owned(), url_path.trim_start_matches('/')),
    };
    let rest = if rest.is_empty() || rest.ends_with('/') {
        format!("{rest}index.html")
    } else {
        rest.to_owned()
    };
    let relative = Path::new(&rest);
    let safe = relative
        .components()
        .all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.')));
    safe.then(|| base.join(relative))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths_stay_inside_the_root() {
        let root = Path::new("/srv/static");
        assert_eq!(static_path(root, "/"), Some(root.join("index.html")));
        assert_eq!(
            static_path(root, "/js/signaling.js"),
            Some(root.join("js/signaling.js"))
        );
        assert_eq!(
            static_path(root, "/vendor/mpegts.js/dist/mpegts.js"),
            Some(root.join("node_modules/mpegts.js/dist/mpegts.js"))
        );
        assert_eq!(static_path(root, "/../etc/passwd"), None);
        assert_eq!(static_path(root, "/vendor/../../x"), None);
        assert_eq!(static_path(root, "/.git/config"), None);
    }
}
