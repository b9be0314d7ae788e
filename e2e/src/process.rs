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

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
