//! The small services a tunnel client serves on each `forwarded-tcpip` channel it accepts. Every
//! answer names its owner, so a visitor can tell which client answered.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Shared;
use crate::http_head::{parse_request, RequestHead};

/// Byte `offset` of pattern stream `id`: depends on both, so a lost, duplicated or reordered
/// byte shows up at its offset.
pub fn pattern_byte(id: u64, offset: u64) -> u8 {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ offset.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^= x >> 32;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 56) as u8
}

/// `len` bytes of pattern stream `id` from `offset`.
pub fn pattern(id: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| pattern_byte(id, offset + i))
        .collect()
}

/// FNV-1a, to name a body by its content in a response line.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An HTTP/1.1 origin: each request gets `owner=... host=... path=... len=... hash=...`,
/// keep-alive until the channel ends.
pub async fn serve_http(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    owner: &str,
) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let head = loop {
            match parse_request(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad request head: {e}"),
                    ))
                }
            }
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        };
        let RequestHead {
            len: head_end,
            path,
            host,
            content_length,
        } = head;
        // No Content-Length means no body: the sim's visitors send every body with one.
        let length = content_length.unwrap_or(0);
        while buf.len() < head_end + length {
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        }
        // `/slow/MS...`: answer after MS milliseconds, to be caught mid-request.
        if let Some(ms) = path
            .strip_prefix("/slow/")
            .and_then(|r| r.split('/').next())
        {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        }
        let body = &buf[head_end..head_end + length];
        let answer = format!(
            "owner={owner} host={host} path={path} len={length} hash={:016x}\n",
            fnv1a(body)
        );
        buf.drain(..head_end + length);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await?;
    }
}

/// A TCP service: first `owner=...\n`, then by the visitor's first line `echo` (everything
/// back until EOF), `download ID LEN` (LEN pattern bytes, counted as written) or `upload`
/// (reads to EOF, answers `got LEN HASH`).
pub async fn serve_tcp(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    owner: &str,
    state: &Shared,
) -> io::Result<()> {
    stream
        .write_all(format!("owner={owner}\n").as_bytes())
        .await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let line_end = loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            break pos + 1;
        }
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
    };
    let line = String::from_utf8_lossy(&buf[..line_end - 1]).into_owned();
    let rest = buf.split_off(line_end);
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["echo"] => {
            stream.write_all(&rest).await?;
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                stream.write_all(&chunk[..n]).await?;
            }
            stream.shutdown().await
        }
        ["download", id, len] => {
            let (id, len): (u64, u64) = (parse(id)?, parse(len)?);
            let (mut reader, mut writer) = tokio::io::split(stream);
            let send = async {
                const CHUNK: u64 = 16 * 1024;
                let mut offset = 0;
                while offset < len {
                    let n = CHUNK.min(len - offset);
                    writer.write_all(&pattern(id, offset, n as usize)).await?;
                    offset += n;
                    state.lock().unwrap().download_written.insert(id, offset);
                }
                writer.shutdown().await
            };
            // The download stops when the visitor's side ends, as a local service's socket does
            // when OpenSSH closes it on the channel's CLOSE: russh's writer, waiting for window
            // on a closed channel, would wait for good. Bytes the visitor sends are ignored.
            let closed = async {
                let mut sink = [0u8; 1024];
                while reader.read(&mut sink).await? > 0 {}
                Err::<(), _>(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the visitor's side ended during the download",
                ))
            };
            tokio::select! {
                sent = send => sent,
                closed = closed => closed,
            }
        }
        ["upload"] => {
            let mut body = rest;
            stream.read_to_end(&mut body).await?;
            let answer = format!("got {} {:016x}\n", body.len(), fnv1a(&body));
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await
        }
        ["sleep", ms] => {
            // Holds the channel open without traffic, then closes it.
            tokio::time::sleep(Duration::from_millis(parse(ms)?)).await;
            stream.shutdown().await
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown command {line:?}"),
        )),
    }
}

fn parse<T: std::str::FromStr>(text: &str) -> io::Result<T> {
    text.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad number {text:?}")))
}

async fn read_more(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}
