//! TLS for the metrics endpoint (`--metrics-secure`): the certificate in `--metrics-cert-dir`
//! (`tls.crt` and `tls.key`, as cert-manager writes a Secret's keys) or, without one, a
//! self-signed one made at start, as controller-runtime does. Prometheus, which scrapes Pod
//! IPs that no certificate names, is configured not to verify it (the ServiceMonitor's
//! `insecureSkipVerify`); what TLS buys here is that the bearer token a scraper sends cannot
//! be read off the wire.

use std::{
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::debug;

use crate::supervisor::Supervisor;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings of the metrics endpoint, from `cert_dir` or self-signed.
pub fn server_config(cert_dir: Option<&Path>) -> io::Result<Arc<ServerConfig>> {
    let (chain, key) = match cert_dir {
        Some(dir) => {
            let chain = CertificateDer::pem_file_iter(dir.join("tls.crt"))
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| io::Error::other(format!("{}: {e}", dir.join("tls.crt").display())))?;
            let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))
                .map_err(|e| io::Error::other(format!("{}: {e}", dir.join("tls.key").display())))?;
            (chain, key)
        }
        None => {
            let names = vec!["localhost".to_string(), hostname()];
            let generated = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
            let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
            (vec![generated.cert.der().clone()], key.into())
        }
    };
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Connections to the secure metrics endpoint open at once, handshakes included; the
/// accept loop waits for one to close beyond that. Its callers are a few Prometheus
/// replicas: the bound only keeps a flood of connections from growing the operator's memory
/// and tasks without end.
pub const MAX_CONNECTIONS: usize = 256;

/// A listener that hands axum connections whose TLS handshake has completed. Handshakes run
/// in tasks of their own, so a client that never finishes one holds up no other; each
/// connection holds one of [`MAX_CONNECTIONS`] permits until it closes.
pub struct TlsListener {
    connections: mpsc::Receiver<(Connection, SocketAddr)>,
    pub local_addr: SocketAddr,
}

/// A TLS connection and its permit.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

impl TlsListener {
    pub async fn bind(address: SocketAddr, config: Arc<ServerConfig>, supervisor: &Supervisor) -> io::Result<Self> {
        let tcp = TcpListener::bind(address).await?;
        let local = tcp.local_addr()?;
        let (sender, connections) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let handshakes = supervisor.clone();
        supervisor.spawn_forever("metrics TLS acceptor", async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        debug!(%error, "accepting a metrics connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                handshakes.spawn("metrics TLS handshake", async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((Connection { stream, _permit: permit }, peer)).await;
                        }
                        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { connections, local_addr: local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accepting task never stops while the listener lives (and if it did, the
            // supervisor stops the process).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_without_a_directory() {
        assert!(server_config(None).is_ok());
    }

    #[test]
    fn a_certificate_directory_is_read_and_a_missing_file_named() {
        let dir = std::env::temp_dir().join(format!("election-operator-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = server_config(Some(&dir)).expect_err("no tls.crt").to_string();
        assert!(missing.contains("tls.crt"), "{missing}");

        let generated = rcgen::generate_simple_self_signed(vec!["election-operator".to_string()]).unwrap();
        std::fs::write(dir.join("tls.crt"), generated.cert.pem()).unwrap();
        let no_key = server_config(Some(&dir)).expect_err("no tls.key").to_string();
        assert!(no_key.contains("tls.key"), "{no_key}");

        std::fs::write(dir.join("tls.key"), generated.signing_key.serialize_pem()).unwrap();
        let read = server_config(Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read.is_ok(), "{:?}", read.err());
    }
}
