//! The client socket as hyper sees it: reads tell the connection's watchdog when a
//! request begins to arrive, and hyper's own bodiless answers to requests it cannot
//! parse are given an OpenAI-shaped body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::connection::Activity;

pin_project_lite::pin_project! {
    /// The socket, noting when the bytes of a new request begin to arrive, and
    /// giving hyper's own answers to malformed requests an OpenAI-shaped body.
    pub(super) struct Watched {
        #[pin]
        inner: TcpStream,
        activity: Arc<Activity>,
        // A replacement response being written, and how much of it is out.
        pending: Option<(Vec<u8>, usize)>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read_some();
        }
        result
    }
}

impl Watched {
    pub(super) fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        Self { inner, activity, pending: None }
    }

    /// Writes out what is left of a replacement response.
    fn poll_pending(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut this = self.project();
        while let Some((bytes, written)) = this.pending.as_mut() {
            if *written == bytes.len() {
                *this.pending = None;
                break;
            }
            match this.inner.as_mut().poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.as_mut().poll_pending(cx))?;
        if let Some(replacement) = json_parse_error(buf) {
            *self.as_mut().project().pending = Some((replacement, 0));
            // Claimed as written: the replacement goes out on this and later polls.
            let _ = self.as_mut().poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.as_mut().poll_pending(cx))?;
        let first = bufs.iter().find(|b| !b.is_empty());
        if let Some(replacement) = first.and_then(|b| json_parse_error(b)) {
            *self.as_mut().project().pending = Some((replacement, 0));
            let _ = self.as_mut().poll_pending(cx)?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.as_mut().poll_pending(cx))?;
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.as_mut().poll_pending(cx))?;
        self.project().inner.poll_shutdown(cx)
    }
}

/// hyper answers a request it cannot parse by itself, with an empty body: 400
/// (malformed line, header or `Content-Length`), 414 or 431. Such a head (the only
/// bodiless 4xx lariat ever sends: every answer of its own is JSON) is swapped for
/// the same status with an OpenAI-shaped error.
fn json_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let (status, reason, message) = if head.starts_with(b"HTTP/1.1 400 ") {
        ("400", "Bad Request", "the request is not valid HTTP/1.1 (a malformed request line, header or Content-Length)")
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431",
            "Request Header Fields Too Large",
            "the request's headers are too large or too many (server.max_header_bytes)",
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        ("414", "URI Too Long", "the request's URL is too long")
    } else {
        return None;
    };
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    if !(text.ends_with("\r\n\r\n") && text.contains("\r\ncontent-length: 0\r\n") && !text.contains("content-type")) {
        return None;
    }
    let body = serde_json::json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": "invalid_request"
    }})
    .to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}
