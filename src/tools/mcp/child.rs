//! A stdio MCP server as an rmcp transport: rmcp's JSON-lines framing over the
//! child's pipes, with its output read through [`lines::Filtered`] first.
//!
//! rmcp's `TokioChildProcess` owns the child's stdout, so nothing could stand between
//! the server and rmcp's decoder; this is the same transport with that seam.

use process_wrap::tokio::{ChildWrapper, CommandWrap};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::lines::Filtered;

/// How long a closed server may take to exit before it is killed.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

pub struct Child {
    io: AsyncRwTransport<RoleClient, Filtered<ChildStdout>, ChildStdin>,
    /// The process (group); killed when the transport goes.
    process: Option<Box<dyn ChildWrapper>>,
}

impl Child {
    /// Starts `command` with piped stdio; stderr is the caller's to drain.
    pub fn spawn(mut command: CommandWrap, server: &str) -> std::io::Result<(Self, Option<ChildStderr>)> {
        use std::process::Stdio;
        command.command_mut().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut process = command.spawn()?;
        let stdin = process.stdin().take().ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
        let stdout = process.stdout().take().ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        let stderr = process.stderr().take();
        let io = AsyncRwTransport::new(Filtered::new(stdout, server), stdin);
        Ok((Self { io, process: Some(process) }, stderr))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            // The whole group, now; `kill` also reaps, so no zombie is left.
            let _ = process.start_kill();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = Box::into_pin(process.kill()).await;
                });
            }
        }
    }
}

impl Transport<RoleClient> for Child {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.io.send(item)
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.io.receive()
    }

    /// Closes stdin (the MCP way to ask a stdio server to stop), waits a little,
    /// then kills.
    async fn close(&mut self) -> Result<(), Self::Error> {
        self.io.close().await?;
        if let Some(mut process) = self.process.take()
            && tokio::time::timeout(EXIT_GRACE, process.wait()).await.is_err()
        {
            Box::into_pin(process.kill()).await?;
        }
        Ok(())
    }
}
