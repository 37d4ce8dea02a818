//! HTTP endpoints: a hyper server on the HTTP listener routes each request by Host to its
//! tunnel, and speaks HTTP/1.1 to the user's local service over a `forwarded-tcpip` channel of
//! the visitor connection's own (opened on demand, never pooled across visitors).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::header::{self, HeaderValue};
use hyper::http::uri::Authority;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use russh::server::Handle;
use tokio::sync::Mutex;
use tunnel_core::command::HttpOptions;
use tunnel_core::{request_host, EndpointId, Input, Route, VisitorRefusal};

use crate::accept::{accept, AcceptBackoff};
use crate::access_log::{AccessLog, Listener};
use crate::admission::{Admitted, VisitorPermit};
use crate::driver::{ConnectionGone, Driver};
use crate::http_headers::{prepare_request, prepare_response, wants_upgrade};
use crate::idle::{Exempt, Idle};
use crate::net::{Accepted, ByteStream, Net};
use crate::proxy_accept::proxied;

/// What a visitor gets back: the local service's body streamed, or our short text.
pub type ResponseBody = Either<Incoming, Full<Bytes>>;

/// Limits on what a visitor may send before we answer (the time limit is a setting).
const MAX_HEADERS: usize = 100;
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Pings on an idle HTTP/2 connection, and how long an answer may take.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_H2_STREAMS: u32 = 100;

/// Why a connection past `--max-visitor-connections-per-source` is closed, for the access log.
pub(crate) const TOO_MANY_FROM_SOURCE: &str = "too many connections from this source";

/// Serves the HTTP listener until it fails for good.
pub async fn serve<N: Net>(driver: Arc<Driver<N>>, listener: N::Listener) {
    let mut backoff = AcceptBackoff::new("http");
    loop {
        let accepted = accept(&listener, &mut backoff).await;
        let Some(early) = driver.count_on_accept(accepted.peer.ip()) else {
            let peer = accepted.peer;
            AccessLog::start(driver.settings().access_log, Listener::Http, peer)
                .refused(TOO_MANY_FROM_SOURCE);
            tracing::debug!(%peer, "too many connections from this source; closed");
            continue;
        };
        let driver = Arc::clone(&driver);
        tokio::spawn(async move {
            // From a trusted load balancer, its PROXY header first: the visitor it names is the
            // peer from here on (X-Forwarded-For, the per-source share).
            let Some(Accepted { stream, peer, .. }) =
                proxied(accepted, &driver.settings(), "http").await
            else {
                return;
            };
            let access = AccessLog::start(driver.settings().access_log, Listener::Http, peer);
            // Past its source's connections it is closed here, before it costs more.
            let Some(_counted) = driver.count_visitor(early, peer.ip()) else {
                access.refused(TOO_MANY_FROM_SOURCE);
                return tracing::debug!(%peer, "too many connections from this source; closed");
            };
            let stream = access.count(stream);
            serve_connection(driver, stream, peer, Scheme::Http, access).await;
        });
    }
}

/// How a visitor reached the server: the value of `X-Forwarded-Proto`, and which HTTP versions
/// it may speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// The plain HTTP listener: HTTP/1.1 only (no h2c).
    Http,
    /// TLS terminated on the https listener: HTTP/2 or HTTP/1.1, as ALPN chose.
    Https,
}

