//! WASI for guests whose toolchain imports it (componentize-py, -js,
//! wasi-libc C), with nothing granted: no preopened directories, no
//! environment, no arguments, no network, no stdin. Stdout and stderr go
//! into wrun's log, line by line.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// A WASI context that grants nothing.
pub(super) fn locked_down(who: &Arc<str>) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(GuestOutput {
            who: who.clone(),
            stream: "stdout",
        })
        .stderr(GuestOutput {
            who: who.clone(),
            stream: "stderr",
        })
        .allow_blocking_current_thread(true)
        // wasmtime-wasi's defaults already refuse every address; say so
        // explicitly, so a later default cannot open the network.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Guest stdout or stderr, into the log.
struct GuestOutput {
    who: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineLogger {
            who: self.who.clone(),
            stream: self.stream,
            buf: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            who: self.who.clone(),
            stream: self.stream,
            buf: Vec::new(),
        })
    }
}

/// Buffers bytes and logs each complete line.
struct LineLogger {
    who: Arc<str>,
    stream: &'static str,
    buf: Vec<u8>,
}

const MAX_PENDING: usize = 8 * 1024;

impl LineLogger {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if self.buf.len() > MAX_PENDING {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        tracing::info!(target: "wrun::guest", operator = &*self.who, stream = self.stream, "{}", String::from_utf8_lossy(line));
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

impl OutputStream for LineLogger {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineLogger {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
