//! `lariat health`: asks a running lariat's `/health` and exits 0 on a 200. It is the
//! container image's `HEALTHCHECK`, so it needs no curl or wget in the image: one
//! HTTP/1.1 request over a plain TCP socket is all it takes.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use super::say;

/// The address to ask: `addr` if given, else the config's `server.listen` (an
/// unspecified address such as `0.0.0.0` asked on loopback), else `127.0.0.1:8080`.
pub fn target(addr: Option<&str>, listen: Option<SocketAddr>) -> Result<SocketAddr, String> {
    if let Some(addr) = addr {
        return addr
            .to_socket_addrs()
            .map_err(|e| format!("`{addr}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{addr}` resolves to no address"));
    }
    let mut listen = listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    if listen.ip().is_unspecified() {
        listen.set_ip(if listen.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    Ok(listen)
}

/// One `GET /health` to `addr` within `timeout`; success is a 200.
pub fn run(addr: SocketAddr, timeout: Duration) -> ExitCode {
    match ask(addr, timeout) {
        Ok(200) => {
            say!("lariat at {addr}: healthy");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("lariat at {addr}: unhealthy: /health answered HTTP {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lariat at {addr}: unreachable: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ask(addr: SocketAddr, timeout: Duration) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    // The status line is all that matters; 64 bytes hold it.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() {
        let n = stream.read(&mut head[read..])?;
        if n == 0 || head[..read + n].contains(&b'\n') {
            read += n;
            break;
        }
        read += n;
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {:?}", line.lines().next().unwrap_or(""))))
}
