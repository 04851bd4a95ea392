//! The CLI's side of the API: finds a running wrun through the data
//! directory (`api.json` and `api-token`, or `WRUN_URL` and `WRUN_TOKEN`),
//! sends requests, and turns error bodies into messages.

use super::types::ErrorBody;
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `api.json` holds: how to reach the wrun that wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The process serving it.
    pub pid: u32,
}

/// The server's error as a chain: `error` outermost, then each of
/// `causes`, so the CLI prints it as it prints its own.
fn error_of(body: ErrorBody) -> anyhow::Error {
    let mut err: Option<anyhow::Error> = None;
    for c in body.causes.iter().rev() {
        err = Some(match err {
            Some(e) => e.context(c.clone()),
            None => anyhow!("{c}"),
        });
    }
    match err {
        Some(e) => e.context(body.error),
        None => anyhow!("{}", body.error),
    }
}

/// A client of one wrun's API.
pub struct Client {
    url: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of `url` with `token`.
    pub fn new(url: &str, token: &str) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            // Uploads, deploys and imports validate and compile in the
            // request: an 18 MB Python component takes ~13 s alone, more
            // on a busy machine. Polling requests answer at once.
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Client {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent,
        }
    }

    /// The client of the wrun running on `data_dir`: `WRUN_URL` and
    /// `WRUN_TOKEN` when set, else `api.json` and `api-token` there.
    pub fn for_data_dir(data_dir: &Path) -> Result<Client> {
        let url = match std::env::var("WRUN_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                let path = super::endpoint_path(data_dir);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow!(
                        "no running wrun found for data directory {} ({}: {e}); start the job with `wrun run` using this --data-dir, or set WRUN_URL",
                        data_dir.display(),
                        path.display()
                    )
                })?;
                let ep: Endpoint = serde_json::from_str(&text)
                    .with_context(|| format!("{} is unreadable", path.display()))?;
                ep.url
            }
        };
        let token = match std::env::var("WRUN_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ => {
                let path = data_dir.join("api-token");
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        anyhow!(
                            "cannot read the API token {}: {e}; set WRUN_TOKEN",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Client::new(&url, &token))
    }

    /// The wrun on `data_dir`, if one answers.
    pub fn running(data_dir: &Path) -> Option<Client> {
        let c = Client::for_data_dir(data_dir).ok()?;
        c.get("/v1/jobs").ok().map(|_| c)
    }

    fn finish(
        &self,
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let mut resp = r.map_err(|e| {
            anyhow!(
                "cannot reach wrun at {} ({what}): {e}; is the job still running?",
                self.url
            )
        })?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(error_of(body)),
            Err(_) => bail!("{what}: wrun answered {status}"),
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(&format!("GET {path}"), r)
    }

    /// `GET path` as text (`/metrics`).
    pub fn get_text(&self, path: &str) -> Result<String> {
        let r = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        let mut resp =
            r.map_err(|e| anyhow!("cannot reach wrun at {} (GET {path}): {e}", self.url))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if !status.is_success() {
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => error_of(body),
                Err(_) => anyhow!("GET {path}: wrun answered {status}: {text}"),
            });
        }
        Ok(text)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.finish(&format!("POST {path}"), r)
    }

    /// `POST path` with raw bytes (a module upload).
    pub fn post_bytes(&self, path: &str, bytes: &[u8]) -> Result<Value> {
        let r = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/wasm")
            .send(bytes);
        self.finish(&format!("POST {path}"), r)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Value> {
        let r = self
            .agent
            .delete(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(&format!("DELETE {path}"), r)
    }

    /// `GET path`, read as `T` (one of the bodies of `api::types`).
    pub fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        serde_json::from_value(self.get(path)?)
            .with_context(|| format!("GET {path}: wrun answered a body this client cannot read"))
    }

    /// Polls request `id` until it completes or fails, calling `progress`
    /// with the elapsed time while it is in progress.
    pub fn wait(&self, id: &str, mut progress: impl FnMut(Duration)) -> Result<Value> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(10);
        loop {
            let v = self.get(&format!("/v1/requests/{id}"))?;
            let status: super::types::RequestStatus = serde_json::from_value(v.clone())
                .with_context(|| format!("wrun answered an unreadable status for request {id}"))?;
            match status.status.as_str() {
                "completed" => return Ok(v),
                "failed" => bail!(
                    "{}",
                    status.error.as_deref().unwrap_or("the request failed")
                ),
                _ => {
                    progress(started.elapsed());
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_becomes_the_same_chain() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error": "cannot deploy job 'c'", "causes": ["cannot load m", "corrupt"]}"#,
        )
        .unwrap();
        let e = error_of(body);
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        assert_eq!(chain, ["cannot deploy job 'c'", "cannot load m", "corrupt"]);
        let e = error_of(serde_json::from_str(r#"{"error": "no job 'x'"}"#).unwrap());
        assert_eq!(e.chain().count(), 1);
        assert_eq!(e.to_string(), "no job 'x'");
    }
}
