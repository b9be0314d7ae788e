//! TLS for the metrics endpoint (`--metrics-secure`): the certificate in `--metrics-cert-dir`
//! (`tls.crt` and `tls.key`, as cert-manager writes a Secret's keys) or, without one, a
//! self-signed one made at start, as controller-runtime does. Prometheus, which scrapes Pod
//! IPs that no certificate names, is configured not to verify it (the ServiceMonitor's
//! `insecureSkipVerify`); what TLS buys here is that the bearer token a scraper sends cannot
//! be read off the wire.

use std::{io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::debug;

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

/// A listener that hands axum connections whose TLS handshake has completed. Handshakes run
/// in tasks of their own, so a client that never finishes one holds up no other.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    pub local_addr: SocketAddr,
}

impl TlsListener {
    pub async fn bind(address: SocketAddr, config: Arc<ServerConfig>) -> io::Result<Self> {
        let tcp = TcpListener::bind(address).await?;
        let local = tcp.local_addr()?;
        let (sender, connections) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
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
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
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
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accepting task never stops while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
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
