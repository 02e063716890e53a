//! hyper answers some requests itself, before our service sees them: a request line or header
//! it cannot parse (400), a head larger than its buffer or with too many headers (431), a URI
//! past its own limit (414). Those answers have an empty body, so a client would meet the
//! only errors of the API that are not in its JSON shape. hyper has no hook for them, so the
//! connection's write side recognises them — hyper writes them as a lone head with
//! `content-length: 0`, which no answer of ours is, since every error of ours has a JSON body —
//! and writes the JSON answer in their place. hyper closes the connection after each of them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::ErrorBody;

/// A connection whose automatic error answers are rewritten into the API's JSON shape.
pub(super) struct JsonAutomaticErrors<S> {
    inner: S,
    /// The JSON answer still to write, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonAutomaticErrors<S> {
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The JSON answer for hyper's automatic answer `head`, if `head` is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let (status, code, message) = match rest.get(..4)? {
        b"400 " => (
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1: its request line or a header could not be parsed",
        ),
        b"414 " => (
            "414 URI Too Long",
            "uri_too_long",
            "the request's URI is longer than the server reads",
        ),
        b"431 " => (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            "the request's headers are larger than the server reads (64 KiB and 100 headers at most)",
        ),
        _ => return None,
    };
    if !head.ends_with(b"\r\n\r\n") || !contains(head, b"\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body = serde_json::to_vec(&ErrorBody {
        error: crate::api::ErrorDetail {
            code,
            message: message.to_owned(),
            field: None,
        },
    })
    .ok()?;
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl<S: AsyncWrite + Unpin> JsonAutomaticErrors<S> {
    /// Writes what is pending; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.pending {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            if *written == answer.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `first` (the start of what hyper writes) as written when it is an automatic
    /// answer, keeping the JSON one to write instead.
    fn intercept(&mut self, first: &[u8], total: usize) -> Option<usize> {
        // The cheap test first: every answer but an error starts otherwise.
        if !first.starts_with(b"HTTP/1.1 4") {
            return None;
        }
        let answer = replacement(first)?;
        self.pending = Some((answer, 0));
        Some(total)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonAutomaticErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonAutomaticErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(n) = self.intercept(buf, buf.len()) {
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // An automatic answer is a head alone: one slice.
        if let [only] = bufs
            && let Some(n) = self.intercept(only, only.len())
        {
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::replacement;

    #[test]
    fn only_bodiless_error_heads_are_replaced() {
        let auto =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(replacement(auto).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));
        // An answer of ours has a body; other statuses are never hyper's.
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 80\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
    }
}