impl Scheme {
    /// The `X-Forwarded-Proto` value.
    pub fn forwarded_proto(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Serves one visitor connection: plain, or already TLS-terminated. `access` gets each
/// response's status and how the connection ended.
pub async fn serve_connection<N: Net, S: ByteStream>(
    driver: Arc<Driver<N>>,
    stream: S,
    peer: SocketAddr,
    scheme: Scheme,
    access: AccessLog,
) {
    let header_timeout = driver.settings().http_header_timeout;
    let exempt = Exempt::default();
    let stream = Idle::new(stream, driver.settings().http_idle_timeout, exempt.clone());
    let visitor = Arc::new(Visitor {
        driver: Arc::clone(&driver),
        peer,
        scheme,
        upstream: Mutex::new(None),
        quiet_allowed: exempt,
        access: access.clone(),
    });
    let service = service_fn(move |request| {
        let visitor = Arc::clone(&visitor);
        async move { Ok::<_, Infallible>(visitor.handle(request).await) }
    });
    let io = TokioIo::new(stream);
    // When the server stops, a connection finishes the request in flight and closes; an idle
    // one closes at once.
    let served = match scheme {
        // hyper-util's auto builder ignores http1_only() when serving with upgrades: it waits,
        // with no timer, for a possible HTTP/2 preface (and then speaks h2c). Plain HTTP gets
        // hyper's HTTP/1 server itself, whose header timer runs from the first byte.
        Scheme::Http => {
            let connection = server_http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_headers(MAX_HEADERS)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => served,
                () = driver.stopping() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
            .map_err(Into::into)
        }
        Scheme::Https => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_headers(MAX_HEADERS)
                .max_buf_size(MAX_HEAD_BYTES);
            builder
                .http2()
                .timer(TokioTimer::new())
                // An HTTP/2 connection that stops answering pings is gone.
                .keep_alive_interval(Some(H2_PING_INTERVAL))
                .keep_alive_timeout(H2_PING_TIMEOUT)
                .max_concurrent_streams(MAX_H2_STREAMS)
                .max_header_list_size(MAX_HEAD_BYTES as u32);
            let connection = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => served,
                () = driver.stopping() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    record_end(&access, &served);
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "http visitor connection ended with an error");
    }
}

/// How a served connection ended, for the access log: a timeout anywhere in the error's chain
/// (hyper's header timer, the idle cut) is one.
fn record_end(access: &AccessLog, served: &Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    let timed_out = |error: &(dyn std::error::Error + 'static)| {
        std::iter::successors(Some(error), |e| e.source()).any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        })
    };
    match served {
        Ok(()) => access.closed(),
        Err(error) if timed_out(&**error) => access.timed_out(),
        Err(error) => access.error(error),
    }
}

/// One visitor connection and the channel it has open to a tunnel, if any.
struct Visitor<N: Net> {
    driver: Arc<Driver<N>>,
    peer: SocketAddr,
    scheme: Scheme,
    upstream: Mutex<Option<Upstream>>,
    /// Set once the connection is upgraded: a quiet WebSocket is normal.
    quiet_allowed: Exempt,
    /// The connection's access record; an upgraded stream holds it until it ends.
    access: AccessLog,
}

/// A visitor connection's channel to a tunnel, with an HTTP/1.1 client over it. A connection
/// keeps its channel between requests.
struct Upstream {
    endpoint: EndpointId,
    sender: client::SendRequest<Incoming>,
    permit: ChannelPermit,
}

/// The permit of the visitor a channel serves. A channel holds an SSH channel and a connection
/// to the user's local service, so it counts as a visitor for as long as it lives: while a
/// response body streams after its request was answered, and while it idles in its connection's
/// cache. It gives the permit back when it ends, or when its connection's next request takes it.
#[derive(Clone, Default)]
struct ChannelPermit(Arc<std::sync::Mutex<Option<VisitorPermit>>>);

impl ChannelPermit {
    fn hold(&self, permit: VisitorPermit) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
    }

    fn release(&self) {
        // Dropped outside the lock: a permit's drop takes its route's lock.
        let permit = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(permit);
    }
}

impl<N: Net> Visitor<N> {
    async fn handle(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let mut endpoint = None;
        let response = self.answer(request, &mut endpoint).await;
        let status = response.status().as_u16();
        self.driver
            .metrics
            .http_response(endpoint.as_deref(), status);
        self.access.answered(status);
        response
    }

