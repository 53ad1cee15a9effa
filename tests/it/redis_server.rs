//! A real `redis-server` on a loopback port, started and stopped by tests.
//!
//! Each `RedisServer` is its own child process (no config file, no persistence, its
//! own temp dir), so a test may stop it and bring it back on the same port to see how
//! lariat lives through an outage. `.ci/run` installs the Debian package.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running (or stopped) `redis-server` child; killed on drop.
pub struct RedisServer {
    program: PathBuf,
    port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without a password. `None` (after a note) when `redis-server`
    /// is not installed, so the caller skips; under CI=true that is a failure instead.
    pub async fn start() -> Option<Self> {
        Self::start_with(None).await
    }

    /// Starts a server that requires `password` (`--requirepass`).
    pub async fn start_with_password(password: &str) -> Option<Self> {
        Self::start_with(Some(password)).await
    }

    async fn start_with(password: Option<&str>) -> Option<Self> {
        let program = redis_program()?;
        let dir = tempfile::Builder::new().prefix("lariat-redis-").tempdir().unwrap();
        let port = free_port();
        let mut server = Self { program, port, password: password.map(str::to_owned), dir, child: None };
        server.spawn().await;
        Some(server)
    }

    /// `redis://127.0.0.1:<port>`, with the password when there is one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// `127.0.0.1:<port>`: how lariat's messages name this server.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits until it is gone; its data is lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty) and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(&self.program);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", self.program.display())));
        self.wait_until_answering().await;
    }

    /// Polls (up to 10 s) until the server answers PING; fails with its log otherwise.
    async fn wait_until_answering(&mut self) {
        for _ in 0..200 {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("redis-server exited ({status}) on port {}:\n{}", self.port, self.log());
            }
            if self.answers_ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not answer PING within 10 s:\n{}", self.port, self.log());
    }

    /// One raw RESP exchange, so the helper does not depend on the client under test.
    async fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        let mut request = String::new();
        if let Some(password) = &self.password {
            request.push_str(&format!("AUTH {password}\r\n"));
        }
        request.push_str("PING\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&answer).contains("PONG") {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
        true
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-server` from PATH (or /usr/sbin, where some distributions put it).
/// Missing: under CI=true the test fails; otherwise it says it skipped (None).
fn redis_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| works(candidate));
    if found.is_some() {
        return found;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "redis-server is required under CI=true (bash .ci/run installs the Debian package redis-server)"
    );
    eprintln!("SKIPPED: redis-server not found (bash .ci/run installs it)");
    None
}

fn works(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port nothing listens on right now. Another process could take it before
/// redis-server binds; then `spawn` fails loudly with redis-server's log.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
