//! Slow visitors (issue 14): a visitor that reads a large download slowly must not hold up the
//! other visitors of its tunnel. The server takes each channel's data at once and keeps what the
//! visitor has not read in a spill buffer, in memory and then in an unlinked file under
//! `--spill-dir`; those files vanish with the visitor and with a killed server, and a visitor
//! past `--spill-max-per-visitor` is cut with one log line while its neighbours are served.

use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tunnel_e2e::http::{request_raw, HttpResponse};
use tunnel_e2e::http_service::{hex, HttpService, TestBytes};
use tunnel_e2e::http_visitor::{hash_exact, HttpConn};
use tunnel_e2e::open_files::{deleted_files_under, DeletedFile};
use tunnel_e2e::{Client, Forwarding, Server, FAILURE_TIMEOUT};

const MIB: u64 = 1024 * 1024;

/// The slow visitor's download: far more than a channel window (8 MiB) and the kernel's socket
/// buffers, so that it cannot just sit in flight.
const LARGE: u64 = 128 * MIB;
/// How fast the slow visitor reads, and for how long before it stops reading (socket kept open).
const SLOW_RATE: f64 = 300.0 * 1024.0;
const SLOW_FOR: Duration = Duration::from_secs(3);

/// Neighbour requests measured alone; beside the slow reader, at least this many and as many more
/// as arrive while it reads, up to [`MAX_NEIGHBOURS`].
const NEIGHBOURS: usize = 30;
const MAX_NEIGHBOURS: usize = 400;
/// Neighbours arrive at a steady pace, so that beside the slow reader they cover its whole read.
const NEIGHBOUR_INTERVAL: Duration = Duration::from_millis(10);
/// Beside the slow reader, the neighbours' median may be this many times their median alone, plus
/// [`SLOWDOWN_FLOOR`] for the noise of a small shared machine. Before the spill buffer they got
/// `502` after the channel-open timeout (russh's session loop blocked on the slow channel).
const SLOWDOWN_FACTOR: u32 = 5;
const SLOWDOWN_FLOOR: Duration = Duration::from_millis(50);

const CUT_LINE: &str = "a visitor reading too slowly was cut";

/// `ssh -R NAME:80:localhost:PORT 127.0.0.1 http`, waiting for its Forwarding line.
fn http_tunnel(server: &Server, name: &str, port: u16) -> (Client, Forwarding) {
    let mut client = Client::builder(server)
        .forward(format!("{name}:80:localhost:{port}"))
        .command(["http"])
        .spawn();
    let forwarding = client.wait_forwarding();
    (client, forwarding)
}

/// Where visitors of a tunnel connect, and the Host they send.
struct Entry {
    addr: SocketAddr,
    host: String,
}

impl Entry {
    /// The http listener, with the tunnel's host.
    fn http(server: &Server, forwarding: &Forwarding) -> Entry {
        let addr = server.http_addr();
        Entry {
            host: format!("{}:{}", forwarding.host, addr.port()),
            addr,
        }
    }

    /// A tcp tunnel's public port; the local service speaks HTTP and ignores the Host.
    fn tcp(forwarding: &Forwarding) -> Entry {
        Entry {
            addr: (Ipv4Addr::LOCALHOST, forwarding.public_port()).into(),
            host: "localhost".to_owned(),
        }
    }

