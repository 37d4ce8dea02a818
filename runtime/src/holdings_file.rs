//! The addresses keys hold, kept in the state dir (`holdings.json`) so a restart loses none of
//! them: what to keep and what it means after the restart is the core's
//! ([`Gateway::saved_holdings`], [`Gateway::restore`]); this file only stores it. A reservation is
//! stored with its end in wall-clock time (the monotonic clock does not survive a restart), a live
//! address as live. Written whole and atomically a moment after each change, and at shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tunnel_core::command::EndpointKind;
use tunnel_core::{
    Gateway, KeyFingerprint, SavedAddress, SavedHolding, SavedReconnect, SavedState,
};

use crate::driver::{now, Driver};
use crate::net::Net;

/// File name in the state dir.
pub const HOLDINGS_FILE: &str = "holdings.json";
/// Changes closer together than this are written once.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// A larger file is not read: quotas keep a real one far smaller.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// The format's version, first in the file.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    holdings: Vec<Line>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    key: String,
    /// Milliseconds since the Unix epoch when the reservation ends; absent while live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reserved_until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reconnect: Option<Reconnect>,
}

#[derive(Serialize, Deserialize)]
struct Reconnect {
    bind_address: String,
    port: u32,
    kind: String,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn kind_of(text: &str) -> Option<EndpointKind> {
    [EndpointKind::Http, EndpointKind::Tcp, EndpointKind::Tls]
        .into_iter()
        .find(|k| k.as_str() == text)
}

/// The file's text for `saved`, taken at wall-clock time `wall`.
fn encode(saved: &[SavedHolding], wall: SystemTime) -> Vec<u8> {
    let holdings = saved
        .iter()
        .map(|s| {
            let (name, port) = match &s.address {
                SavedAddress::Name(name) => (Some(name.clone()), None),
                SavedAddress::Port(port) => (None, Some(*port)),
            };
            Line {
                name,
                port,
                key: s.owner.as_str().to_owned(),
                reserved_until_ms: match s.state {
                    SavedState::Live => None,
                    SavedState::Reserved { remaining } => Some(unix_ms(wall + remaining)),
                },
                reconnect: s.reconnect.as_ref().map(|r| Reconnect {
                    bind_address: r.bind_address.clone(),
                    port: r.port,
                    kind: r.kind.as_str().to_owned(),
                }),
            }
        })
        .collect();
    let file = File {
        format: FORMAT,
        holdings,
    };
    serde_json::to_vec(&file).expect("plain data always serialises")
}

/// The holdings in the file's text, as of wall-clock time `wall`. A line that makes no sense is
/// left out (the core checks the rest against today's configuration).
fn decode(text: &[u8], wall: SystemTime) -> Result<Vec<SavedHolding>, String> {
    let file: File = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    if file.format != FORMAT {
        return Err(format!("unknown format {}", file.format));
    }
    let wall_ms = unix_ms(wall);
    Ok(file
        .holdings
        .into_iter()
        .filter_map(|line| {
            let address = match (line.name, line.port) {
                (Some(name), None) => SavedAddress::Name(name),
                (None, Some(port)) => SavedAddress::Port(port),
                _ => return None,
            };
            let reconnect = match line.reconnect {
                Some(r) => Some(SavedReconnect {
                    bind_address: r.bind_address,
                    port: r.port,
                    kind: kind_of(&r.kind)?,
                }),
                None => None,
            };
            Some(SavedHolding {
                address,
                owner: KeyFingerprint::new(line.key),
                state: match line.reserved_until_ms {
                    None => SavedState::Live,
                    Some(until) => SavedState::Reserved {
                        remaining: Duration::from_millis(until.saturating_sub(wall_ms)),
                    },
                },
                reconnect,
            })
        })
        .collect())
}

/// Reserves again, in `gateway`, what the file in `state_dir` holds; logs what it restored and
/// what it left out. A missing file is a first start; an unreadable one is logged and ignored (the
/// server must start; names are then given anew).
pub fn restore(gateway: &mut Gateway, state_dir: &Path) {
    let path = state_dir.join(HOLDINGS_FILE);
    let text = match read_bounded(&path) {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(error) => {
            return tracing::error!(path = %path.display(), %error, "cannot read the saved reservations; starting without them")
        }
    };
    let saved = match decode(&text, SystemTime::now()) {
        Ok(saved) => saved,
        Err(error) => {
            return tracing::error!(path = %path.display(), %error, "the saved reservations make no sense; starting without them")
        }
    };
    let total = saved.len();
    let skipped = gateway.restore(now(), saved);
    for (holding, why) in &skipped {
        tracing::debug!(address = ?holding.address, key = %holding.owner, %why, "saved reservation not restored");
    }
    tracing::info!(
        "restored {} of {total} saved reservations from {}",
        total - skipped.len(),
        path.display()
    );
}

fn read_bounded(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(Some(text))
}

/// Keeps the file in step with the core: written a moment after each change of holdings.
pub async fn keep<N: Net>(driver: Arc<Driver<N>>, state_dir: PathBuf) {
    let path = state_dir.join(HOLDINGS_FILE);
    let mut written = None;
    loop {
        driver.holdings_changed().await;
        written = save(&driver, &path, written).await;
        tokio::time::sleep(SAVE_EVERY).await;
    }
}

/// Writes the file if the holdings changed since `written` (a version); the version written.
pub async fn save<N: Net>(driver: &Driver<N>, path: &Path, written: Option<u64>) -> Option<u64> {
    let (version, saved) = driver.with_gateway(|g| (g.holdings_version(), g.saved_holdings(now())));
    if written == Some(version) {
        return written;
    }
    let bytes = encode(&saved, SystemTime::now());
    let target = path.to_owned();
    let wrote =
        tokio::task::spawn_blocking(move || crate::state_file::write_atomic(&target, &bytes))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
    match wrote {
        Ok(()) => Some(version),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot save the reservations");
            written
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(address: SavedAddress, state: SavedState, reconnect: bool) -> SavedHolding {
        SavedHolding {
            address,
            owner: KeyFingerprint::new("SHA256:abc"),
            state,
            reconnect: reconnect.then(|| SavedReconnect {
                bind_address: "a \"quoted\"\n\tbind".into(),
                port: 80,
                kind: EndpointKind::Http,
            }),
        }
    }

    #[test]
    fn holdings_come_back_as_they_were_saved_less_the_time_between() {
        let saved = vec![
            holding(
                SavedAddress::Name("k3j9x2ab.localhost".into()),
                SavedState::Live,
                true,
            ),
            holding(
                SavedAddress::Port(20001),
                SavedState::Reserved {
                    remaining: Duration::from_secs(600),
                },
                false,
            ),
        ];
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let text = encode(&saved, wall);
        let later = wall + Duration::from_secs(100);
        let mut expected = saved.clone();
        expected[1].state = SavedState::Reserved {
            remaining: Duration::from_secs(500),
        };
        assert_eq!(decode(&text, later).expect("decodes"), expected);
        // Past its end, a reservation has nothing left (the core then leaves it out).
        let much_later = wall + Duration::from_secs(10_000);
        assert_eq!(
            decode(&text, much_later).expect("decodes")[1].state,
            SavedState::Reserved {
                remaining: Duration::ZERO
            }
        );
    }

    #[test]
    fn nonsense_is_an_error_or_left_out_never_a_panic() {
        let wall = SystemTime::now();
        assert!(decode(b"", wall).is_err());
        assert!(decode(b"{\"format\":2,\"holdings\":[]}", wall).is_err());
        let odd = br#"{"format":1,"holdings":[
            {"key":"k"},
            {"name":"a.localhost","port":1,"key":"k"},
            {"port":20001,"key":"k","reconnect":{"bind_address":"","port":0,"kind":"gopher"}},
            {"port":20002,"key":"k"}
        ]}"#;
        let kept = decode(odd, wall).expect("decodes");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].address, SavedAddress::Port(20002));
    }
}
