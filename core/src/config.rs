//! What the gateway is configured with: plain data behind setters, filled by the adapter from its
//! flags and files.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::authorized::KeyList;
use crate::ids::KeyFingerprint;
use crate::key_rules::KeyRules;
use crate::spill::SpillLimits;

/// The gateway's whole configuration. Start from [`GatewayConfig::new`] (the contract's dev
/// defaults) and change what differs with the `with_*` setters.
///
/// ```
/// use std::time::Duration;
/// use tunnel_core::{GatewayConfig, Limits};
///
/// let config = GatewayConfig::new("tunnel.example.com", 80, 443)
///     .with_tcp_ports(30000..=30999)
///     .with_name_grace(Duration::from_secs(90))
///     .with_limits(Limits::default().with_visitors_per_endpoint(64));
/// assert_eq!(config.limits().visitors_per_endpoint(), 64);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    domain: String,
    http_port: u16,
    https_port: u16,
    tcp_ports: RangeInclusive<u16>,
    name_grace: Duration,
    command_deadline: Duration,
    auth_timeout: Duration,
    authorized_keys: Option<BTreeSet<KeyFingerprint>>,
    limits: Limits,
    spill: SpillLimits,
    key_quotas: BTreeMap<KeyFingerprint, KeyQuota>,
    key_rules: BTreeMap<KeyFingerprint, KeyRules>,
    authorities: BTreeMap<KeyFingerprint, KeyRules>,
    admin_keys: BTreeSet<KeyFingerprint>,
    home: Home,
}

/// What the server's own page at DOMAIN tells a visitor about connecting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Home {
    ssh_port: u16,
    host_key: String,
}

impl GatewayConfig {
    /// The contract's dev defaults for `domain` (lowercase, no trailing dot; see
    /// [`base_domain`](crate::base_domain)) whose HTTP and HTTPS listeners are reached on the given
    /// public ports: tcp ports 20000-20999, names reserved for 10 minutes after a disconnect, a 1 s
    /// wait for the command, 30 s to authenticate, any key accepted, [`Limits::default`].
    pub fn new(domain: impl Into<String>, http_port: u16, https_port: u16) -> Self {
        Self {
            domain: domain.into(),
            http_port,
            https_port,
            tcp_ports: 20000..=20999,
            name_grace: Duration::from_secs(600),
            command_deadline: Duration::from_secs(1),
            auth_timeout: Duration::from_secs(30),
            authorized_keys: None,
            limits: Limits::default(),
            spill: SpillLimits::default(),
            key_quotas: BTreeMap::new(),
            key_rules: BTreeMap::new(),
            authorities: BTreeMap::new(),
            admin_keys: BTreeSet::new(),
            home: Home {
                ssh_port: 22,
                host_key: String::new(),
            },
        }
    }

    /// Takes from `new` what a running gateway can change ([`Input::Reconfigured`]): the
    /// [`Limits`] and per-key quotas, the name grace, the wait for the command, the
    /// authentication timeout and the admin keys. Each applies to the decisions made from now on
    /// (a connection already waiting keeps its deadline, a reservation already made its grace,
    /// an endpoint already live its visitor limits). The rest stays as the gateway started:
    /// the domain, the ports, the tcp range and the spill limits shape what exists and need a
    /// restart; the authorized keys change through
    /// [`Input::AuthorizedKeysChanged`].
    ///
    /// [`Input::Reconfigured`]: crate::Input::Reconfigured
    /// [`Input::AuthorizedKeysChanged`]: crate::Input::AuthorizedKeysChanged
    pub fn take_live(&mut self, new: GatewayConfig) {
        self.limits = new.limits;
        self.key_quotas = new.key_quotas;
        self.name_grace = new.name_grace;
        self.command_deadline = new.command_deadline;
        self.auth_timeout = new.auth_timeout;
        self.admin_keys = new.admin_keys;
    }