    fn request(&self, path: &str, connection: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\n\r\n",
            self.host
        )
    }

    /// A neighbour: a new visitor connection with one small request. Returns how long it took,
    /// or what went wrong.
    fn small_request(&self, service: &HttpService) -> Result<Duration, String> {
        let started = Instant::now();
        let response = request_raw(self.addr, self.request("/small", "close").as_bytes())
            .map_err(|e| format!("small request failed: {e}"))?;
        let took = started.elapsed();
        if !from_service(&response, service) {
            return Err(format!(
                "small request got {} {:?} after {took:?}, not the local service's answer",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
        Ok(took)
    }

    /// A visitor that asks for `len` bytes on a keep-alive connection and has read the head.
    fn start_download(&self, len: u64) -> io::Result<HttpConn> {
        let mut conn = HttpConn::connect(self.addr)?;
        conn.send(
            self.request(&format!("/download/{len}"), "keep-alive")
                .as_bytes(),
        )?;
        let (status, headers) = conn.read_head()?;
        if status != 200 {
            return Err(io::Error::other(format!(
                "the download got {status} {headers:?}"
            )));
        }
        Ok(conn)
    }
}

fn from_service(response: &HttpResponse, service: &HttpService) -> bool {
    response.status == 200 && response.header("x-service-id") == Some(service.id())
}

fn median(times: &[Duration]) -> Duration {
    percentile(times, 50)
}

fn percentile(times: &[Duration], p: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// A visitor on its own thread that downloads [`LARGE`] bytes reading at [`SLOW_RATE`] for
/// [`SLOW_FOR`], then stops reading with its socket open until the test lets it go.
struct SlowReader {
    reading: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
    thread: thread::JoinHandle<io::Result<u64>>,
}

impl SlowReader {
    fn start(entry: &Entry) -> SlowReader {
        let (reading_tx, reading) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let (addr, host) = (entry.addr, entry.host.clone());
        let thread = thread::spawn(move || {
            let mut conn = Entry { addr, host }.start_download(LARGE)?;
            let begun = Instant::now();
            let mut read = 0u64;
            let mut buf = [0u8; 16 * 1024];
            while begun.elapsed() < SLOW_FOR {
                let n = conn.reader().read(&mut buf)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the download ended after {read} bytes"),
                    ));
                }
                if read == 0 {
                    let _ = reading_tx.send(());
                }
                read += n as u64;
                // Pacing is the point here: a visitor behind a slow link.
                let due = Duration::from_secs_f64(read as f64 / SLOW_RATE).min(SLOW_FOR);
                if let Some(wait) = due.checked_sub(begun.elapsed()) {
                    thread::sleep(wait);
                }
            }
            // Stops reading, keeps the connection: its data keeps waiting in the server.
            let _ = released.recv_timeout(FAILURE_TIMEOUT);
            Ok(read)
        });
        SlowReader {
            reading,
            release,
            thread,
        }
    }

    /// Waits (bounded) until the first body bytes arrived: the download is under way.
    fn wait_reading(&self) -> bool {
        self.reading.recv_timeout(FAILURE_TIMEOUT).is_ok()
    }

    /// Lets the visitor go; returns how much it read.
    fn finish(self) -> io::Result<u64> {
        let _ = self.release.send(());
        self.thread.join().expect("the slow reader does not panic")
    }
}

/// Neighbours' small requests, one every [`NEIGHBOUR_INTERVAL`] (or right after the one before
/// when that took longer) while `more(done, elapsed)` holds, at most [`MAX_NEIGHBOURS`]: how long
/// each took, or the first failure.
fn neighbours(
    entry: &Entry,
    service: &HttpService,
    more: impl Fn(usize, Duration) -> bool,
) -> Result<Vec<Duration>, String> {
    let begun = Instant::now();
    let mut times = Vec::new();
    while times.len() < MAX_NEIGHBOURS && more(times.len(), begun.elapsed()) {
        let due = NEIGHBOUR_INTERVAL * times.len() as u32;
        if let Some(early) = due.checked_sub(begun.elapsed()) {
            thread::sleep(early);
        }
        let took = entry
            .small_request(service)
            .map_err(|e| format!("request {} of the neighbours: {e}", times.len() + 1))?;
        times.push(took);
    }
    Ok(times)
}

/// The measurement: neighbours' small requests alone, then beside a visitor reading a
/// large download slowly through the same tunnel. All must succeed, and beside the slow reader
/// their median stays within a few times their median alone.
fn neighbours_beside_a_slow_reader(entry: &Entry, service: &HttpService, client: &Client) {
    // The first request opens what later ones reuse (the channel path, the service's threads).
    entry
        .small_request(service)
        .unwrap_or_else(|e| client.fail(&e));
    let alone = neighbours(entry, service, |done, _| done < NEIGHBOURS)
        .unwrap_or_else(|e| client.fail(&format!("alone, {e}")));

    let slow = SlowReader::start(entry);
    if !slow.wait_reading() {
        let why = slow.finish().err();
        client.fail(&format!(
            "the slow visitor's download never started: {why:?}"
        ));
    }
    let beside = neighbours(entry, service, |done, elapsed| {
        done < NEIGHBOURS || elapsed < SLOW_FOR
    });
    let slow_read = slow.finish();
    let beside = beside.unwrap_or_else(|e| client.fail(&format!("beside the slow reader, {e}")));
    let slow_read = slow_read
        .unwrap_or_else(|e| client.fail(&format!("the slow visitor's download broke: {e}")));

    let (alone_median, beside_median) = (median(&alone), median(&beside));
    eprintln!(
        "neighbours alone: {} requests, median {alone_median:?}, p99 {:?}; beside a slow reader \
         ({slow_read} bytes read in {SLOW_FOR:?}): {} requests, median {beside_median:?}, p99 {:?}",
        alone.len(),
        percentile(&alone, 99),
        beside.len(),
        percentile(&beside, 99),
    );
    let bound = alone_median * SLOWDOWN_FACTOR + SLOWDOWN_FLOOR;
    if beside_median > bound {
        client.fail(&format!(
            "beside a slow reader the neighbours' median was {beside_median:?}, more than \
             {SLOWDOWN_FACTOR}x their median alone ({alone_median:?}) plus {SLOWDOWN_FLOOR:?}"
        ));
    }
    assert!(
        slow_read < LARGE,
        "the slow visitor read all {LARGE} bytes in {SLOW_FOR:?}: it was not slow"
    );
}

