#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod action;
mod authorized;
mod certificates;
mod claims;
mod client_hello;
pub mod command;
mod config;
mod endpoints;
mod error;
mod forward;
mod forwards;
mod gateway;
mod ids;
mod input;
mod key_rules;
mod listing;
mod names;
mod ownership;
mod policy;
mod ports;
mod proxy_protocol;
mod saved;
mod spill;
mod timers;
mod views;
mod visitors;

pub use action::{Action, OutputStream, Reply};
pub use authorized::{KeyList, Revoked};
pub use certificates::{
    certificate_login, CertificateKind, CertificateLogin, CertificateRefusal, UserCertificate,
};
pub use client_hello::{read_client_hello, ClientHello, ClientHelloReader, MAX_CLIENT_HELLO_BYTES};
pub use config::{GatewayConfig, KeyQuota, Limits, Startups};
pub use endpoints::{ChannelTarget, EndpointPolicy, Route};
pub use error::{CommandError, ForwardError, SessionError, Shown};
pub use gateway::{Gateway, CLOSED_BY_SERVER, KICKED, SERVER_RESTARTING, SYNTAX_VERSION};
pub use ids::{ConnId, EndpointId, KeyFingerprint, RequestId};
pub use input::Input;
pub use key_rules::{KeyOptionError, KeyRules};
pub use names::{base_domain, normalize_host, requested_name, Hostname, RANDOM_NAME_LEN};
pub use ownership::Address;
pub use policy::basic_auth_allows;
pub use proxy_protocol::{
    read_proxy_header, ProxiedPeer, ProxyHeader, ProxyHeaderError, ProxyHeaderReader,
    MAX_PROXY_HEADER_BYTES, MAX_V1_BYTES, MAX_V2_PAYLOAD_BYTES,
};
pub use saved::{RestoreSkipped, SavedAddress, SavedHolding, SavedReconnect, SavedState};
pub use spill::{SpillCut, SpillLimits, SpillPlace};
pub use views::{ConnectionView, EndpointView, ReleaseOutcome, ReservationView};
pub use visitors::{request_host, visitor_source, Entrance, TrustedProxies, VisitorRefusal};
