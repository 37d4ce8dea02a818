//! `ssh HOST list` and `ssh HOST release NAME|PORT`: what a key holds, as its owner sees it, and
//! giving a reservation back before its time.

use std::time::{Duration, Instant};

use crate::config::GatewayConfig;
use crate::endpoints::public_url;
use crate::error::SessionError;
use crate::forwards::Forwards;
use crate::ids::{ConnId, KeyFingerprint};
use crate::names::requested_name;
use crate::ownership::{Address, Holding};
use crate::views::{ConnectionView, EndpointView};

/// The lines `list` prints for `key`: a header, then one line per address it holds, live ones
/// with their public URL, reserved ones with the time left.
pub(crate) fn listing(
    forwards: &Forwards,
    config: &GatewayConfig,
    key: &KeyFingerprint,
    conn: ConnId,
    now: Instant,
) -> Vec<String> {
    let rows: Vec<(String, String)> = forwards
        .ownership
        .holders()
        .filter(|(_, h)| h.owner == *key)
        .map(|(address, h)| match h.holding {
            Holding::Live { conn: on, .. } => {
                let shown = forwards.route_at(address).map_or_else(
                    || plain(address, config),
                    |route| public_url(route, route.target.port, config),
                );
                let state = if on == conn {
                    "live (this connection)".to_owned()
                } else {
                    "live".to_owned()
                };
                (shown, state)
            }
            Holding::Reserved { until } => (
                plain(address, config),
                format!(
                    "reserved for {}",
                    remaining(until.saturating_duration_since(now))
                ),
            ),
        })
        .collect();
    if rows.is_empty() {
        return vec!["Nothing is live or reserved for your key.".to_owned()];
    }
    let width = rows.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
    let mut lines = vec![format!("{:width$}  STATE", "ADDRESS")];
    lines.extend(rows.into_iter().map(|(a, s)| format!("{a:width$}  {s}")));
    lines
}

/// `admin connections`: every connection, with its key, peer, age and endpoints' URLs.
pub(crate) fn connections_table(
    connections: &[ConnectionView],
    endpoints: &[EndpointView],
) -> Vec<String> {
    let rows = connections.iter().map(|c| {
        let urls: Vec<&str> = endpoints
            .iter()
            .filter(|e| e.conn == c.conn)
            .map(|e| e.url.as_str())
            .collect();
        vec![
            c.conn.to_string(),
            c.key
                .as_ref()
                .map_or_else(|| "(not authenticated)".to_owned(), ToString::to_string),
            c.peer.to_string(),
            remaining(c.connected_for),
            urls.join(" "),
        ]
    });
    table(&["CONNECTION", "KEY", "PEER", "FOR", "ENDPOINTS"], rows)
}

/// `admin endpoints`: every live endpoint, with its URL, connection and key.
pub(crate) fn endpoints_table(endpoints: &[EndpointView]) -> Vec<String> {
    let rows = endpoints.iter().map(|e| {
        vec![
            e.url.clone(),
            e.kind.to_string(),
            e.conn.to_string(),
            e.key.to_string(),
        ]
    });
    table(&["ENDPOINT", "KIND", "CONNECTION", "KEY"], rows)
}

/// Columns padded to their widest cell, two spaces apart; the last column unpadded.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Vec<String> {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    all.extend(rows);
    let widths: Vec<usize> = (0..header.len())
        .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    all.iter()
        .map(|row| {
            let last = row.len() - 1;
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i == last {
                        cell.clone()
                    } else {
                        format!("{cell:w$}", w = widths[i])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// A name as is, a tcp port as `tcp://DOMAIN:PORT` (as its Forwarding line shows it).
fn plain(address: &Address, config: &GatewayConfig) -> String {
    match address {
        Address::Name(name) => name.as_str().to_owned(),
        Address::Port(port) => format!("tcp://{}:{port}", config.domain()),
    }
}

/// `9m 12s`, `2h 5m`, `40s`.
fn remaining(left: Duration) -> String {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// The address `release` names: a port number, or a name as `-R NAME:...` would ask for it.
pub(crate) fn released_address(
    text: &str,
    config: &GatewayConfig,
) -> Result<Address, SessionError> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(Address::Port(port));
    }
    let port = text
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|_| text.starts_with("tcp://"));
    if let Some(port) = port {
        return Ok(Address::Port(port));
    }
    match requested_name(text, config.domain()) {
        Ok(Some(name)) => Ok(Address::Name(name)),
        _ => Err(SessionError::NotReserved(text.into())),
    }
}
