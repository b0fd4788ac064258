//! The accept loop: each connection served by hyper with a header read timeout, at most
//! `max_connections` at once, and a shutdown that stops accepting, refuses new requests on
//! open connections, and gives the requests in flight `shutdown_timeout` before the engine
//! ends them with an error.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::ServeOptions;
use super::engine::EngineStatus;

/// Resolves at SIGINT or SIGTERM.
async fn signal() {
    let terminate = async {
        #[cfg(unix)]
        {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Resolves when `shutdown` turns true.
async fn requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Serves `app` on `listener` until a shutdown is asked (by `shutdown`, or a signal with
/// `until_signal`), then shuts down within the deadline.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    options: &ServeOptions,
    shutdown: watch::Receiver<bool>,
    until_signal: bool,
    status: &EngineStatus,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let stop = async {
        if until_signal {
            tokio::select! {
                _ = signal() => {}
                _ = requested(shutdown.clone()) => {}
            }
        } else {
            requested(shutdown.clone()).await;
        }
    };
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, and go on accepting.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let header_timeout = options.header_timeout;
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            // Served to its end: at shutdown an answer in flight goes on until its
            // deadline, and the runtime closes what is left then.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        "shutting down: waiting up to {:.0} s for requests in flight",
        options.shutdown_timeout.as_secs_f64()
    );
    // New requests on open connections are refused from now on.
    status.draining.store(true, Ordering::SeqCst);
    let all = options.max_connections.max(1) as u32;
    let drained = tokio::time::timeout(options.shutdown_timeout, connections.acquire_many(all));
    if drained.await.is_err() {
        tracing::warn!("shutdown deadline reached: ending the requests still in flight");
    }
    // Whatever the engine still holds ends now, with an error event to its client.
    status.abort.store(true, Ordering::SeqCst);
    // Give those connections a moment to send that error.
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.acquire_many(all)).await;
    Ok(())
}

/// Answers a connection over the limit with 503 and closes it.
async fn refuse(stream: TcpStream) {
    let body = r#"{"error":{"message":"too many open connections; retry later","type":"server_error","param":null,"code":"overloaded"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // One small write into an empty socket buffer; the connection is then closed.
    let write = stream.writable();
    if tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .is_ok()
    {
        let _ = stream.try_write(response.as_bytes());
    }
}
