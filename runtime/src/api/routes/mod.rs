//! The routes, a file per resource, and the router with its
//! authentication, body limits and JSON fallbacks (404 for an unknown
//! route, 405 for a method a route does not take). Handlers read their
//! input only through `api/extract.rs`.

mod checkpoints;
mod jobs;
mod live;
mod meta;
mod modules;
mod requests;
mod savepoints;

pub use checkpoints::checkpoint_rows;
pub(crate) use jobs::summaries;

use super::MAX_BODY_BYTES;
use super::error::{ApiError, ErrorKind};
use super::state::ApiState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use std::sync::Arc;

/// The routes, with authentication and the body limits.
pub fn router(state: Arc<ApiState>) -> Router {
    let module_limit = state.modules.as_ref().map(|m| m.max_bytes).unwrap_or(0);
    Router::new()
        .route("/v1/info", get(meta::info))
        .route("/metrics", get(meta::metrics))
        .route(
            "/v1/modules",
            get(modules::list_modules)
                .post(modules::push_module)
                .layer(DefaultBodyLimit::max(
                    // Room for the request around the module; the exact limit
                    // is checked on the bytes.
                    module_limit.saturating_add(4096),
                )),
        )
        .route("/v1/modules/{module}", get(modules::get_module))
        .route("/v1/jobs", get(jobs::list_jobs).post(jobs::deploy))
        .route("/v1/savepoint-imports", post(savepoints::import_savepoint))
        .route("/v1/jobs/{job}", get(jobs::job_status))
        .route("/v1/jobs/{job}/graph", get(live::job_graph))
        .route("/v1/jobs/{job}/metrics", get(live::job_metrics))
        .route("/v1/events", get(live::events))
        .route("/v1/jobs/{job}/checkpoints", post(jobs::trigger_checkpoint))
        .route("/v1/jobs/{job}/savepoints", post(jobs::trigger_savepoint))
        .route("/v1/jobs/{job}/rescale", post(jobs::rescale_job))
        .route("/v1/jobs/{job}/cancel", post(jobs::cancel_job))
        .route("/v1/requests/{id}", get(requests::request_status))
        .route("/v1/checkpoints", get(checkpoints::list_checkpoints))
        .route("/v1/nodes", get(super::cluster::list_nodes))
        .route("/v1/nodes/{node}/drain", post(super::cluster::drain_node))
        .route("/v1/savepoints", get(savepoints::list_savepoints))
        .route(
            "/v1/savepoints/{id}",
            get(savepoints::get_savepoint).delete(savepoints::dispose_savepoint),
        )
        .fallback(|| async { ApiError::not_found("no such route; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorKind::MethodNotAllowed,
                "this route does not take that method; see docs/api.md",
            )
        })
        // Inside the token check: only an authorized request is forwarded.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::cluster::forward,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::auth::auth,
        ))
        .merge(super::ui::routes(state.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::requests::MAX_IN_FLIGHT_PER_JOB;
    use crate::api::types::{DeployRequest, ErrorBody};
    use crate::api::{ApiError, Deployer};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use tower::ServiceExt;

    const TOKEN: &str = "t0ken";

    /// Records what it was asked to deploy, deploys nothing.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<DeployRequest>>);

    impl Deployer for Recorder {
        fn deploy(&self, req: DeployRequest) -> Result<crate::exec::JobStatus, ApiError> {
            let name = "deployed".to_string();
            self.0.lock().unwrap().push(req);
            Ok(crate::exec::JobControl::new(&name).status())
        }
        fn rescaled(&self, job: &str, parallelism: u32) -> Result<DeployRequest, ApiError> {
            Ok(DeployRequest {
                manifest: format!("name = \"{job}\""),
                parallelism: Some(parallelism),
                ..Default::default()
            })
        }
        fn settle(&self, _: &str) {}
    }

    /// An API with job `j`, whose coordinator is a channel the test holds:
    /// every trigger that reaches the job is a message on it.
    struct Api {
        state: Arc<ApiState>,
        deployer: Arc<Recorder>,
        // Held so that triggers reach a live coordinator (the type is the
        // job's own, not nameable here).
        coordinator: Box<dyn std::any::Any>,
        triggers: Box<dyn Fn() -> usize>,
    }

    fn api() -> Api {
        let state = ApiState::new(
            TOKEN.into(),
            "serve",
            Arc::new(crate::checkpoint::CheckpointStore::in_memory()),
            crate::datadir::Registries::new(vec![Arc::new(
                crate::checkpoint::MemorySavepoints::default(),
            )]),
            None,
        );
        let deployer = Arc::new(Recorder::default());
        state.set_deployer(deployer.clone());
        let control = crate::exec::JobControl::new("j");
        let (tx, rx) = std::sync::mpsc::channel();
        control.attach(
            Some(crate::exec::Controls(tx)),
            Arc::new(AtomicBool::new(false)),
        );
        state.add_job("j", control);
        let rx = Arc::new(Mutex::new(rx));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (rx.clone(), seen.clone());
        Api {
            state,
            deployer,
            coordinator: Box::new(rx),
            triggers: Box::new(move || {
                let rx = r.lock().unwrap();
                let mut seen = s.lock().unwrap();
                while let Ok(m) = rx.try_recv() {
                    seen.push(m);
                }
                seen.len()
            }),
        }
    }

    async fn call(api: &Api, method: &str, uri: &str, body: &str) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = router(api.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, ct, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Asserts the answer is the documented JSON error with `status`;
    /// returns its message.
    async fn refused(api: &Api, method: &str, uri: &str, body: &str, status: u16) -> String {
        let (got, ct, text) = call(api, method, uri, body).await;
        assert_eq!(got.as_u16(), status, "{method} {uri} {body}: {text}");
        assert_eq!(ct, "application/json", "{method} {uri}: {text}");
        let e: ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {uri}: not the error JSON ({e}): {text}"));
        e.error
    }

    #[tokio::test]
    async fn a_malformed_path_or_query_is_a_json_400() {
        let api = api();
        let e = refused(&api, "GET", "/v1/jobs/%FF%FE", "", 400).await;
        assert!(e.contains("bad path"), "{e}");
        refused(&api, "GET", "/v1/savepoints/%FF%FE", "", 400).await;
        refused(&api, "GET", "/v1/requests/%FF", "", 400).await;
        let e = refused(&api, "GET", "/v1/checkpoints?job=a&job=b", "", 400).await;
        assert!(e.contains("duplicate"), "{e}");
        let e = refused(&api, "GET", "/v1/checkpoints?jbo=a", "", 400).await;
        assert!(e.contains("unknown field"), "{e}");
        for uri in ["/v1/jobs?x=1", "/v1/info?x", "/v1/savepoints?job=j"] {
            refused(&api, "GET", uri, "", 400).await;
        }
        refused(&api, "POST", "/v1/modules?name=a&name=b", "", 400).await;
    }

    #[tokio::test]
    async fn a_bad_job_name_is_a_400_with_the_rule() {
        let api = api();
        for uri in [
            "/v1/checkpoints?job=../../x",
            "/v1/checkpoints?job=/etc",
            "/v1/checkpoints?job=%2Fetc",
            "/v1/checkpoints?job=",
            "/v1/jobs/..%2F..%2Fx",
            "/v1/jobs/.hidden",
        ] {
            let e = refused(&api, "GET", uri, "", 400).await;
            assert!(e.contains("invalid job name"), "{uri}: {e}");
            assert!(e.contains("ASCII letters"), "{uri}: {e}");
        }
        for uri in [
            "/v1/jobs/..%2Fx/savepoints",
            "/v1/jobs/.hidden/checkpoints",
            "/v1/jobs/a%20b/cancel",
        ] {
            let e = refused(&api, "POST", uri, "{}", 400).await;
            assert!(e.contains("invalid job name"), "{uri}: {e}");
        }
        assert_eq!((api.triggers)(), 0);
        // A valid name of no job is a 404, as before.
        refused(&api, "GET", "/v1/jobs/nope", "", 404).await;
        let (status, _, _) = call(&api, "GET", "/v1/checkpoints?job=nope", "").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn only_a_json_object_is_a_body() {
        let api = api();
        for body in ["[null, null]", "[]", "null", "\"x\"", "1"] {
            let e = refused(&api, "POST", "/v1/jobs/j/savepoints", body, 400).await;
            assert!(e.contains("JSON object"), "{body}: {e}");
        }
        assert_eq!((api.triggers)(), 0, "an array body triggered a savepoint");
        refused(&api, "POST", "/v1/jobs", r#"["version = 1"]"#, 400).await;
        refused(
            &api,
            "POST",
            "/v1/jobs",
            r#"{"manifest": "x", "mystery": 1}"#,
            400,
        )
        .await;
        refused(&api, "POST", "/v1/savepoint-imports", r#"["/tmp"]"#, 400).await;
        assert!(api.deployer.0.lock().unwrap().is_empty());
        // An object (or nothing) does trigger.
        let (status, _, text) = call(&api, "POST", "/v1/jobs/j/savepoints", "").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        let (status, _, text) =
            call(&api, "POST", "/v1/jobs/j/savepoints", r#"{"name": "n"}"#).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        assert_eq!((api.triggers)(), 2);
        let (status, _, text) = call(
            &api,
            "POST",
            "/v1/jobs",
            r#"{"manifest": "version = 1", "parallelism": 2}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        assert_eq!(api.deployer.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_json() {
        let api = api();
        refused(&api, "GET", "/v2/nothing", "", 404).await;
        refused(&api, "GET", "/v1/jobs/j/cancel", "", 405).await;
        refused(&api, "DELETE", "/v1/jobs", "", 405).await;
        let (status, _, _) = call(&api, "GET", "/v1/jobs", "").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_job_takes_a_bounded_number_of_triggers_at_once() {
        let api = api();
        for _ in 0..MAX_IN_FLIGHT_PER_JOB {
            let (status, _, text) = call(&api, "POST", "/v1/jobs/j/checkpoints", "").await;
            assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        }
        let e = refused(&api, "POST", "/v1/jobs/j/checkpoints", "", 429).await;
        assert!(e.contains("in progress"), "{e}");
        assert_eq!((api.triggers)(), MAX_IN_FLIGHT_PER_JOB);
        drop(api.coordinator);
    }

    #[tokio::test]
    async fn an_unknown_request_is_a_404_that_says_it_may_have_expired() {
        let api = api();
        let e = refused(&api, "GET", "/v1/requests/req-99", "", 404).await;
        assert!(e.contains("expired or unknown"), "{e}");
    }
}
