//! Bearer-token authentication: the token file of a data directory and the
//! middleware every route sits behind. The dashboard's requests carry the
//! same token in a cookie (`HttpOnly`, `SameSite=Strict`, set by its login
//! page: api/ui.rs); a request that changes something with the cookie alone
//! must also carry the header `x-wrun-ui`, which no cross-site form can
//! send and no cross-site script may without a CORS answer this server
//! never gives.

use super::error::{ApiError, ErrorKind};
use super::state::ApiState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Compares in time independent of where the strings differ (`subtle`
/// keeps the compiler from turning the comparison into an early exit).
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The dashboard's cookie.
pub(super) const COOKIE: &str = "wrun-token";

/// The header a cookie-authenticated request that changes something needs.
pub(super) const UI_HEADER: &str = "x-wrun-ui";

/// The value of cookie `name` in `headers`, if any.
pub(super) fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether `given` is the API token.
pub(super) fn is_token(state: &ApiState, given: &str) -> bool {
    same(given.as_bytes(), state.token.as_bytes())
}

pub(super) async fn auth(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    if bearer.is_none()
        && let Some(t) = cookie(req.headers(), COOKIE)
        && is_token(&state, t)
    {
        let safe = matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        if !safe && !req.headers().contains_key(UI_HEADER) {
            return ApiError::new(
                ErrorKind::Forbidden,
                "a request that changes something needs the `x-wrun-ui` header besides the dashboard's cookie (cross-site requests are refused)",
            )
            .into_response();
        }
        // As if the token had come in the header: a request forwarded to
        // another node of a fleet carries it on.
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("Bearer {}", state.token)) {
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        return next.run(req).await;
    }
    match bearer {
        Some(t) if is_token(&state, t) => next.run(req).await,
        Some(_) => ApiError::new(
            ErrorKind::Unauthorized,
            "wrong bearer token; use the one in <data-dir>/api-token (or WRUN_TOKEN)",
        )
        .into_response(),
        None => ApiError::new(
            ErrorKind::Unauthorized,
            "missing `Authorization: Bearer <token>`; the token is in <data-dir>/api-token",
        )
        .into_response(),
    }
}

/// The API token of a data directory, created (mode 0600) on first use.
pub fn token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("api-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read the API token {}: {e}", path.display()),
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes for an API token: {e}"))?;
    let token = hex::encode(seed);
    // Not fsutil::write_atomic: the token must be created 0600 and the
    // first of two racing processes must win (a hard link, not a rename).
    let tmp = private_temp(data_dir, &token)?;
    // Two processes starting at once: the first link wins, both read it.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot create the API token {}: {e}", path.display()),
    }
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

/// Writes `token` to a new temporary file (mode 0600, synced) beside the
/// token file; returns its path.
fn private_temp(data_dir: &std::path::Path, token: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = data_dir.join(crate::fsutil::temp_name("api-token"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", tmp.display()))?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    f.sync_all()?;
    Ok(tmp)
}

/// Replaces the data directory's API token with `token` (a fleet's: every
/// node serves the same one), mode 0600.
pub fn set_token(data_dir: &std::path::Path, token: &str) -> anyhow::Result<()> {
    let path = data_dir.join("api-token");
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == token) {
        return Ok(());
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let tmp = private_temp(data_dir, token)?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| anyhow::anyhow!("cannot write the API token {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn a_token_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = token(dir.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(token(dir.path()).unwrap(), t);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("api-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
