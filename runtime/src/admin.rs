//! The admin listener (`--admin-addr`): a JSON API of who holds what and how much traffic,
//! the operator's two actions (kick a connection, drop a reservation), `/metrics` in the
//! Prometheus text format, and a status page at `/`.
//!
//! With `--admin-token-file` every request needs `Authorization: Bearer TOKEN`, compared in
//! constant time. The decisions stay in the core: a kick and a release are inputs like any other.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tunnel_core::{requested_name, Address, ConnId, ReleaseOutcome};

use crate::accept::{accept, AcceptBackoff};
use crate::driver::{now, Driver};
use crate::metrics::STATUS_CLASSES;
use crate::net::{Accepted, Net};

/// How long a client of the admin listener may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The bearer token the admin listener requires.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl AdminToken {
    /// The token read from a file: its content without surrounding whitespace (a trailing
    /// newline is how editors save it). `None` if nothing is left.
    pub fn from_file_content(content: &str) -> Option<Self> {
        let token = content.trim();
        (!token.is_empty()).then(|| Self(Arc::from(token.as_bytes())))
    }

    /// Whether an `Authorization` header value carries this token. Constant time in the
    /// token's content, so a guess learns nothing from how long the answer took.
    fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(given) = authorization
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii)
        else {
            return false;
        };
        bool::from(given.ct_eq(&self.0))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// The token requests need, if any: replaced when the operator reconfigures (SIGHUP re-reads
/// the token file), so a rotated token takes over at once.
pub type SharedToken = Arc<std::sync::RwLock<Option<AdminToken>>>;

