//! `tunnel-runtime`: runs the tunnel gateway's core on tokio with russh. It executes what
//! `tunnel-core` decides and holds no policy of its own.

#![forbid(unsafe_code)]

pub mod accept;
pub mod access_log;
pub mod admin;
mod admin_page;
pub mod admission;
pub mod channel_io;
pub mod config;
pub mod counted;
pub mod driver;
pub mod holdings_file;
pub mod http;
pub mod http_headers;
pub mod https;
pub mod idle;
pub mod key_watch;
pub mod keys;
pub mod killable;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod proxy_accept;
pub mod proxy_header;
pub mod read_buffer;
pub mod replay;
pub mod server;
pub mod session_writer;
pub mod socket_activation;
pub mod spill;
pub mod ssh;
pub mod state_file;
pub mod tcp;
pub mod tls;
