//! The access log (`--access-log`): one line per visitor connection, when it ends, on the target
//! [`TARGET`].
//!
//! An [`AccessLog`] is started when a visitor connection is accepted, filled in as it goes
//! (which endpoint it reached, each HTTP response's status, how it ended) and writes its line
//! when its last handle is dropped, so every way out of the code that serves the connection,
//! an upgraded stream outliving its HTTP connection included, gives exactly one line. Off, it
//! is `None`: nothing is allocated, counted, timed or formatted.
//!
//! The line's fields, in the text log and as JSON keys alike:
//! - `listener`: `http` or `https` (TLS terminated here), `tcp`, or `tls` (passed through);
//! - `peer`: the visitor's address (the one a trusted proxy's PROXY header names);
//! - `endpoint`: the host name reached (http and https: the first Host routed on the
//!   connection) or the tcp port; absent if none was;
//! - `duration_ms`, `bytes_in` (from the visitor) and `bytes_out` (to it), as on the wire (TLS
//!   records included on the https listener);
//! - http and https only: `requests`, and `status_1xx` ... `status_5xx` for each class answered;
//! - `end`: `closed` (finished cleanly), `refused` (with `reason`), `timed_out`, `cut` (the
//!   tunnel or the copy broke, or the server stopped it), or `error` (with `reason`: a malformed
//!   request, a failed TLS handshake, a reset).

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use tunnel_core::Address;

use crate::counted::{ByteCounts, Counted};

/// The tracing target of access log lines, for `RUST_LOG` filters (`RUST_LOG=warn,access=info`).
pub const TARGET: &str = "access";

/// The listener a visitor came in on, as the line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Http,
    /// The https listener, TLS terminated here.
    Https,
    Tcp,
    /// The https listener, passed through to a tls endpoint.
    Tls,
}

impl Listener {
    fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
            Listener::Tcp => "tcp",
            Listener::Tls => "tls",
        }
    }

    fn serves_http(self) -> bool {
        matches!(self, Listener::Http | Listener::Https)
    }
}

/// How a visitor connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Closed,
    Refused(String),
    TimedOut,
    Cut,
    Error(String),
}

impl End {
    fn as_str(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Refused(_) => "refused",
            End::TimedOut => "timed_out",
            End::Cut => "cut",
            End::Error(_) => "error",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            End::Refused(reason) | End::Error(reason) => Some(reason),
            End::Closed | End::TimedOut | End::Cut => None,
        }
    }
}

/// Responses given on one connection, by status class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Requests {
    total: u64,
    /// 1xx to 5xx; a status outside them is in `total` only.
    by_class: [u64; 5],
}

impl Requests {
    fn answered(&mut self, status: u16) {
        self.total += 1;
        if let Some(n) = usize::from(status / 100)
            .checked_sub(1)
            .and_then(|class| self.by_class.get_mut(class))
        {
            *n += 1;
        }
    }

    /// The count of class `class` (1 to 5), if any response had it.
    fn class(&self, class: usize) -> Option<u64> {
        self.by_class.get(class - 1).copied().filter(|n| *n > 0)
    }
}

/// A visitor connection's access record; see the module docs. Clones share one record.
#[derive(Clone, Debug, Default)]
pub struct AccessLog(Option<Arc<Record>>);

#[derive(Debug)]
struct Record {
    peer: SocketAddr,
    started: Instant,
    bytes: Arc<ByteCounts>,
    /// Locked only to fill a field in, never across an await.
    filled: Mutex<Filled>,
}

#[derive(Debug)]
struct Filled {
    listener: Listener,
    endpoint: Option<String>,
    requests: Requests,
    end: Option<End>,
}

