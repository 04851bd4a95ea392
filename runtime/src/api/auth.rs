//! Bearer-token authentication: the token file of a data directory and the
//! middleware every route sits behind.

use super::error::ApiError;
use super::state::ApiState;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) async fn auth(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.as_bytes(), state.token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token; use the one in <data-dir>/api-token (or WRUN_TOKEN)".into(),
        )
        .into_response(),
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`; the token is in <data-dir>/api-token".into(),
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
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)
        .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom for an API token: {e}"))?;
    let token = blake3::hash(&seed).to_hex().to_string();
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = data_dir.join(format!(".api-token.tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", tmp.display()))?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    f.sync_all()?;
    drop(f);
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
