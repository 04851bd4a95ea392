//! Starting and stopping the API server: a thread of its own with a
//! current-thread tokio runtime, so it never waits behind the subtasks;
//! work that blocks (compiles, imports, garbage collection, waiting for a
//! trigger's outcome) runs on that runtime's blocking pool.

use super::state::ApiState;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A running API server; dropping it stops the server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the API on `listen` from a thread of its own (the job's subtasks
/// are OS threads; the API must never wait behind them).
pub fn serve(listen: SocketAddr, state: Arc<ApiState>) -> anyhow::Result<Server> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen} for the control API: {e}; choose another address with --listen")
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("wrun api".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("control API: {e}");
                        return;
                    }
                };
                let app = super::router(state.clone());
                let sampler = state.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(super::history::PERIOD);
                    loop {
                        tick.tick().await;
                        sampler.history.sample(&sampler.controls());
                    }
                });
                let closing = state.clone();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                        // Event streams end, so no connection holds the
                        // shutdown up.
                        closing.closing.send_replace(true);
                    })
                    .await;
            });
            // A trigger still waiting for its job's answer holds a thread of
            // the blocking pool; the server stops without waiting for it.
            rt.shutdown_background();
        })?;
    Ok(Server {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// The file through which commands find the API of a running wrun.
pub fn endpoint_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("api.json")
}
