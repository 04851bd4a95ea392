//! The etcd connection of a fleet node: one client on a small tokio
//! runtime of its own, so the job threads (the fence), the API's blocking
//! pool and the node's own tasks all reach etcd the same way. Blocking
//! calls ([`Etcd::block`]) are for threads outside any runtime.

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, Txn, TxnResponse};
use std::future::Future;
use std::time::Duration;

/// Why etcd did not answer.
#[derive(Debug, thiserror::Error)]
#[error("etcd at {endpoints}: {detail}")]
pub struct EtcdError {
    /// The endpoints asked.
    pub endpoints: String,
    /// What went wrong.
    pub detail: String,
}

/// A connection to the fleet's etcd cluster.
pub struct Etcd {
    /// Taken only by `drop`.
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    endpoints: String,
    /// How long one request may take.
    timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Etcd {
    /// Connects to `endpoints` (`http://HOST:PORT`), failing within
    /// `timeout` when none answers.
    pub fn connect(endpoints: &[String], timeout: Duration) -> Result<Etcd, EtcdError> {
        let joined = endpoints.join(",");
        let err = |detail: String| EtcdError {
            endpoints: joined.clone(),
            detail,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wrun etcd")
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start its runtime: {e}")))?;
        // No per-request timeout here: an election campaign waits as long
        // as another node leads. Requests made through `block` have one.
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(1), timeout);
        let client = rt
            .block_on(async {
                let mut c = Client::connect(endpoints, Some(opts)).await?;
                // The connection is lazy: ask something, so a fleet that
                // cannot be reached is an error at start.
                c.status().await?;
                Ok::<_, etcd_client::Error>(c)
            })
            .map_err(|e| {
                err(format!(
                    "{e}; is etcd running there? (--cluster etcd://HOST:PORT)"
                ))
            })?;
        Ok(Etcd {
            rt: Some(rt),
            client,
            endpoints: joined,
            timeout,
        })
    }

    /// A client to use in a task of [`Etcd::spawn`] (clients are cheap
    /// handles on one connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The endpoints, for messages.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Runs `f` on the connection's runtime.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(f)
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle().clone(),
            None => unreachable_runtime(),
        }
    }

    /// Runs `f` to completion, from a thread outside any tokio runtime,
    /// within the request timeout.
    pub fn block<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        let timeout = self.timeout;
        self.handle()
            .block_on(async move { tokio::time::timeout(timeout, f).await })
            .map_err(|_| self.error(format!("no answer within {} ms", timeout.as_millis())))?
            .map_err(|e| self.error(e.to_string()))
    }

    /// An error naming this connection.
    pub fn error(&self, detail: String) -> EtcdError {
        EtcdError {
            endpoints: self.endpoints.clone(),
            detail,
        }
    }

    /// The value and mod revision of `key`, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let mut c = self.client();
        let key = key.to_string();
        let mut r = self.block(async move { c.get(key, None).await })?;
        Ok(r.take_kvs().into_iter().next())
    }

    /// Every key under `prefix`, and the revision read at.
    pub fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let mut c = self.client();
        let prefix = prefix.to_string();
        let mut r =
            self.block(async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })?;
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        Ok((r.take_kvs(), rev))
    }

    /// Runs a transaction.
    pub fn txn(&self, txn: Txn) -> Result<TxnResponse, EtcdError> {
        let mut c = self.client();
        self.block(async move { c.txn(txn).await })
    }
}

/// `rt` is `None` only inside `drop`, where nothing calls `handle`.
fn unreachable_runtime() -> ! {
    unreachable!("the etcd connection's runtime is used after drop")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Its tasks (keep-alives, watches) end with it; none is waited for.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