    /// The response to one request; `endpoint` is set to the numbers of the endpoint it was let
    /// in to.
    async fn answer(
        &self,
        request: Request<Incoming>,
        endpoint: &mut Option<Arc<crate::metrics::EndpointStats>>,
    ) -> Response<ResponseBody> {
        let started = tokio::time::Instant::now();
        // An HTTP/2 visitor sends requests concurrently: one that finds the cache in use goes
        // without it (and gets a channel of its own for this request).
        let mut slot = self.upstream.try_lock().ok();
        // The cached channel's permit goes back before this request asks for one, so that a
        // connection's idle channel never makes its own next request busy. Refused, the request
        // drops the channel with it.
        let cached = slot.as_mut().and_then(|s| s.take());
        if let Some(upstream) = &cached {
            upstream.permit.release();
        }
        let (admitted, host) = match self.admit(&request) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                self.driver.metrics.visitor_refused(&refusal);
                return refusal_page(&refusal);
            }
        };
        *endpoint = Some(Arc::clone(admitted.permit.stats()));
        let route = Arc::clone(&admitted.route);
        let Some(options) = route.policy.http() else {
            // The core routes requests to http endpoints only; this names its answer if not.
            return refusal_page(&VisitorRefusal::NotHttp(host));
        };
        let inspected = route.logs_requests().then(|| {
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            (request.method().to_string(), path.to_owned())
        });
        let response = self
            .forward(
                request,
                admitted,
                options,
                &host,
                cached,
                slot.as_deref_mut(),
            )
            .await;
        if let Some((method, path)) = inspected {
            self.driver
                .submit(Input::HttpRequestCompleted {
                    endpoint: route.endpoint,
                    method,
                    path,
                    status: response.status().as_u16(),
                    elapsed: started.elapsed(),
                })
                .await;
        }
        response
    }

    /// The request's host, and the request let in by the core's rules and its endpoint's
    /// visitor limit.
    fn admit(&self, request: &Request<Incoming>) -> Result<(Admitted, String), VisitorRefusal> {
        let host = request_host(
            request.uri().authority().map(Authority::as_str),
            request
                .headers()
                .get_all(header::HOST)
                .iter()
                .map(HeaderValue::as_bytes),
        )?;
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let visit = self.driver.visit_by_host(host)?;
        self.access.reached(&visit.route.address);
        let admitted = visit.admit_request(self.peer.ip(), authorization)?;
        Ok((admitted, host.to_owned()))
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        admitted: Admitted,
        options: &HttpOptions,
        host: &str,
        cached: Option<Upstream>,
        slot: Option<&mut Option<Upstream>>,
    ) -> Response<ResponseBody> {
        let Admitted {
            route,
            handle,
            permit,
            gone,
        } = admitted;
        let (route, handle) = (&*route, &handle);
        let upgrade = wants_upgrade(request.headers());
        let keep_alive = keeps_alive(&request);
        // RFC 9112 §6.3: a chunked request may also have carried a Content-Length (hyper keeps
        // Transfer-Encoding and drops the length, so the local side sees one framing); such a
        // message may be a smuggling attempt, and the connection must close after answering.
        let close_after = request.version() == hyper::Version::HTTP_11
            && request.headers().contains_key(header::TRANSFER_ENCODING);
        let visitor_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        prepare_request(
            request.headers_mut(),
            self.peer.ip(),
            &self.driver.settings().trusted_proxies,
            self.scheme,
            host,
            options,
            upgrade,
        );
        *request.uri_mut() = origin_form(request.uri());
        // The local side always speaks HTTP/1.1, whatever the visitor speaks.
        *request.version_mut() = hyper::Version::HTTP_11;

        let mut upstream = match cached {
            Some(u) if u.endpoint == route.endpoint && !u.sender.is_closed() => u,
            _ => match self.open(route, handle, gone.clone()).await {
                Ok(upstream) => upstream,
                Err(refusal) => return refusal_page(&refusal),
            },
        };
        if upstream.sender.ready().await.is_err() {
            upstream = match self.open(route, handle, gone.clone()).await {
                Ok(upstream) => upstream,
                Err(refusal) => return refusal_page(&refusal),
            };
        }
        let mut response = match upstream.sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, "request through the tunnel failed");
                return refusal_page(&VisitorRefusal::NoAnswer);
            }
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        match (switching, visitor_upgrade) {
            (true, Some(visitor_upgrade)) => {
                self.quiet_allowed.set();
                let local_upgrade = hyper::upgrade::on(&mut response);
                let driver = Arc::clone(&self.driver);
                let access = self.access.clone();
                tokio::spawn(async move {
                    // An upgraded stream is a visitor for as long as it lives.
                    let _counted = permit;
                    if let (Ok(visitor), Ok(local)) = tokio::join!(visitor_upgrade, local_upgrade) {
                        let (visitor, local) = (TokioIo::new(visitor), TokioIo::new(local));
                        if crate::tcp::pipe(&driver, visitor, local, Vec::new(), gone).await {
                            access.closed();
                        } else {
                            access.cut();
                        }
                    }
                });
            }
            // After an upgrade the channel belongs to it; otherwise it holds this request's
            // permit and is kept for the connection's next request, unless there will be none.
            _ => {
                upstream.permit.hold(permit);
                if let Some(slot) = slot.filter(|_| keep_alive && !close_after) {
                    *slot = Some(upstream);
                }
            }
        }
        prepare_response(response.headers_mut(), options, switching);
        if close_after && !switching {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.map(Either::Left)
    }

    /// Opens this visitor's channel to the tunnel and an HTTP/1.1 client connection over it.
    async fn open(
        &self,
        route: &Route,
        handle: &Handle,
        gone: ConnectionGone,
    ) -> Result<Upstream, VisitorRefusal> {
        let channel = crate::tcp::open_channel(&self.driver, route, handle, self.peer).await?;
        // A clean end sends EOF and lets the client close; a broken one closes from here.
        let (io, closer) = crate::channel_io::split(channel, &self.driver.spills);
        let io = io.counted(self.driver.metrics.endpoint(route.endpoint));
        let (sender, connection) = client::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|_| VisitorRefusal::TunnelClosed)?;
        let permit = ChannelPermit::default();
        let held = permit.clone();
        let driver = Arc::clone(&self.driver);
        tokio::spawn(async move {
            driver.stats.active_streams.fetch_add(1, Ordering::Relaxed);
            // The connection's end ends this one too (see tcp::pipe).
            let clean = tokio::select! {
                ended = connection.with_upgrades() => ended.is_ok(),
                () = gone.wait() => false,
            };
            if !clean {
                let _ = closer.close().await;
            }
            held.release();
            driver.stats.active_streams.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(Upstream {
            endpoint: route.endpoint,
            sender,
            permit,
        })
    }
}