/// Serves the admin listener until the task is aborted.
pub async fn serve<N: Net>(driver: Arc<Driver<N>>, listener: N::Listener, token: SharedToken) {
    let mut backoff = AcceptBackoff::new("admin");
    loop {
        let Accepted { stream, peer, .. } = accept(&listener, &mut backoff).await;
        let driver = Arc::clone(&driver);
        let token = token.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let driver = Arc::clone(&driver);
                let token = token.read().unwrap_or_else(|p| p.into_inner()).clone();
                async move { Ok::<_, Infallible>(answer(&driver, token.as_ref(), request).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
}

async fn answer<N: Net>(
    driver: &Arc<Driver<N>>,
    token: Option<&AdminToken>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(token) = token {
        if !token.admits(request.headers().get(header::AUTHORIZATION)) {
            let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is needed");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tunnel admin\""),
            );
            return response;
        }
    }
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, [""]) => {
            let page = crate::admin_page::render(&snapshot(driver));
            respond(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        (&Method::GET, ["metrics"]) => {
            let text = driver.with_gateway(|gateway| driver.metrics.render(gateway));
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        (&Method::GET, ["api", "connections"]) => json_ok(&snapshot(driver).connections),
        (&Method::GET, ["api", "endpoints"]) => json_ok(&snapshot(driver).endpoints),
        (&Method::GET, ["api", "reservations"]) => json_ok(&snapshot(driver).reservations),
        (&Method::DELETE, ["api", "connections", id]) => {
            let Ok(raw) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, "a connection id is a number");
            };
            let reason = query_param(&query, "reason");
            if driver.kick(ConnId::from_raw(raw), reason).await {
                respond(StatusCode::NO_CONTENT, "text/plain", String::new())
            } else {
                error(StatusCode::NOT_FOUND, "no such connection")
            }
        }
        (&Method::DELETE, ["api", "reservations", address]) => {
            let domain = driver.with_gateway(|g| g.config().domain().to_owned());
            let address = match address.parse::<u16>() {
                Ok(port) => Address::Port(port),
                Err(_) => match requested_name(&percent_decode(address), &domain) {
                    Ok(Some(name)) => Address::Name(name),
                    _ => {
                        return error(StatusCode::BAD_REQUEST, "not a name or port of this server")
                    }
                },
            };
            match driver.release(address).await {
                ReleaseOutcome::Released => {
                    respond(StatusCode::NO_CONTENT, "text/plain", String::new())
                }
                ReleaseOutcome::Live => error(
                    StatusCode::CONFLICT,
                    "a live endpoint holds it: kick its connection first",
                ),
                ReleaseOutcome::NotHeld => error(StatusCode::NOT_FOUND, "no such reservation"),
                _ => error(StatusCode::INTERNAL_SERVER_ERROR, "unknown outcome"),
            }
        }
        (_, ["" | "metrics"] | ["api", ..]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        _ => error(StatusCode::NOT_FOUND, "no such page"),
    }
}

/// What the API and the page show, copied out of the core and the metrics at one moment.
pub(crate) struct Snapshot {
    pub(crate) connections: Vec<Value>,
    pub(crate) endpoints: Vec<Value>,
    pub(crate) reservations: Vec<Value>,
}

fn snapshot<N: Net>(driver: &Driver<N>) -> Snapshot {
    let (connections, endpoints, reservations) = driver.with_gateway(|g| {
        let now = now();
        (
            g.connections_view(now),
            g.endpoints_view(),
            g.reservations_view(now),
        )
    });
    let numbers = driver.metrics.endpoint_numbers();
    // Wall-clock times for people and scripts; the core's ages and time left are monotonic.
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let connections = connections
        .into_iter()
        .map(|c| {
            json!({
                "id": c.conn.raw(),
                "key": c.key.as_ref().map(|k| k.as_str()),
                "key_comment": c.key.as_ref().and_then(|k| driver.key_comment(k.as_str())),
                "peer": c.peer.to_string(),
                "connected_seconds": c.connected_for.as_secs(),
                "connected_since": unix_now.saturating_sub(c.connected_for.as_secs()),
                "endpoints": c.endpoints.iter().map(|e| e.raw()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let endpoints = endpoints
        .into_iter()
        .map(|e| {
            let n = numbers.get(&e.endpoint).copied().unwrap_or_default();
            let requests: serde_json::Map<String, Value> = STATUS_CLASSES
                .iter()
                .zip(n.requests)
                .map(|(class, count)| ((*class).to_owned(), json!(count)))
                .collect();
            json!({
                "id": e.endpoint.raw(),
                "connection": e.conn.raw(),
                "kind": e.kind.as_str(),
                "url": e.url,
                "address": e.address.to_string(),
                "key": e.key.as_str(),
                "visitors_now": n.visitors_now,
                "visitors_total": n.visitors_total,
                "bytes_in": n.bytes_in,
                "bytes_out": n.bytes_out,
                "requests": requests,
            })
        })
        .collect();
    let reservations = reservations
        .into_iter()
        .map(|r| {
            let (kind, address) = match &r.address {
                Address::Name(name) => ("name", json!(name.as_str())),
                Address::Port(port) => ("port", json!(port)),
            };
            json!({
                kind: address,
                "key": r.key.as_str(),
                "seconds_left": r.left.as_secs(),
                "until": unix_now + r.left.as_secs(),
            })
        })
        .collect();
    Snapshot {
        connections,
        endpoints,
        reservations,
    }
}

/// The value of `name` in a query string (`reason=too+much%20traffic`), decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
}

/// `%XX` escapes decoded; a malformed escape is kept as written, bytes that are not UTF-8
/// become U+FFFD.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                // Two hex digits make one byte: at most 0xff.
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_ok(value: &[Value]) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, "application/json", json!(value).to_string())
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        json!({ "error": message }).to_string(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = AdminToken::from_file_content("s3cret\n").expect("a token");
        let header = |v: &'static str| Some(HeaderValue::from_static(v));
        assert!(token.admits(header("Bearer s3cret").as_ref()));
        assert!(!token.admits(header("Bearer s3cre").as_ref()));
        assert!(!token.admits(header("Bearer s3cret2").as_ref()));
        assert!(!token.admits(header("Basic s3cret").as_ref()));
        assert!(!token.admits(header("s3cret").as_ref()));
        assert!(!token.admits(None));
        assert!(AdminToken::from_file_content(" \n").is_none());
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("x=1&reason=too+much%20traffic", "reason").as_deref(),
            Some("too much traffic")
        );
        assert_eq!(query_param("reason", "reason"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%e2%9c%93"), "\u{2713}");
    }
}
