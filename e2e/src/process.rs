//! The processes the tests start locally: tied to the test's life, and reached over
//! loopback ports.

use std::{process::Command, time::Duration};

/// Makes the spawned process die when the test that started it goes, however it goes
/// (a killed test run would otherwise leave operators and electors behind to interfere
/// with the next run).
pub(crate) fn dies_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// A port free on loopback right now, below the kernel's ephemeral range (32768 and up by
/// default). A port from that range, released for an operator to bind, can be taken in the
/// meantime as the source port of any outgoing connection (the kubelet and kube-proxy make
/// many): that once failed an operator's start with "Address already in use". Ports are
/// handed out in turn, so one test process never gets the same one twice.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Test binaries run one after another; each starts at its own place in the range.
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    loop {
        let port = (LOW + (start + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// GETs a path on loopback; `Some(body)` only for a 200 within two seconds (a stopped
/// process accepts connections but never answers).
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(2), http_get_unbounded(port, path)).await.ok().flatten()
}

async fn http_get_unbounded(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}
