//! The admin listener's page at `/`: the same data as the JSON API as one server-rendered HTML
//! page. No script, no build step, nothing fetched from elsewhere; it reloads itself, and it
//! reads on a phone (viewport meta, tables that scroll sideways). Every string a user chose
//! (names, keys, addresses) is HTML-escaped.

use std::fmt::Write as _;

use serde_json::Value;

use crate::admin::Snapshot;

/// Seconds between the page's own reloads.
const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0 auto;padding:0.5rem 1rem;max-width:72rem;color:#222}\
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:0.9rem}\
th,td{text-align:left;padding:0.3rem 0.5rem;border-bottom:1px solid #ddd;white-space:nowrap}\
td.key{font-family:monospace;font-size:0.8rem}.empty{color:#777}";

/// The whole page.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let mut page = String::with_capacity(4096);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(
        page,
        "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">"
    );
    let _ = write!(
        page,
        "<title>tunnel admin</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        page,
        "<h1>tunnel</h1><p id=\"summary\">{} connections, {} endpoints, {} reservations \
         (reloads every {REFRESH_SECONDS}s; <a href=\"/metrics\">metrics</a>)</p>",
        snapshot.connections.len(),
        snapshot.endpoints.len(),
        snapshot.reservations.len()
    );
    table(
        &mut page,
        "endpoints",
        "Endpoints",
        &[
            "URL",
            "kind",
            "conn",
            "visitors",
            "total",
            "bytes in",
            "bytes out",
            "2xx",
            "4xx",
            "5xx",
        ],
        &snapshot.endpoints,
        |e| {
            vec![
                cell(&e["url"]),
                cell(&e["kind"]),
                cell(&e["connection"]),
                cell(&e["visitors_now"]),
                cell(&e["visitors_total"]),
                cell(&e["bytes_in"]),
                cell(&e["bytes_out"]),
                cell(&e["requests"]["2xx"]),
                cell(&e["requests"]["4xx"]),
                cell(&e["requests"]["5xx"]),
            ]
        },
    );
    table(
        &mut page,
        "connections",
        "Connections",
        &["id", "key", "comment", "peer", "connected", "endpoints"],
        &snapshot.connections,
        |c| {
            let endpoints = c["endpoints"].as_array().map_or(0, Vec::len);
            vec![
                cell(&c["id"]),
                cell(&c["key"]),
                cell(&c["key_comment"]),
                cell(&c["peer"]),
                c["connected_seconds"]
                    .as_u64()
                    .map_or_else(String::new, duration),
                endpoints.to_string(),
            ]
        },
    );
    table(
        &mut page,
        "reservations",
        "Reservations",
        &["name or port", "key", "left"],
        &snapshot.reservations,
        |r| {
            let address = if r["name"].is_null() {
                &r["port"]
            } else {
                &r["name"]
            };
            vec![
                cell(address),
                cell(&r["key"]),
                r["seconds_left"]
                    .as_u64()
                    .map_or_else(String::new, duration),
            ]
        },
    );
    page.push_str("</body></html>\n");
    page
}

/// One section: a heading and a table (or a line saying there is nothing). Cells come in as
/// plain text and are escaped here.
fn table(
    page: &mut String,
    id: &str,
    title: &str,
    headings: &[&str],
    rows: &[Value],
    cells: impl Fn(&Value) -> Vec<String>,
) {
    let _ = write!(page, "<h2>{title}</h2>");
    if rows.is_empty() {
        let _ = write!(page, "<p class=\"empty\" id=\"{id}\">none</p>");
        return;
    }
    let _ = write!(page, "<div class=\"scroll\"><table id=\"{id}\"><thead><tr>");
    for heading in headings {
        let _ = write!(page, "<th>{}</th>", escape(heading));
    }
    page.push_str("</tr></thead><tbody>");
    for row in rows {
        page.push_str("<tr>");
        for (i, text) in cells(row).iter().enumerate() {
            let class = if headings.get(i) == Some(&"key") {
                " class=\"key\""
            } else {
                ""
            };
            let _ = write!(page, "<td{class}>{}</td>", escape(text));
        }
        page.push_str("</tr>");
    }
    page.push_str("</tbody></table></div>");
}

/// A JSON value as the text a cell shows.
fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `90` as `1m30s`, `7260` as `2h1m`.
fn duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Text made safe inside an element or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn what_users_chose_is_escaped_and_the_page_reloads_itself() {
        let snapshot = Snapshot {
            connections: vec![json!({
                "id": 1, "key": "SHA256:x", "key_comment": "eve <b>@</b> laptop & co",
                "peer": "127.0.0.1:5",
                "connected_seconds": 3725, "endpoints": [1],
            })],
            endpoints: vec![json!({
                "id": 1, "connection": 1, "kind": "http",
                "url": "http://a\"><script>alert(1)</script>.localhost",
                "visitors_now": 0, "visitors_total": 2, "bytes_in": 10, "bytes_out": 20,
                "requests": {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 0},
            })],
            reservations: vec![],
        };
        let page = render(&snapshot);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            page.contains("eve &lt;b&gt;@&lt;/b&gt; laptop &amp; co"),
            "{page}"
        );
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(page.contains("name=\"viewport\""));
        assert!(page.contains("1h2m"));
        assert!(page.contains("<p class=\"empty\" id=\"reservations\">none</p>"));
    }
}
