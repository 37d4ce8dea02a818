//! Visitors: plain HTTP/1.1 and TCP over turmoil to the gateway, every wait bounded.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::http_head;
use crate::service::pattern;
use crate::world::{GATEWAY, HTTP_PORT};

/// How long any visitor waits for anything before calling it a failure.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// What an HTTP request came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpOutcome {
    /// A complete response.
    Response { status: u16, body: String },
    /// The connection ended (closed or reset) before a complete response.
    Cut(String),
    /// Nothing within [`PATIENCE`].
    TimedOut,
}

impl HttpOutcome {
    /// The `owner=` of a 200 from a sim service.
    pub fn owner(&self) -> Option<&str> {
        match self {
            HttpOutcome::Response { status: 200, body } => field(body, "owner"),
            _ => None,
        }
    }

    /// The status, if a response came.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpOutcome::Response { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The value of `name=` in a `k=v k=v` line.
pub fn field<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// One request with `Connection: close` to the gateway's HTTP listener.
pub async fn http_request(host: &str, method: &str, path: &str, body: &[u8]) -> HttpOutcome {
    match tokio::time::timeout(PATIENCE, http_exchange(host, method, path, body)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => HttpOutcome::Cut(e.to_string()),
        Err(_) => HttpOutcome::TimedOut,
    }
}

async fn http_exchange(
    host: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> io::Result<HttpOutcome> {
    let mut stream = TcpStream::connect((GATEWAY, HTTP_PORT)).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response).await;
    Ok(parse_response(&response).unwrap_or_else(|| {
        HttpOutcome::Cut(match read {
            Ok(_) => format!("closed after {} bytes", response.len()),
            Err(e) => e.to_string(),
        })
    }))
}

/// A complete response (head plus a body of its Content-Length, or everything after the head
/// without one), if `bytes` hold one.
fn parse_response(bytes: &[u8]) -> Option<HttpOutcome> {
    let head = http_head::parse_response(bytes).ok()??;
    let length = head.content_length.unwrap_or(bytes.len() - head.len);
    let body = bytes.get(head.len..head.len + length)?;
    Some(HttpOutcome::Response {
        status: head.status,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

/// A TCP visitor connection to an endpoint port.
pub struct TcpVisitor {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpVisitor {
    /// Connects to the gateway's `port`.
    pub async fn connect(port: u16) -> io::Result<Self> {
        let stream = tokio::time::timeout(PATIENCE, TcpStream::connect((GATEWAY, port)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Reads one line (without the newline); `None` when the stream ended first.
    pub async fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..pos]).into_owned()));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads up to `max` bytes (from the buffer first); empty at EOF.
    pub async fn read_some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        self.read_some_within(max, PATIENCE).await
    }

    /// [`Self::read_some`], giving up with `TimedOut` after `limit` with nothing to read.
    pub async fn read_some_within(&mut self, max: usize, limit: Duration) -> io::Result<Vec<u8>> {
        if self.buf.is_empty() && self.fill_within(limit).await? == 0 {
            return Ok(Vec::new());
        }
        let n = max.min(self.buf.len());
        Ok(self.buf.drain(..n).collect())
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.fill_within(PATIENCE).await
    }

    async fn fill_within(&mut self, limit: Duration) -> io::Result<usize> {
        let mut chunk = vec![0u8; 16 * 1024];
        let n = tokio::time::timeout(limit, self.stream.read(&mut chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Writes all of `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        tokio::time::timeout(PATIENCE, self.stream.write_all(bytes))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
    }

    /// Half-closes the visitor's side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

/// What an echo stream came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EchoOutcome {
    /// Every byte came back, in order, then EOF.
    Intact { owner: String },
    /// The stream ended early; what came back was a correct prefix.
    CutClean {
        owner: Option<String>,
        echoed: usize,
    },
    /// A byte came back wrong: lost, duplicated, reordered or someone else's.
    Corrupt { owner: Option<String>, at: usize },
    /// Nothing happened for [`PATIENCE`]: neither data nor a close.
    Stalled {
        owner: Option<String>,
        echoed: usize,
    },
}

/// Sends `len` pattern bytes of stream `id` to the echo service on `port` in chunks with pauses
/// drawn from `pauses`, and checks the echo byte for byte.
pub async fn echo(port: u16, id: u64, len: usize, pauses: &[(usize, Duration)]) -> EchoOutcome {
    let mut visitor = match TcpVisitor::connect(port).await {
        Ok(v) => v,
        Err(_) => {
            return EchoOutcome::CutClean {
                owner: None,
                echoed: 0,
            }
        }
    };
    let owner = match visitor.read_line().await {
        Ok(Some(line)) => line.strip_prefix("owner=").map(str::to_owned),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return EchoOutcome::Stalled {
                owner: None,
                echoed: 0,
            }
        }
        _ => {
            return EchoOutcome::CutClean {
                owner: None,
                echoed: 0,
            }
        }
    };
    let Some(owner) = owner else {
        return EchoOutcome::Corrupt { owner: None, at: 0 };
    };
    if visitor.write(b"echo\n").await.is_err() {
        return EchoOutcome::CutClean {
            owner: Some(owner),
            echoed: 0,
        };
    }
    let data = pattern(id, 0, len);
    let (mut reader, mut writer) = {
        let TcpVisitor { stream, buf } = visitor;
        let (r, w) = stream.into_split();
        ((r, buf), w)
    };
    let pauses = if pauses.is_empty() {
        vec![(len.max(1), Duration::ZERO)]
    } else {
        pauses.to_vec()
    };
    let send = async move {
        let mut sent = 0;
        for (size, pause) in pauses.iter().cycle() {
            if sent >= data.len() {
                break;
            }
            let end = (sent + (*size).max(1)).min(data.len());
            if writer.write_all(&data[sent..end]).await.is_err() {
                return;
            }
            sent = end;
            tokio::time::sleep(*pause).await;
        }
        let _ = writer.shutdown().await;
        // Keep the write half until the reader is done: dropping it early is not a half-close.
        std::future::pending::<()>().await;
    };
    let receive = async {
        let (stream, buf) = &mut reader;
        let mut got = std::mem::take(buf);
        let mut checked = 0;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            while checked < got.len() {
                if checked >= len
                    || got[checked] != crate::service::pattern_byte(id, checked as u64)
                {
                    return EchoOutcome::Corrupt {
                        owner: Some(owner.clone()),
                        at: checked,
                    };
                }
                checked += 1;
            }
            match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
                Ok(Ok(0)) if checked == len => {
                    return EchoOutcome::Intact {
                        owner: owner.clone(),
                    }
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return EchoOutcome::CutClean {
                        owner: Some(owner.clone()),
                        echoed: checked,
                    }
                }
                Err(_) => {
                    return EchoOutcome::Stalled {
                        owner: Some(owner.clone()),
                        echoed: checked,
                    }
                }
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::select! {
        outcome = receive => outcome,
        () = send => unreachable!("the sender never finishes"),
    }
}
