//! What the server counts, for `GET /metrics` (Prometheus text format, via `prometheus-client`)
//! and the admin API's per-endpoint numbers.
//!
//! Counting happens where traffic flows and stays cheap there: each visitor, channel and request
//! touches a few atomics (prometheus-client's counters are atomics too), never a lock held across
//! an `.await`. What the core already knows (connections, endpoints, session refusals) is read
//! from it at scrape time. Labels have a small fixed set of values (kind, direction, status
//! class, reason); per-endpoint series come only with `--metrics-per-endpoint`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tunnel_core::command::EndpointKind;
use tunnel_core::{EndpointId, Gateway, Route, VisitorRefusal};

/// An endpoint kind as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Kind {
    http,
    tcp,
    tls,
}

impl From<EndpointKind> for Kind {
    fn from(kind: EndpointKind) -> Self {
        match kind {
            EndpointKind::Http => Kind::http,
            EndpointKind::Tcp => Kind::tcp,
            EndpointKind::Tls => Kind::tls,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: Kind,
}

/// `in` is from visitors towards the tunnel's client, `out` back to visitors.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

// By hand: the derive would spell a raw identifier `r#in`.
impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabel {
    kind: Kind,
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The status classes an HTTP response is counted under.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// One live endpoint's numbers. Kept while the endpoint lives; what it counted stays in the
/// per-kind totals after it goes.
#[derive(Debug)]
pub struct EndpointStats {
    /// The endpoint's kind.
    pub kind: EndpointKind,
    /// Its name or port, for `--metrics-per-endpoint` labels.
    pub address: String,
    visitors_now: AtomicU64,
    visitors_total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    requests: [AtomicU64; 5],
    // The per-kind series it also counts into.
    kind_visitors: Gauge,
    kind_visitors_total: Counter,
    kind_bytes_in: Counter,
    kind_bytes_out: Counter,
}

/// A copy of an endpoint's numbers at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointNumbers {
    /// Visitors served now.
    pub visitors_now: u64,
    /// Visitors served since the endpoint went live (for http, requests let in).
    pub visitors_total: u64,
    /// Bytes from visitors to the tunnel's client.
    pub bytes_in: u64,
    /// Bytes from the tunnel's client to visitors.
    pub bytes_out: u64,
    /// HTTP responses by status class, [`STATUS_CLASSES`] order.
    pub requests: [u64; 5],
}

impl EndpointStats {
    /// One more visitor let in.
    pub fn visitor_in(&self) {
        self.visitors_now.fetch_add(1, Ordering::Relaxed);
        self.visitors_total.fetch_add(1, Ordering::Relaxed);
        self.kind_visitors.inc();
        self.kind_visitors_total.inc();
    }

    /// A visitor let in is done.
    pub fn visitor_out(&self) {
        self.visitors_now.fetch_sub(1, Ordering::Relaxed);
        self.kind_visitors.dec();
    }

    /// Bytes a visitor sent towards the tunnel.
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.kind_bytes_in.inc_by(n);
    }

    /// Bytes the tunnel sent back towards a visitor.
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.kind_bytes_out.inc_by(n);
    }

    /// Its numbers now.
    pub fn numbers(&self) -> EndpointNumbers {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EndpointNumbers {
            visitors_now: get(&self.visitors_now),
            visitors_total: get(&self.visitors_total),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            requests: std::array::from_fn(|i| get(&self.requests[i])),
        }
    }
}

type StatsMap = Arc<Mutex<HashMap<EndpointId, Arc<EndpointStats>>>>;

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ssh_connections: Gauge,
    ssh_connections_opened: Counter,
    auth_failures: Family<ReasonLabel, Counter>,
    endpoints: Family<KindLabel, Gauge>,
    visitors: Family<KindLabel, Gauge>,
    visitors_total: Family<KindLabel, Counter>,
    /// `http_requests`' series, one per class, so a request costs one atomic add.
    http_classes: [Counter; 5],
    bytes: Family<FlowLabel, Counter>,
    channel_open: Histogram,
    refusals: Family<ReasonLabel, Counter>,
    quota_hits: Family<ReasonLabel, Counter>,
    stats: StatsMap,
    /// The core's refusal counts as last copied into `refusals`, so a scrape adds only what is
    /// new (the core's counts only grow).
    synced: Mutex<HashMap<&'static str, u64>>,
}