    /// Ports tcp endpoints may use. The range must not contain port 0.
    pub fn with_tcp_ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.tcp_ports = ports;
        self
    }

    /// How long a name (or tcp port) stays reserved for its key after its connection ends; zero
    /// turns reservation off.
    pub fn with_name_grace(mut self, grace: Duration) -> Self {
        self.name_grace = grace;
        self
    }

    /// How long forwards wait for the exec command before the remote port decides their kind
    /// (`ssh -N` sends none).
    pub fn with_command_deadline(mut self, deadline: Duration) -> Self {
        self.command_deadline = deadline;
        self
    }

    /// How long a connection may stay unauthenticated before it is closed.
    pub fn with_auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// Only these keys may log in; `None` accepts any key, which is only sane when nobody else
    /// can reach the SSH listener (the adapter refuses to start otherwise).
    pub fn with_authorized_keys(mut self, keys: Option<BTreeSet<KeyFingerprint>>) -> Self {
        self.authorized_keys = keys;
        self
    }

    /// What one client may hold.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Keys that may run `ssh HOST admin ...` (they must still be let in like any key).
    pub fn with_admin_keys(mut self, keys: BTreeSet<KeyFingerprint>) -> Self {
        self.admin_keys = keys;
        self
    }

    /// Whether `key` may run `ssh HOST admin ...`.
    pub fn is_admin(&self, key: &KeyFingerprint) -> bool {
        self.admin_keys.contains(key)
    }

    /// What the server's own page at DOMAIN tells visitors: the public SSH port users connect to
    /// and the host key's fingerprint (`SHA256:...`), so they can check it on first connect.
    pub fn with_home(mut self, ssh_port: u16, host_key_fingerprint: impl Into<String>) -> Self {
        self.home = Home {
            ssh_port,
            host_key: host_key_fingerprint.into(),
        };
        self
    }

    /// The server's own page at DOMAIN, in plain text: what this server is and how to use it.
    pub fn home_page(&self) -> String {
        let domain = &self.domain;
        let port = match self.home.ssh_port {
            22 => String::new(),
            port => format!(" -p {port}"),
        };
        let mut page = format!(
            "{domain} is a tunnel server: it publishes services that their owners share with ssh.\n\n\
             Share a local web app on port 3000:\n    ssh -R 80:localhost:3000{port} {domain} http\n\
             Share any TCP service, here port 22:\n    ssh -R 0:localhost:22{port} {domain} tcp\n\
             All commands and flags:\n    ssh{port} {domain} help\n"
        );
        if !self.home.host_key.is_empty() {
            page.push_str(&format!(
                "\nThe server's host key: {}\n",
                self.home.host_key
            ));
        }
        page
    }

    /// Only the keys of `list` may log in, each under its line's rules (in place of
    /// [`with_authorized_keys`](Self::with_authorized_keys) and
    /// [`with_key_rules`](Self::with_key_rules)).
    pub fn with_key_list(mut self, list: KeyList) -> Self {
        self.set_key_list(list);
        self
    }

    pub(crate) fn set_key_list(&mut self, list: KeyList) {
        self.authorized_keys = Some(list.keys().map(|(key, _)| key.clone()).collect());
        self.key_rules = list
            .keys()
            .filter(|(_, rules)| **rules != KeyRules::default())
            .map(|(key, rules)| (key.clone(), rules.clone()))
            .collect();
        self.authorities = list
            .authorities()
            .map(|(key, rules)| (key.clone(), rules.clone()))
            .collect();
    }

    /// The rules of a `cert-authority` line, if `key` is one.
    pub fn authority(&self, key: &KeyFingerprint) -> Option<&KeyRules> {
        self.authorities.get(key)
    }

    /// Every `cert-authority` line's key and rules.
    pub fn authorities(&self) -> impl Iterator<Item = (&KeyFingerprint, &KeyRules)> {
        self.authorities.iter()
    }

    /// Whether any `cert-authority` line is listed.
    pub fn has_authorities(&self) -> bool {
        !self.authorities.is_empty()
    }

    /// The rules of one key's `authorized_keys` options (`from=`, `expiry-time=`, `restrict`,
    /// `permitlisten=`): checked at authentication and at each forward.
    pub fn with_key_rules(mut self, key: KeyFingerprint, rules: KeyRules) -> Self {
        self.key_rules.insert(key, rules);
        self
    }

    /// The rules of `key`, if its line set any.
    pub fn rules_for(&self, key: &KeyFingerprint) -> Option<&KeyRules> {
        self.key_rules.get(key)
    }

    /// A quota of its own for one key, in place of the one in [`Limits`] (an operator's heavy
    /// user, a team's shared key).
    pub fn with_key_quota(mut self, key: KeyFingerprint, quota: KeyQuota) -> Self {
        self.key_quotas.insert(key, quota);
        self
    }

    /// What `key` may hold, live or reserved: its own quota, or the one in [`Limits`].
    pub fn quota_for(&self, key: &KeyFingerprint) -> KeyQuota {
        self.key_quotas.get(key).copied().unwrap_or(KeyQuota {
            names: self.limits.names_per_key,
            tcp_ports: self.limits.tcp_ports_per_key,
        })
    }

    /// What slow visitors may make the server hold (see [`SpillLimits`]).
    pub fn with_spill_limits(mut self, spill: SpillLimits) -> Self {
        self.spill = spill;
        self
    }

    /// What slow visitors may make the server hold.
    pub fn spill_limits(&self) -> &SpillLimits {
        &self.spill
    }

    /// Base domain: names are `LABEL.DOMAIN`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The public port of the HTTP listener, shown in `http://` URLs (omitted when 80).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The public port of the HTTPS listener, shown in `tls://` and `https://` URLs (omitted when
    /// 443).
    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    /// Ports tcp endpoints may use.
    pub fn tcp_ports(&self) -> &RangeInclusive<u16> {
        &self.tcp_ports
    }

    /// How long an address stays reserved for its key after its connection ends.
    pub fn name_grace(&self) -> Duration {
        self.name_grace
    }

    /// How long forwards wait for the exec command.
    pub fn command_deadline(&self) -> Duration {
        self.command_deadline
    }

    /// How long a connection may stay unauthenticated.
    pub fn auth_timeout(&self) -> Duration {
        self.auth_timeout
    }

    /// Keys allowed in; `None` accepts any key.
    pub fn authorized_keys(&self) -> Option<&BTreeSet<KeyFingerprint>> {
        self.authorized_keys.as_ref()
    }

    /// What one client may hold.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Limits that bound what one client can hold, so that one client cannot starve the others.
