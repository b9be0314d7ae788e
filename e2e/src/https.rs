//! An HTTPS GET as Prometheus makes it to the operator's secure metrics endpoint: to a Pod
//! IP, with or without a bearer token, not verifying the self-signed certificate (the
//! ServiceMonitor's `insecureSkipVerify`; the handshake's signatures are still checked).

use std::{sync::Arc, time::Duration};

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// `GET https://{address}{path}`: the status code and body, `None` when no HTTPS answer came
/// within 5 s.
pub async fn https_get(address: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(5), get(address, path, token)).await.ok().flatten()
}

/// A TLS connection to `address`, not verifying the certificate (see [`AnyCertificate`]).
async fn connect(address: &str) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let name = ServerName::try_from(host.to_string()).ok()?;
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()
}

/// One kept-alive HTTPS connection that sends request after request, as a client flooding
/// an endpoint does (no handshake per request).
pub struct KeptAlive {
    address: String,
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buffer: Vec<u8>,
}

impl KeptAlive {
    pub async fn connect(address: &str) -> Option<Self> {
        Some(KeptAlive { address: address.to_string(), tls: connect(address).await?, buffer: Vec::new() })
    }

    /// `GET path` with `token`; the status code, `None` once the connection is unusable.
    pub async fn get(&mut self, path: &str, token: &str) -> Option<u16> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n", self.address);
        self.tls.write_all(request.as_bytes()).await.ok()?;
        // The head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_string();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        self.buffer.drain(..head_end + length);
        Some(status)
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.tls.read(&mut chunk).await.ok()?;
        (read > 0).then(|| self.buffer.extend_from_slice(&chunk[..read]))
    }
}

async fn get(address: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut tls = connect(address).await?;
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    // A peer that closes without close_notify still sent the whole (Content-Length) body.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Accepts any certificate, as `insecureSkipVerify` does, but checks the handshake's
/// signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, signature, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, signature, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
