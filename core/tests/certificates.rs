//! OpenSSH user certificates signed by a `cert-authority` key: which may log in, as whom, and
//! with what; decided over the plain data the adapter reads from a verified certificate.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use harness::{key, Harness};
use tunnel_core::{
    certificate_login, CertificateKind, CertificateRefusal, Input, KeyFingerprint, KeyList,
    KeyRules, Reply, UserCertificate,
};

fn rules(options: &str) -> KeyRules {
    KeyRules::from_options(options, Instant::now(), SystemTime::now()).expect("valid options")
}

/// A user certificate from the CA called `ca` for `principals`, with OpenSSH's default
/// extensions (`ssh-keygen -s` without `-O`).
fn cert(ca: &str, principals: &[&str]) -> UserCertificate {
    UserCertificate {
        authority: key(ca),
        kind: CertificateKind::User,
        key_id: format!("{}-laptop", principals.first().unwrap_or(&"nobody")),
        principals: principals.iter().map(|p| (*p).to_owned()).collect(),
        critical_options: BTreeMap::new(),
        extensions: [
            "permit-X11-forwarding",
            "permit-agent-forwarding",
            "permit-port-forwarding",
            "permit-pty",
            "permit-user-rc",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
    }
}

fn peer() -> IpAddr {
    "203.0.113.7".parse().unwrap()
}

fn login(
    certificate: &UserCertificate,
    user: &str,
    line: &str,
) -> Result<tunnel_core::CertificateLogin, CertificateRefusal> {
    let line = rules(line);
    certificate_login(certificate, user, Some(&line), peer(), Instant::now())
}

#[test]
fn a_certificate_logs_in_as_its_cas_principal() {
    let ok = login(&cert("ca", &["alice"]), "v2", "cert-authority").expect("accepted");
    assert_eq!(ok.principal, "alice");
    assert_eq!(ok.identity, KeyFingerprint::new("SHA256:ca/alice"));
    assert_eq!(ok.identity.principal_of(&key("ca")), Some("alice"));
    assert_eq!(ok.identity.principal_of(&key("c")), None);
    assert!(ok.restrictions.permits_forward("app", 80));
    // Of several principals, the SSH user name if it is one, else the first allowed.
    let both = cert("ca", &["alice", "bob"]);
    assert_eq!(
        login(&both, "bob", "cert-authority").unwrap().principal,
        "bob"
    );
    assert_eq!(
        login(&both, "v2", "cert-authority").unwrap().principal,
        "alice"
    );
    let only_bob = "cert-authority,principals=\"bob,carol\"";
    assert_eq!(login(&both, "alice", only_bob).unwrap().principal, "bob");
}

#[test]
fn what_a_certificate_cannot_do_is_refused_and_logged_with_its_reason() {
    let refusal = |c: &UserCertificate, line: &str| login(c, "v2", line).expect_err("refused");
    // Not signed by a cert-authority line (unlisted, or listed only as a key).
    let alice = cert("ca", &["alice"]);
    assert!(matches!(
        certificate_login(&alice, "v2", None, peer(), Instant::now()),
        Err(CertificateRefusal::UnknownAuthority { .. })
    ));
    assert!(matches!(
        refusal(&alice, "no-pty"),
        CertificateRefusal::UnknownAuthority { .. }
    ));
    let host = UserCertificate {
        kind: CertificateKind::Host,
        ..alice.clone()
    };
    assert!(matches!(
        refusal(&host, "cert-authority"),
        CertificateRefusal::HostCertificate(_)
    ));
    assert!(matches!(
        refusal(&cert("ca", &[]), "cert-authority"),
        CertificateRefusal::NoPrincipals(_)
    ));
    insta::assert_snapshot!(
        refusal(&alice, "cert-authority,principals=\"bob\"").to_string(),
        @r#"certificate "alice-laptop": none of its principals ["alice"] is in the cert-authority line's principals="#
    );
    let forced = UserCertificate {
        critical_options: BTreeMap::from([("force-command".to_owned(), "tcp".to_owned())]),
        ..alice.clone()
    };
    insta::assert_snapshot!(
        refusal(&forced, "cert-authority").to_string(),
        @r#"certificate "alice-laptop" has critical option force-command, which this server does not enforce"#
    );
    // The CA line's own from= applies to every certificate it signed.
    assert!(matches!(
        refusal(&alice, "cert-authority,from=\"10.0.0.0/8\""),
        CertificateRefusal::AuthorityLine { .. }
    ));
}

#[test]
fn source_address_is_enforced_like_from() {
    let with_source = |value: &str| UserCertificate {
        critical_options: BTreeMap::from([("source-address".to_owned(), value.to_owned())]),
        ..cert("ca", &["alice"])
    };
    assert!(login(
        &with_source("203.0.113.0/24,2001:db8::/32"),
        "v2",
        "cert-authority"
    )
    .is_ok());
    assert!(login(&with_source("203.0.113.7"), "v2", "cert-authority").is_ok());
    assert!(matches!(
        login(&with_source("10.0.0.0/8"), "v2", "cert-authority"),
        Err(CertificateRefusal::SourceAddress { .. })
    ));
    assert!(matches!(
        login(&with_source("example.com"), "v2", "cert-authority"),
        Err(CertificateRefusal::BadSourceAddress { .. })
    ));
}

#[test]
fn without_permit_port_forwarding_nothing_is_forwarded() {
    // `ssh-keygen -O clear`: no extensions at all.
    let cleared = UserCertificate {
        extensions: BTreeSet::new(),
        ..cert("ca", &["alice"])
    };
    let ok = login(&cleared, "v2", "cert-authority").expect("logs in");
    assert!(!ok.restrictions.permits_forward("app", 80));

    let mut h = Harness::builder()
        .key_list(KeyList::new().with_key(key("ca"), rules("cert-authority")))
        .build();
    let conn = h.connect();
    assert!(h.auth_certificate(conn, "v2", cleared));
    let request = h.forward(conn, "app", 80);
    h.exec(conn, "http");
    assert_eq!(h.reply(request), Some(Reply::Refused));
    insta::assert_snapshot!(h.stderr(conn)[0], @r#"error: this certificate may not forward "app":80 (it was signed without permit-port-forwarding) (see --help: ssh HOST help)"#);
    h.assert_no_leaks();
}

#[test]
fn names_belong_to_the_principal_and_come_back_with_a_renewed_certificate() {
    let mut h = Harness::builder()
        .key_list(
            KeyList::new()
                .with_key(key("ca"), rules("cert-authority"))
                .with_key(key("plain"), KeyRules::default()),
        )
        .build();
    // The CA key itself is no login key, but any key may go on to sign: a certificate is
    // offered as its bare key.
    let direct = h.connect();
    assert!(!h.auth(direct, "v2", "ca"));
    assert!(h.gw.accepts_key(&key("someone")));

    let alice = h.connect();
    assert!(h.auth_certificate(alice, "v2", cert("ca", &["alice"])));
    h.forward(alice, "shop", 80);
    h.exec(alice, "http");
    assert_eq!(h.forwarding_lines(alice).len(), 1);
    assert_eq!(h.gw.identity(alice), Some(&key("ca/alice")));
    h.close(alice);

    // Another principal of the same CA cannot have it.
    let bob = h.connect();
    assert!(h.auth_certificate(bob, "v2", cert("ca", &["bob"])));
    h.forward(bob, "shop", 80);
    h.exec(bob, "http");
    assert!(h.stderr(bob)[0].contains("reserved"), "{:?}", h.stderr(bob));
    // Alice's renewed certificate (another key id, another key) gets it back.
    let renewed = UserCertificate {
        key_id: "alice-2027".to_owned(),
        ..cert("ca", &["alice"])
    };
    let again = h.connect();
    assert!(h.auth_certificate(again, "v2", renewed));
    h.forward(again, "shop", 80);
    h.exec(again, "http");
    assert_eq!(h.forwarding_lines(again).len(), 1, "{:?}", h.stderr(again));
    h.assert_no_leaks();
}

#[test]
fn a_refused_certificate_is_answered_and_its_reason_kept_for_the_log() {
    let mut h = Harness::builder()
        .key_list(KeyList::new().with_key(key("ca"), rules("cert-authority,principals=\"ops\"")))
        .build();
    let conn = h.connect();
    assert!(!h.auth_certificate(conn, "v2", cert("ca", &["alice"])));
    assert!(matches!(
        h.session(conn).certificate_refusals[..],
        [CertificateRefusal::PrincipalNotAllowed { .. }]
    ));
    let other = h.connect();
    assert!(!h.auth_certificate(other, "v2", cert("elsewhere", &["ops"])));
    h.assert_no_leaks();
}

#[test]
fn reloading_revokes_certificates_of_a_removed_ca_or_principal() {
    let mut h = Harness::builder()
        .key_list(KeyList::new().with_key(key("ca"), rules("cert-authority")))
        .name_grace(Duration::from_secs(600))
        .build();
    let tunnel = |h: &mut Harness, principal: &str| {
        let conn = h.connect_from(SocketAddr::from(([203, 0, 113, 7], 1000)));
        assert!(h.auth_certificate(conn, "v2", cert("ca", &[principal])));
        h.forward(conn, principal, 80);
        h.exec(conn, "http");
        conn
    };
    let alice = tunnel(&mut h, "alice");
    let bob = tunnel(&mut h, "bob");
    let carol = tunnel(&mut h, "carol");
    h.close(carol);
    assert_eq!(h.gw.reservation_count(), 1);

    // The line now admits only bob.
    h.feed(Input::AuthorizedKeysChanged {
        keys: KeyList::new().with_key(key("ca"), rules("cert-authority,principals=\"bob\"")),
    });
    assert!(h.is_closed(alice));
    insta::assert_snapshot!(h.stderr(alice).join("\n"), @"the authority that signed your certificate no longer admits it on this server; closing");
    assert!(!h.is_closed(bob));
    // Neither alice's live name nor carol's reserved one is kept.
    assert_eq!(h.gw.reservation_count(), 0);

    // The CA is gone: bob too.
    h.feed(Input::AuthorizedKeysChanged {
        keys: KeyList::new(),
    });
    assert!(h.is_closed(bob));
    assert_eq!(h.gw.reservation_count(), 0);
    assert!(!h.gw.accepts_key(&key("anyone")));
    h.assert_no_leaks();
}