impl Metrics {
    /// Every metric at zero; with `per_endpoint`, each live endpoint also gets series of its own
    /// labelled with its name or port.
    pub fn new(per_endpoint: bool) -> Self {
        let mut registry = Registry::with_prefix("tunnel");
        let ssh_connections = Gauge::default();
        registry.register(
            "ssh_connections",
            "SSH connections open now",
            ssh_connections.clone(),
        );
        let ssh_connections_opened = Counter::default();
        registry.register(
            "ssh_connections_opened",
            "SSH connections accepted since start",
            ssh_connections_opened.clone(),
        );
        let auth_failures = Family::default();
        registry.register(
            "ssh_auth_failures",
            "SSH logins refused, by reason (unlisted_key, key, certificate)",
            auth_failures.clone(),
        );
        let endpoints = Family::default();
        registry.register("endpoints", "Live endpoints by kind", endpoints.clone());
        let visitors = Family::default();
        registry.register("visitors", "Visitors served now, by kind", visitors.clone());
        let visitors_total = Family::default();
        registry.register(
            "visitors_admitted",
            "Visitors let in since start, by kind (for http, requests)",
            visitors_total.clone(),
        );
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP responses sent to visitors, by status class",
            http_requests.clone(),
        );
        let bytes = Family::default();
        registry.register(
            "bytes",
            "Bytes carried through tunnels, by kind and direction (in: from visitors)",
            bytes.clone(),
        );
        // 1 ms to about 16 s: a local channel open to a client far away.
        let channel_open = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "channel_open_seconds",
            "Time to open a visitor's forwarded-tcpip channel",
            channel_open.clone(),
        );
        let refusals = Family::default();
        registry.register(
            "refusals",
            "Refusals by reason: visitors turned away, and sessions ended by an error",
            refusals.clone(),
        );
        let quota_hits = Family::default();
        registry.register(
            "quota_hits",
            "Forwards refused by a per-key quota or per-connection limit",
            quota_hits.clone(),
        );
        // Every kind, direction and class from the start: a series that appears only once it
        // moves makes rate() miss its first increase.
        for kind in [Kind::http, Kind::tcp, Kind::tls] {
            visitors.get_or_create_owned(&KindLabel { kind });
            visitors_total.get_or_create_owned(&KindLabel { kind });
            for direction in [Direction::In, Direction::Out] {
                bytes.get_or_create_owned(&FlowLabel { kind, direction });
            }
        }
        let http_classes =
            STATUS_CLASSES.map(|class| http_requests.get_or_create_owned(&ClassLabel { class }));
        let stats: StatsMap = Arc::default();
        if per_endpoint {
            registry.register_collector(Box::new(PerEndpoint(Arc::clone(&stats))));
        }
        Self {
            registry,
            ssh_connections,
            ssh_connections_opened,
            auth_failures,
            endpoints,
            visitors,
            visitors_total,
            http_classes,
            bytes,
            channel_open,
            refusals,
            quota_hits,
            stats,
            synced: Mutex::default(),
        }
    }

    /// An SSH connection was accepted.
    pub fn connection_opened(&self) {
        self.ssh_connections_opened.inc();
    }

    /// A login was refused; `reason` is `unlisted_key` (an offered key not in
    /// authorized_keys), `key` (a signed login the core refused) or `certificate`.
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A route went live: its numbers start at zero.
    pub fn route_added(&self, route: &Route) -> Arc<EndpointStats> {
        let kind = Kind::from(route.policy.kind());
        let flow = |direction| {
            self.bytes
                .get_or_create_owned(&FlowLabel { kind, direction })
        };
        let stats = Arc::new(EndpointStats {
            kind: route.policy.kind(),
            address: route.address.to_string(),
            visitors_now: AtomicU64::new(0),
            visitors_total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            requests: Default::default(),
            kind_visitors: self.visitors.get_or_create_owned(&KindLabel { kind }),
            kind_visitors_total: self.visitors_total.get_or_create_owned(&KindLabel { kind }),
            kind_bytes_in: flow(Direction::In),
            kind_bytes_out: flow(Direction::Out),
        });
        self.lock_stats().insert(route.endpoint, Arc::clone(&stats));
        stats
    }

    /// A route is gone; visitors still being served keep their own handle on its numbers.
    pub fn route_removed(&self, endpoint: EndpointId) {
        self.lock_stats().remove(&endpoint);
    }

    /// A live endpoint's numbers, to count into.
    pub fn endpoint(&self, endpoint: EndpointId) -> Option<Arc<EndpointStats>> {
        self.lock_stats().get(&endpoint).cloned()
    }

    /// Every live endpoint's numbers now.
    pub fn endpoint_numbers(&self) -> HashMap<EndpointId, EndpointNumbers> {
        self.lock_stats()
            .iter()
            .map(|(id, stats)| (*id, stats.numbers()))
            .collect()
    }

    /// An HTTP response went to a visitor; `endpoint` when it was routed to one.
    pub fn http_response(&self, endpoint: Option<&EndpointStats>, status: u16) {
        let class = class_index(status);
        self.http_classes[class].inc();
        if let Some(stats) = endpoint {
            stats.requests[class].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A visitor's channel opened, or failed to, after `took`.
    pub fn channel_opened(&self, took: Duration) {
        self.channel_open.observe(took.as_secs_f64());
    }

    /// A visitor was turned away.
    pub fn visitor_refused(&self, refusal: &VisitorRefusal) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: refusal_reason(refusal),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format (OpenMetrics), with what the core knows read
    /// from it now.
    pub fn render(&self, gateway: &Gateway) -> String {
        self.sync_from_core(gateway);
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a metric.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
            let _ = writeln!(text, "# EOF");
        }
        text
    }

    fn sync_from_core(&self, gateway: &Gateway) {
        self.ssh_connections
            .set(i64::try_from(gateway.connection_count()).unwrap_or(i64::MAX));
        let mut by_kind: HashMap<Kind, i64> = [Kind::http, Kind::tcp, Kind::tls]
            .into_iter()
            .map(|k| (k, 0))
            .collect();
        for e in gateway.endpoints_view() {
            *by_kind.entry(e.kind.into()).or_default() += 1;
        }
        for (kind, n) in by_kind {
            self.endpoints.get_or_create(&KindLabel { kind }).set(n);
        }
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        for (reason, n) in gateway.refusal_counts() {
            let seen = synced.entry(reason).or_default();
            let new = n.saturating_sub(*seen);
            if new > 0 {
                *seen = n;
                self.refusals
                    .get_or_create(&ReasonLabel { reason })
                    .inc_by(new);
                if QUOTA_REASONS.contains(&reason) {
                    self.quota_hits
                        .get_or_create(&ReasonLabel { reason })
                        .inc_by(new);
                }
            }
        }
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Arc<EndpointStats>>> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The core's refusal reasons that are quotas or limits (`ForwardError::is_quota`).
const QUOTA_REASONS: [&str; 4] = [
    "name_quota",
    "tcp_port_quota",
    "too_many_endpoints",
    "too_many_connections",
];

/// A fixed name for each way a visitor is turned away.
fn refusal_reason(refusal: &VisitorRefusal) -> &'static str {
    match refusal {
        VisitorRefusal::MissingHost
        | VisitorRefusal::SeveralHosts
        | VisitorRefusal::InvalidHost => "bad_host",
        VisitorRefusal::Home(_) => "home",
        VisitorRefusal::UnknownHost(_) | VisitorRefusal::Foreign(_) => "unknown_host",
        VisitorRefusal::NotHttp(_) => "not_http",
        VisitorRefusal::UnknownPort(_) => "unknown_port",
        VisitorRefusal::Forbidden => "forbidden",
        VisitorRefusal::Unauthorized => "unauthorized",
        VisitorRefusal::Busy => "busy",
        VisitorRefusal::LocalServiceRefused => "local_service_refused",
        VisitorRefusal::TunnelTimedOut => "tunnel_timed_out",
        VisitorRefusal::TunnelClosed => "tunnel_closed",
        VisitorRefusal::NoAnswer => "no_answer",
        _ => "other",
    }
}

/// `--metrics-per-endpoint`: one series per live endpoint, labelled with its name or port.
#[derive(Debug)]
struct PerEndpoint(StatsMap);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
    kind: Kind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointFlowLabel {
    endpoint: String,
    kind: Kind,
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointClassLabel {
    endpoint: String,
    class: &'static str,
}

impl Collector for PerEndpoint {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all: Vec<(String, Kind, EndpointNumbers)> = {
            let stats = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let mut all: Vec<_> = stats
                .values()
                .map(|s| (s.address.clone(), Kind::from(s.kind), s.numbers()))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let mut visitors = encoder.encode_descriptor(
            "endpoint_visitors",
            "Visitors served now, per endpoint",
            None,
            MetricType::Gauge,
        )?;
        for (endpoint, kind, n) in &all {
            let label = EndpointLabel {
                endpoint: endpoint.clone(),
                kind: *kind,
            };
            let value = i64::try_from(n.visitors_now).unwrap_or(i64::MAX);
            ConstGauge::new(value).encode(visitors.encode_family(&label)?)?;
        }
        let mut bytes = encoder.encode_descriptor(
            "endpoint_bytes",
            "Bytes carried, per endpoint and direction (in: from visitors)",
            None,
            MetricType::Counter,
        )?;
        for (endpoint, kind, n) in &all {
            for (direction, value) in [(Direction::In, n.bytes_in), (Direction::Out, n.bytes_out)] {
                let label = EndpointFlowLabel {
                    endpoint: endpoint.clone(),
                    kind: *kind,
                    direction,
                };
                ConstCounter::new(value).encode(bytes.encode_family(&label)?)?;
            }
        }
        let mut requests = encoder.encode_descriptor(
            "endpoint_http_requests",
            "HTTP responses, per http endpoint and status class",
            None,
            MetricType::Counter,
        )?;
        for (endpoint, kind, n) in &all {
            if *kind != Kind::http {
                continue;
            }
            for (class, value) in STATUS_CLASSES.iter().zip(n.requests) {
                let label = EndpointClassLabel {
                    endpoint: endpoint.clone(),
                    class,
                };
                ConstCounter::new(value).encode(requests.encode_family(&label)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_direction_and_class_is_there_from_the_start_spelled_plainly() {
        use rand_core::SeedableRng;
        let gateway = Gateway::new(
            tunnel_core::GatewayConfig::new("localhost", 80, 443),
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(1)),
        );
        let text = Metrics::new(true).render(&gateway);
        for kind in ["http", "tcp", "tls"] {
            for direction in ["in", "out"] {
                let series =
                    format!("tunnel_bytes_total{{kind=\"{kind}\",direction=\"{direction}\"}} 0");
                assert!(text.contains(&series), "{series} in\n{text}");
            }
            assert!(text.contains(&format!("tunnel_endpoints{{kind=\"{kind}\"}} 0")));
        }
        for class in STATUS_CLASSES {
            let series = format!("tunnel_http_requests_total{{class=\"{class}\"}} 0");
            assert!(text.contains(&series), "{series}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn statuses_fall_in_their_class_and_odd_ones_at_the_edges() {
        assert_eq!(STATUS_CLASSES[class_index(101)], "1xx");
        assert_eq!(STATUS_CLASSES[class_index(204)], "2xx");
        assert_eq!(STATUS_CLASSES[class_index(404)], "4xx");
        assert_eq!(STATUS_CLASSES[class_index(599)], "5xx");
        assert_eq!(STATUS_CLASSES[class_index(42)], "1xx");
        assert_eq!(STATUS_CLASSES[class_index(999)], "5xx");
    }
}