/// [`Limits::default`] gives the server's defaults; change them with the `with_*` setters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    endpoints_per_connection: usize,
    connections_per_key: usize,
    unauthenticated_per_ip: usize,
    queued_lines: usize,
    bind_attempts: usize,
    visitors_per_endpoint: usize,
    names_per_key: usize,
    tcp_ports_per_key: usize,
    startups: Startups,
    visitors_per_source: usize,
    visitors_total: usize,
    visitor_connections_per_source: usize,
}

/// Random early drop of new connections while many are not authenticated yet, as OpenSSH's
/// `MaxStartups start:rate:full`: below `start` none is dropped; from `start` each new one is
/// dropped with probability `rate`%, rising linearly to 100% at `full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Startups {
    /// Unauthenticated connections from which drops begin.
    pub start: usize,
    /// The drop probability at `start`, in percent.
    pub rate: u32,
    /// Unauthenticated connections at which every new one is dropped.
    pub full: usize,
}

impl Startups {
    /// Whether a new connection arriving while `unauthenticated` others are waiting is dropped;
    /// `random` is called at most once, for a draw when the answer is left to chance.
    pub fn drops(&self, unauthenticated: usize, random: impl FnOnce() -> u32) -> bool {
        if unauthenticated < self.start {
            return false;
        }
        if unauthenticated >= self.full || self.full <= self.start {
            return true;
        }
        let rate = u64::from(self.rate.min(100));
        let span = (self.full - self.start) as u64;
        let past = (unauthenticated - self.start) as u64;
        let percent = rate + (100 - rate) * past / span;
        u64::from(random() % 100) < percent
    }
}

/// How many names and tcp ports one key may hold at once, live or reserved for its reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyQuota {
    /// Names (http and tls endpoints).
    pub names: usize,
    /// Tcp ports.
    pub tcp_ports: usize,
}

impl Default for Limits {
    /// 64 endpoints per connection, 1024 connections per key, 64 unauthenticated connections
    /// per IP, 32 lines queued before the session opens, 8 ports tried per tcp endpoint, 1024
    /// visitors per endpoint (128 of them from one source), 16384 on the whole server, 128
    /// connections to the http and https listeners from one source, 64 names and 16 tcp ports
    /// per key, random early drop of new connections from 100 unauthenticated ones (30%) to
    /// 1000 (all).
    fn default() -> Self {
        Self {
            endpoints_per_connection: 64,
            connections_per_key: 1024,
            unauthenticated_per_ip: 64,
            queued_lines: 32,
            bind_attempts: 8,
            visitors_per_endpoint: 1024,
            names_per_key: 64,
            tcp_ports_per_key: 16,
            startups: Startups {
                start: 100,
                rate: 30,
                full: 1000,
            },
            visitors_per_source: 128,
            visitors_total: 16384,
            visitor_connections_per_source: 128,
        }
    }
}

