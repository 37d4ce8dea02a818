//! The admin listener's page at `/`, loaded in a real browser: Debian's `chromium --headless`
//! (installed by .ci/run) renders it at a phone's size, a screenshot is taken, and the DOM it
//! built is checked for what three tunnels and a reservation should show.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tunnel_e2e::http::request_raw;
use tunnel_e2e::http_service::HttpService;
use tunnel_e2e::{Client, Key, LocalService, Server, FAILURE_TIMEOUT};

const CHROMIUM: &str = "chromium";

/// A phone's viewport in CSS pixels.
const PHONE: &str = "390,844";

fn admin_addr(server: &Server) -> SocketAddr {
    let line = server.wait_log_line(|l| l.contains("listening admin on"), FAILURE_TIMEOUT);
    line.rsplit(' ')
        .find_map(|token| token.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Runs headless chromium with `args` then `url`, bounded by the failure timeout.
fn chromium(profile: &Path, args: &[&str], url: &str) -> Output {
    let mut child = Command::new(CHROMIUM)
        // As root (CI) chromium's sandbox cannot start; the page is our own.
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={PHONE}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {CHROMIUM} ({e}): install it (apt-get install chromium; .ci/run does)"
            )
        });
    let deadline = Instant::now() + FAILURE_TIMEOUT * 2;
    while child.try_wait().expect("wait for chromium").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish loading {url} in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("chromium's output");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The rows of the table with this id in the serialized DOM, each as its cells' text.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id} in the page:\n{dom}"));
    let table = &dom[start..start + dom[start..].find("</table>").expect("a closed table")];
    let body = &table[table.find("<tbody>").expect("a tbody")..];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').expect("a cell") + 1..];
                    text[..text.find("</td>").expect("a closed cell")].to_owned()
                })
                .collect()
        })
        .collect()
}

fn reservation_listed(addr: SocketAddr) -> bool {
    let request = b"GET /api/reservations HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    request_raw(addr, request)
        .is_ok_and(|r| String::from_utf8_lossy(&r.body).contains("old.localhost"))
}

#[test]
fn the_page_shows_tunnels_and_reservations_in_a_real_browser_at_a_phones_size() {
    let server = Server::start(&["--admin-addr", "127.0.0.1:0"]);
    let addr = admin_addr(&server);
    let url = format!("http://{addr}/");
    let service = HttpService::start("web");
    let echo = LocalService::echo();
    let (alice, bob) = (Key::generate(), Key::generate());
    let mut web = Client::builder(&server)
        .key(&alice)
        .forward(format!("web:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    let web_fw = web.wait_forwarding();
    let (_tcp, tcp_fw) = Client::tcp_tunnel(&server, echo.port(), &[]);
    let mut gone = Client::builder(&server)
        .key(&bob)
        .forward(format!("old:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    gone.wait_forwarding();
    gone.disconnect();

    // The disconnect has reached the core once the API lists its reservation.
    let deadline = Instant::now() + FAILURE_TIMEOUT;
    while !reservation_listed(addr) {
        assert!(
            Instant::now() < deadline,
            "old.localhost was never reserved"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let profile = tempfile::tempdir().expect("a chromium profile dir");
    let output = chromium(profile.path(), &["--dump-dom"], &url);
    let dom = String::from_utf8(output.stdout).expect("utf-8 DOM");
    assert!(
        dom.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
        "{dom}"
    );
    assert!(
        dom.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "the page runs no script");

    let endpoints = table_rows(&dom, "endpoints");
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    let urls: Vec<&str> = endpoints.iter().map(|row| row[0].as_str()).collect();
    assert!(urls.contains(&web_fw.url.as_str()), "{urls:?}");
    assert!(urls.contains(&tcp_fw.url.as_str()), "{urls:?}");
    let connections = table_rows(&dom, "connections");
    assert_eq!(connections.len(), 2, "{connections:?}");
    assert!(connections.iter().all(|row| row[1].starts_with("SHA256:")));
    let reservations = table_rows(&dom, "reservations");
    assert_eq!(reservations.len(), 1, "{reservations:?}");
    assert_eq!(reservations[0][0], "old.localhost");

    let shot = profile.path().join("page.png");
    let screenshot = format!("--screenshot={}", shot.display());
    chromium(profile.path(), &[&screenshot], &url);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // The IHDR chunk: width and height in device pixels, the phone's viewport.
    let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
    let height = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
    assert_eq!((width, height), (390, 844));
    assert!(web.is_running());
}
