//! A certificate's fields as a client's CA wrote them (principals, `source-address`, critical
//! options, extensions) against a `cert-authority` line's options: judged without panicking.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use tunnel_core::{certificate_login, CertificateKind, KeyFingerprint, KeyRules, UserCertificate};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Fields separated by NUL: line options, principals (comma-separated), source-address,
    // another critical option's name, an extension, the user name.
    let mut fields = text.split('\0');
    let mut next = || fields.next().unwrap_or("").to_owned();
    let (options, principals, source, option, extension, user) =
        (next(), next(), next(), next(), next(), next());
    let Ok(line) = KeyRules::from_options(&options, Instant::now(), SystemTime::now()) else {
        return;
    };
    let mut critical_options = BTreeMap::from([("source-address".to_owned(), source)]);
    if !option.is_empty() {
        critical_options.insert(option, String::new());
    }
    let certificate = UserCertificate {
        authority: KeyFingerprint::new("SHA256:ca"),
        kind: CertificateKind::User,
        key_id: String::new(),
        principals: principals
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        critical_options,
        extensions: BTreeSet::from([extension]),
    };
    let now = Instant::now();
    if let Ok(login) = certificate_login(
        &certificate,
        &user,
        Some(&line),
        "203.0.113.7".parse().unwrap(),
        now,
    ) {
        assert!(
            login.identity.principal_of(&certificate.authority) == Some(login.principal.as_str())
        );
        let _ = login.restrictions.permits_forward("app", 80);
    }
});
