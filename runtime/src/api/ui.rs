//! The dashboard (docs/dashboard.md): static pages built into the binary,
//! served at `/ui/`, and its login. The pages hold no data: the script
//! reads the public JSON API (`/v1/...`) with the cookie the login sets.
//!
//! - `GET /ui/`: the dashboard with a valid cookie, else the login page;
//! - `POST /ui/login` (form field `token`): sets the cookie (`HttpOnly`,
//!   `SameSite=Strict`, never in a URL) and goes to `/ui/`; a wrong token
//!   gets the login page again, saying so (and no cookie);
//! - `POST /ui/logout`: clears it;
//! - `GET /ui/assets/<file>`: the script, the style sheet, the graph layout
//!   library (dagre, vendored from npm: runtime/ui/vendor/README.md).
//!
//! Every page is sent with a Content-Security-Policy that allows scripts
//! and styles from this server only (no inline script runs, even one that
//! found its way into a page) and no framing.

use super::auth::{COOKIE, cookie, is_token};
use super::state::ApiState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;

const APP_HTML: &str = include_str!("../../ui/index.html");
const LOGIN_HTML: &str = include_str!("../../ui/login.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");
const DAGRE_JS: &str = include_str!("../../ui/vendor/dagre.min.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes (outside the API's bearer check: the pages hold
/// no data, and the login is how a browser gets its cookie).
pub(super) fn routes(_state: Arc<ApiState>) -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{file}", get(asset))
}

fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn login_with(status: StatusCode, message: &str) -> Response {
    // `message` is one of this file's constants, never user input.
    page(status, LOGIN_HTML.replace("{{message}}", message))
}

async fn index(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    match cookie(&headers, COOKIE) {
        Some(t) if is_token(&state, t) => page(StatusCode::OK, APP_HTML.to_string()),
        // The login page itself is no error (200); the API's answers to
        // a missing or wrong token are 401s.
        Some(_) => login_with(
            StatusCode::OK,
            "That token is not this wrun's (it changes when the data directory does). Sign in again.",
        ),
        None => login_with(StatusCode::OK, ""),
    }
}

async fn login_page() -> Response {
    login_with(StatusCode::OK, "")
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

fn set_cookie(value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    // The token is hex, so the value needs no quoting; a bad one is refused
    // before it gets here.
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("wrun-token=; Path=/"))
}

async fn login(
    State(state): State<Arc<ApiState>>,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let token = form.map(|f| f.0.token).unwrap_or_default();
    let token = token.trim();
    if token.is_empty() || !is_token(&state, token) {
        return login_with(
            StatusCode::OK,
            "Wrong token. It is in the data directory's api-token file (wrun serve prints where).",
        );
    }
    let mut r = Redirect::to("/ui/").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(token, None));
    r
}

async fn logout() -> Response {
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", Some(0)));
    r
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, ctype) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "dagre.min.js" => (DAGRE_JS, "text/javascript; charset=utf-8"),
        _ => {
            return super::ApiError::not_found(format!("no dashboard asset '{file}'"))
                .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