#[test]
fn http_neighbours_are_served_beside_a_slow_reader() {
    let server = Server::start(&[]);
    let service = HttpService::start("neighbourhood");
    let (client, forwarding) = http_tunnel(&server, "slow", service.port());

    neighbours_beside_a_slow_reader(&Entry::http(&server, &forwarding), &service, &client);
}

#[test]
fn tcp_neighbours_are_served_beside_a_slow_reader() {
    let server = Server::start(&[]);
    let service = HttpService::start("neighbourhood");
    let (client, forwarding) = Client::tcp_tunnel(&server, service.port(), &[]);

    neighbours_beside_a_slow_reader(&Entry::tcp(&forwarding), &service, &client);
}

// ---- spill files ----------------------------------------------------------------------------

/// A download that spills: past the 256 KiB kept in memory and the sockets' buffers.
const SPILLED: u64 = 32 * MIB;
/// Bytes on disk that show the spill file really holds the visitor's data.
const ON_DISK: u64 = 4 * MIB;

/// A spill directory for `--spill-dir` in a fresh temporary directory: canonical, because
/// `/proc/PID/fd` shows resolved paths, and not yet created, so the server makes it.
fn spill_dir() -> (tempfile::TempDir, PathBuf) {
    let scratch = tempfile::Builder::new()
        .prefix("tunnel-e2e-spill")
        .tempdir()
        .expect("create a temporary directory");
    let dir = scratch
        .path()
        .canonicalize()
        .expect("canonicalize the temporary directory")
        .join("spill");
    (scratch, dir)
}