/// Whether the visitor's connection stays open after this request (RFC 9112 §9.3): HTTP/2
/// always, HTTP/1.1 unless it says `close`, HTTP/1.0 only if it asks for `keep-alive`.
fn keeps_alive<B>(request: &Request<B>) -> bool {
    let tokens = || {
        request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
    };
    match request.version() {
        hyper::Version::HTTP_10 => tokens().any(|t| t.eq_ignore_ascii_case("keep-alive")),
        hyper::Version::HTTP_11 => !tokens().any(|t| t.eq_ignore_ascii_case("close")),
        _ => true,
    }
}

/// The request target as the local service expects it: origin-form (`/path?query`).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if uri.authority().is_some() => pq
            .as_str()
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/")),
        _ => uri.clone(),
    }
}

/// The answer to a visitor the core refused, all of it the core's: status, text and challenge.
fn refusal_page(refusal: &VisitorRefusal) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(refusal.page()))));
    // Every status the core gives is a valid one; 500 would point at a bug there.
    *response.status_mut() =
        StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(challenge) = refusal.www_authenticate() {
        if let Ok(challenge) = HeaderValue::from_str(challenge) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets_reach_the_local_service_in_origin_form() {
        let uri: Uri = "http://a.localhost:8080/x?y".parse().expect("valid uri");
        assert_eq!(origin_form(&uri), "/x?y");
    }

    #[test]
    fn a_connection_is_kept_alive_as_its_version_and_connection_header_say() {
        let request = |version, connection: Option<&str>| {
            let mut builder = Request::builder().version(version);
            if let Some(value) = connection {
                builder = builder.header(header::CONNECTION, value);
            }
            builder.body(()).expect("valid request")
        };
        use hyper::Version;
        assert!(keeps_alive(&request(Version::HTTP_11, None)));
        assert!(keeps_alive(&request(Version::HTTP_11, Some("Keep-Alive"))));
        assert!(!keeps_alive(&request(Version::HTTP_11, Some("foo, Close"))));
        assert!(!keeps_alive(&request(Version::HTTP_10, None)));
        assert!(keeps_alive(&request(Version::HTTP_10, Some("keep-alive"))));
        assert!(keeps_alive(&request(Version::HTTP_2, None)));
    }

    #[test]
    fn origin_form_targets_pass_unchanged() {
        let uri: Uri = "/path?q=1".parse().expect("valid uri");
        assert_eq!(origin_form(&uri), uri);
        let star: Uri = "*".parse().expect("valid uri");
        assert_eq!(origin_form(&star), star);
    }

    async fn body(response: Response<ResponseBody>) -> Bytes {
        use http_body_util::BodyExt as _;
        match response.into_body() {
            Either::Right(full) => full.collect().await.expect("infallible").to_bytes(),
            Either::Left(_) => panic!("a refusal is answered here, not by the local service"),
        }
    }

    #[tokio::test]
    async fn a_refusal_page_is_the_cores_status_text_and_challenge() {
        for refusal in [
            VisitorRefusal::MissingHost,
            VisitorRefusal::UnknownHost("x.localhost".into()),
            VisitorRefusal::Forbidden,
            VisitorRefusal::Unauthorized,
            VisitorRefusal::Busy,
            VisitorRefusal::NoAnswer,
        ] {
            let page = refusal_page(&refusal);
            assert_eq!(page.status().as_u16(), refusal.http_status(), "{refusal:?}");
            assert_eq!(
                page.headers()
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().expect("ascii")),
                refusal.www_authenticate(),
                "{refusal:?}"
            );
            assert_eq!(body(page).await, refusal.page().as_bytes(), "{refusal:?}");
        }
    }
}