macro_rules! limit {
    ($(#[$doc:meta])* $field:ident, $setter:ident) => {
        $(#[$doc])*
        pub fn $field(&self) -> usize {
            self.$field
        }

        $(#[$doc])*
        pub fn $setter(mut self, value: usize) -> Self {
            self.$field = value;
            self
        }
    };
}

impl Limits {
    /// Whether one more connection to the http or https listeners is let in from a source that
    /// holds `open` there already ([`visitor_connections_per_source`](Self::visitor_connections_per_source)).
    pub fn admits_visitor_connection(&self, open: usize) -> bool {
        open < self.visitor_connections_per_source
    }

    /// Random early drop of new connections while many are unauthenticated.
    pub fn startups(&self) -> Startups {
        self.startups
    }

    /// Sets the random early drop (see [`Startups`]).
    pub fn with_startups(mut self, startups: Startups) -> Self {
        self.startups = startups;
        self
    }

    limit!(
        /// Forwards (endpoints) one connection may hold; one more ends the session.
        endpoints_per_connection,
        with_endpoints_per_connection
    );
    limit!(
        /// Live connections one key may hold; one more ends the new session.
        connections_per_key,
        with_connections_per_key
    );
    limit!(
        /// Connections not yet authenticated from one IPv4 address or one IPv6 /64; one more is
        /// closed at once.
        unauthenticated_per_ip,
        with_unauthenticated_per_ip
    );
    limit!(
        /// Lines kept for a session that has not opened its channel yet; later ones are dropped.
        queued_lines,
        with_queued_lines
    );
    limit!(
        /// Ports tried for one port-0 tcp endpoint when the host refuses to bind them.
        bind_attempts,
        with_bind_attempts
    );
    limit!(
        /// Visitors one endpoint serves at once (tcp and tls connections, http requests in
        /// flight); past it, the visitor is refused ([`VisitorRefusal::Busy`](crate::VisitorRefusal::Busy)).
        /// Keeps one busy tunnel from starving the rest.
        visitors_per_endpoint,
        with_visitors_per_endpoint
    );
    limit!(
        /// Names one key may hold, live or reserved for its reconnects; one more is refused
        /// naming the quota. Bounds what a reconnect loop can make the server remember.
        names_per_key,
        with_names_per_key
    );
    limit!(
        /// Visitors one source (an IPv4 address, an IPv6 /64) may have at one endpoint at once:
        /// its share, so that one visitor cannot hold an endpoint's whole limit.
        visitors_per_source,
        with_visitors_per_source
    );
    limit!(
        /// Visitors the whole server serves at once; past it every new one is refused.
        visitors_total,
        with_visitors_total
    );
    limit!(
        /// Connections to the http and https listeners one source (an IPv4 address, an IPv6
        /// /64) may hold open at once, whatever they are doing (silent, mid-head, between
        /// requests, streaming); one more is closed as soon as it is accepted. The request
        /// limits count requests in flight, so without this a source's silent or finished
        /// connections would be bounded only by their timeouts, and could take every file
        /// descriptor the server has. As many as its share of one endpoint
        /// ([`visitors_per_source`](Self::visitors_per_source)) by default, so a source can
        /// still fill its share with HTTP/1.1 requests.
        visitor_connections_per_source,
        with_visitor_connections_per_source
    );
    limit!(
        /// Tcp ports one key may hold, live or reserved for its reconnects; one more is refused
        /// naming the quota. Keeps one key from taking the whole range.
        tcp_ports_per_key,
        with_tcp_ports_per_key
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_up_to_its_visitor_connections() {
        let limits = Limits::default().with_visitor_connections_per_source(2);
        assert!(limits.admits_visitor_connection(0));
        assert!(limits.admits_visitor_connection(1));
        assert!(!limits.admits_visitor_connection(2));
        assert!(Limits::default().admits_visitor_connection(127));
        assert!(!Limits::default().admits_visitor_connection(128));
    }

    #[test]
    fn random_early_drop_rises_from_rate_to_all() {
        let s = Startups {
            start: 10,
            rate: 30,
            full: 20,
        };
        assert!(!s.drops(9, || unreachable!("no draw below start")));
        // At start: 30% of draws drop.
        assert!(s.drops(10, || 29));
        assert!(!s.drops(10, || 30));
        // Half way: 65%.
        assert!(s.drops(15, || 64));
        assert!(!s.drops(15, || 65));
        assert!(s.drops(20, || unreachable!("no draw at full")));
    }
}