impl AccessLog {
    /// A record for the connection from `peer`, or nothing at all when `enabled` is false or
    /// the log filter (`RUST_LOG`) drops the access target.
    pub fn start(enabled: bool, listener: Listener, peer: SocketAddr) -> AccessLog {
        let logged = enabled && tracing::enabled!(target: TARGET, tracing::Level::INFO);
        AccessLog(logged.then(|| {
            Arc::new(Record {
                peer,
                started: Instant::now(),
                bytes: Arc::default(),
                filled: Mutex::new(Filled {
                    listener,
                    endpoint: None,
                    requests: Requests::default(),
                    end: None,
                }),
            })
        }))
    }

    /// The visitor's stream, its bytes counted into this record (not counted when off). Call it
    /// once per record, on the stream as accepted.
    pub fn count<S>(&self, stream: S) -> Counted<S> {
        Counted::new(stream, self.0.as_ref().map(|r| Arc::clone(&r.bytes)))
    }

    fn fill(&self, f: impl FnOnce(&mut Filled)) {
        if let Some(record) = &self.0 {
            f(&mut lock(&record.filled));
        }
    }

    /// The connection turned out to be for `listener` (an https connection passed through).
    pub fn listener(&self, listener: Listener) {
        self.fill(|f| f.listener = listener);
    }

    /// The endpoint the connection reached; the first one is kept.
    pub fn reached(&self, address: &Address) {
        self.fill(|f| {
            f.endpoint.get_or_insert_with(|| match address {
                Address::Name(name) => name.to_string(),
                Address::Port(port) => port.to_string(),
            });
        });
    }

    /// One HTTP response given, with `status`.
    pub fn answered(&self, status: u16) {
        self.fill(|f| f.requests.answered(status));
    }

    /// The connection finished cleanly.
    pub fn closed(&self) {
        self.fill(|f| f.end = Some(End::Closed));
    }

    /// The connection was refused, for `reason`.
    pub fn refused(&self, reason: impl Display) {
        self.fill(|f| f.end = Some(End::Refused(reason.to_string())));
    }

    /// The visitor was too slow or too quiet.
    pub fn timed_out(&self) {
        self.fill(|f| f.end = Some(End::TimedOut));
    }

    /// The tunnel or the copy broke.
    pub fn cut(&self) {
        self.fill(|f| f.end = Some(End::Cut));
    }

    /// The visitor broke the protocol, or a handshake failed, for `reason`.
    pub fn error(&self, reason: impl Display) {
        self.fill(|f| f.end = Some(End::Error(reason.to_string())));
    }
}