/// Polls `found` until it gives a value, bounded by [`FAILURE_TIMEOUT`]; the short sleep only
/// paces the poll.
fn poll<T>(mut found: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + FAILURE_TIMEOUT;
    loop {
        if let Some(value) = found() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the server to hold an unlinked file under `dir` with at least `len` bytes.
fn wait_spill_file(server: &Server, dir: &Path, len: u64) -> DeletedFile {
    poll(|| {
        deleted_files_under(server.pid(), dir)
            .into_iter()
            .find(|f| f.len >= len)
    })
    .unwrap_or_else(|| {
        panic!(
            "the server never held {len} bytes in an unlinked file under {}; open there: {:?}\n  server log:\n{}",
            dir.display(),
            deleted_files_under(server.pid(), dir),
            server.log()
        )
    })
}

/// Waits until the server holds no file under `dir`.
fn wait_no_spill_file(server: &Server, dir: &Path, after: &str) {
    if poll(|| {
        deleted_files_under(server.pid(), dir)
            .is_empty()
            .then_some(())
    })
    .is_none()
    {
        panic!(
            "{after}, the server still holds {:?}\n  server log:\n{}",
            deleted_files_under(server.pid(), dir),
            server.log()
        );
    }
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("read a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn spill_files_are_unlinked_and_gone_after_the_visitor_and_after_kill_9() {
    let (_scratch, dir) = spill_dir();
    let server = Server::builder()
        .args(["--spill-dir", &dir.display().to_string()])
        .start();
    let announced = format!("spilling slow visitors' data under {}:", dir.display());
    server.wait_log_line(|line| line.contains(&announced), FAILURE_TIMEOUT);
    assert!(dir.is_dir(), "the server did not create {}", dir.display());
    let service = HttpService::start("spill");
    let (client, forwarding) = http_tunnel(&server, "spill", service.port());
    let entry = Entry::http(&server, &forwarding);
    let download = || {
        entry
            .start_download(SPILLED)
            .unwrap_or_else(|e| client.fail(&format!("start a download: {e}")))
    };

    // A visitor that reads nothing for now: its data goes to disk, in a file with no name.
    let mut visitor = download();
    let file = wait_spill_file(&server, &dir, ON_DISK);
    eprintln!("spilling to {} ({} bytes so far)", file.link, file.len);
    assert_eq!(
        entries(&dir),
        Vec::<String>::new(),
        "a spill file has a name while in use"
    );
    // Then it reads everything: intact and in order, from memory and the file.
    let digest = hash_exact(visitor.reader(), SPILLED, || {})
        .unwrap_or_else(|e| client.fail(&format!("the spilled download broke off: {e}")));
    assert_eq!(
        hex(&digest),
        hex(&TestBytes::sha256(SPILLED, SPILLED)),
        "the spilled download arrived changed"
    );
    drop(visitor);
    wait_no_spill_file(&server, &dir, "after a visitor read its download and left");

    // A visitor that leaves with its data still on disk takes the file with it.
    let visitor = download();
    wait_spill_file(&server, &dir, ON_DISK);
    drop(visitor);
    wait_no_spill_file(
        &server,
        &dir,
        "after a visitor left in the middle of spilling",
    );

    // A server killed while a visitor spills leaves nothing behind.
    let _visitor = download();
    wait_spill_file(&server, &dir, ON_DISK);
    server.stop();
    assert_eq!(
        entries(&dir),
        Vec::<String>::new(),
        "the spill directory has entries after kill -9"
    );
}

// ---- the per-visitor cap --------------------------------------------------------------------

/// The caps for the cut tests: small, so that a visitor that never reads passes them at once.
const CAP_FLAGS: [&str; 4] = [
    "--spill-memory-per-visitor",
    "64KiB",
    "--spill-max-per-visitor",
    "2MiB",
];
/// Far more than the cap plus every buffer on the way.
const CUT_DOWNLOAD: u64 = 64 * MIB;

/// A visitor that never reads a large download passes the cap: one warning names the cut, the
/// visitor's connection ends before the end of its download, its spill file goes, and a neighbour
/// on the same tunnel is still served.
fn visitor_past_the_cap_is_cut(
    server: &Server,
    dir: &Path,
    entry: &Entry,
    service: &HttpService,
    client: &Client,
) {
    let mut visitor = HttpConn::connect(entry.addr)
        .unwrap_or_else(|e| client.fail(&format!("connect the visitor: {e}")));
    visitor
        .send(
            entry
                .request(&format!("/download/{CUT_DOWNLOAD}"), "keep-alive")
                .as_bytes(),
        )
        .unwrap_or_else(|e| client.fail(&format!("send the download request: {e}")));

    let line = server.wait_log_line(|line| line.contains(CUT_LINE), FAILURE_TIMEOUT);
    assert!(line.contains("WARN"), "the cut is not a warning: {line:?}");
    // Only now does it read: what it gets ends early.
    let (closed, received) = visitor.read_until_closed(FAILURE_TIMEOUT);
    eprintln!(
        "cut visitor received {} bytes before its connection ended",
        received.len()
    );
    assert!(
        closed,
        "the cut visitor's connection is still open after {} bytes\n{client}",
        received.len()
    );
    assert!(
        (received.len() as u64) < CUT_DOWNLOAD,
        "the cut visitor received its whole download ({} bytes)\n{client}",
        received.len()
    );
    wait_no_spill_file(server, dir, "after a visitor was cut");

    entry
        .small_request(service)
        .unwrap_or_else(|e| client.fail(&format!("the neighbour after the cut: {e}")));
    let cuts = server.log_lines_matching(|line| line.contains(CUT_LINE));
    assert_eq!(cuts.len(), 1, "one cut, one line: {cuts:#?}");
}

#[test]
fn http_visitor_past_the_spill_cap_is_cut_and_neighbours_are_served() {
    let (_scratch, dir) = spill_dir();
    let server = Server::builder()
        .args(CAP_FLAGS)
        .args(["--spill-dir", &dir.display().to_string()])
        .start();
    let service = HttpService::start("capped");
    let (client, forwarding) = http_tunnel(&server, "capped", service.port());

    let entry = Entry::http(&server, &forwarding);
    visitor_past_the_cap_is_cut(&server, &dir, &entry, &service, &client);
}

#[test]
fn tcp_visitor_past_the_spill_cap_is_cut_and_neighbours_are_served() {
    let (_scratch, dir) = spill_dir();
    let server = Server::builder()
        .args(CAP_FLAGS)
        .args(["--spill-dir", &dir.display().to_string()])
        .start();
    let service = HttpService::start("capped");
    let (client, forwarding) = Client::tcp_tunnel(&server, service.port(), &[]);

    let entry = Entry::tcp(&forwarding);
    visitor_past_the_cap_is_cut(&server, &dir, &entry, &service, &client);
}