fn lock(filled: &Mutex<Filled>) -> MutexGuard<'_, Filled> {
    // A panic while filling a field leaves the record as usable as before.
    filled
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Record {
    fn drop(&mut self) {
        let filled = lock(&self.filled);
        let requests = filled.listener.serves_http().then_some(filled.requests);
        let class = |c| requests.and_then(|r| r.class(c));
        // Nothing said how it ended: the task serving it was dropped mid-way (the server stopped).
        let end = filled.end.clone().unwrap_or(End::Cut);
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            target: TARGET,
            listener = %filled.listener.as_str(),
            peer = %self.peer,
            endpoint = filled.endpoint.as_deref().map(tracing::field::display),
            duration_ms,
            bytes_in = self.bytes.read(),
            bytes_out = self.bytes.written(),
            requests = requests.map(|r| r.total),
            status_1xx = class(1),
            status_2xx = class(2),
            status_3xx = class(3),
            status_4xx = class(4),
            status_5xx = class(5),
            end = %end.as_str(),
            reason = end.reason(),
            "visitor connection"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A log written to memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().expect("not poisoned").clone();
            String::from_utf8(bytes)
                .expect("utf-8")
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn peer() -> SocketAddr {
        "192.0.2.7:40000".parse().expect("valid")
    }

    /// An http connection with three responses, 150 bytes in and 900 out, closed.
    fn http_connection() {
        let access = AccessLog::start(true, Listener::Http, peer());
        let visitor = access.clone();
        let name = tunnel_core::requested_name("app", "localhost").expect("a valid label");
        access.reached(&Address::Name(name.expect("a label asks for a name")));
        access.reached(&Address::Port(1));
        for status in [200, 204, 404] {
            visitor.answered(status);
        }
        access.0.as_ref().expect("on").bytes.add(150, 900);
        access.closed();
        drop(access);
        assert!(visitor.0.is_some(), "the line waits for the last handle");
    }

    fn text_lines(f: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        captured.lines()
    }

    #[test]
    fn an_http_connection_is_one_text_line() {
        let lines = text_lines(http_connection);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(
            line.starts_with(
                " INFO access: visitor connection listener=http peer=192.0.2.7:40000 \
                 endpoint=app.localhost duration_ms="
            ),
            "{line}"
        );
        assert!(
            line.ends_with(
                " bytes_in=150 bytes_out=900 requests=3 status_2xx=2 status_4xx=1 end=closed"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_refused_tcp_visitor_names_the_reason_and_has_no_http_fields() {
        let lines = text_lines(|| {
            let access = AccessLog::start(true, Listener::Tcp, peer());
            access.reached(&Address::Port(20001));
            access.answered(200);
            access.refused("forbidden");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].ends_with(" bytes_in=0 bytes_out=0 end=refused reason=\"forbidden\""),
            "{lines:?}"
        );
        assert!(
            lines[0].contains(" listener=tcp peer=192.0.2.7:40000 endpoint=20001 "),
            "{lines:?}"
        );
    }

    #[test]
    fn nothing_said_means_cut_and_no_endpoint() {
        let lines = text_lines(|| drop(AccessLog::start(true, Listener::Https, peer())));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(!lines[0].contains("endpoint="), "{lines:?}");
        assert!(
            lines[0].ends_with(" bytes_in=0 bytes_out=0 requests=0 end=cut"),
            "{lines:?}"
        );
    }

    #[test]
    fn the_json_line_has_the_documented_keys() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(subscriber, http_connection);
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("one JSON object");
        let object = line.as_object().expect("an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "bytes_in",
                "bytes_out",
                "duration_ms",
                "end",
                "endpoint",
                "level",
                "listener",
                "message",
                "peer",
                "requests",
                "status_2xx",
                "status_4xx",
                "target",
                "timestamp"
            ]
        );
        assert_eq!(line["target"], "access");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "visitor connection");
        assert_eq!(line["listener"], "http");
        assert_eq!(line["peer"], "192.0.2.7:40000");
        assert_eq!(line["endpoint"], "app.localhost");
        assert_eq!(line["bytes_in"], 150);
        assert_eq!(line["bytes_out"], 900);
        assert_eq!(line["requests"], 3);
        assert_eq!(line["status_2xx"], 2);
        assert_eq!(line["status_4xx"], 1);
        assert_eq!(line["end"], "closed");
        assert!(line["duration_ms"].is_u64(), "{line}");
    }

    #[test]
    fn off_records_nothing() {
        let lines = text_lines(|| {
            let access = AccessLog::start(false, Listener::Http, peer());
            access.answered(200);
            access.closed();
            assert!(access.0.is_none());
            let _stream = access.count(());
        });
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn a_filter_that_drops_the_target_records_nothing() {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,access=off"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(AccessLog::start(true, Listener::Tcp, peer()).0.is_none());
            assert!(AccessLog::start(true, Listener::Tcp, peer()).0.is_none());
        });
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn,access=info"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(AccessLog::start(true, Listener::Tcp, peer()).0.is_some());
        });
    }

    #[test]
    fn statuses_are_counted_by_class() {
        let mut requests = Requests::default();
        for status in [101, 200, 201, 302, 404, 503, 999] {
            requests.answered(status);
        }
        assert_eq!(requests.total, 7);
        assert_eq!(requests.by_class, [1, 2, 1, 1, 1]);
        assert_eq!(requests.class(3), Some(1));
        assert_eq!(Requests::default().class(2), None);
    }
}
