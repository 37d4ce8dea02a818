//! The exec command line: POSIX-shell-like tokenising and the flag grammar, with nom.
//!
//! ssh joins the remote command's arguments with spaces and sends one string (RFC 4254 §6.5), so
//! the user quotes for the remote side: `ssh host "http --basic-auth 'a b:c d'"`. Tokenising,
//! quoting and rendering live only here.

use ipnet::IpNet;
use nom::branch::alt;
use nom::bytes::complete::{is_not, tag, take_while1};
use nom::character::complete::{anychar, char, multispace0};
use nom::combinator::{all_consuming, map, opt, recognize, rest, value};
use nom::multi::{fold_many0, fold_many1, many0};
use nom::sequence::{delimited, preceded, separated_pair, terminated};
use nom::{IResult, Parser};

#[cfg(feature = "__testing")]
use super::ast::HeaderEdits;
use super::ast::{
    AccessRules, AdminCommand, Command, Credentials, EndpointKind, HeaderName, HostHeader,
    HttpOptions, ProxyVersion, StreamOptions,
};
use crate::error::CommandError;

const HTTP: &[EndpointKind] = &[EndpointKind::Http];
const STREAMS: &[EndpointKind] = &[EndpointKind::Tcp, EndpointKind::Tls];
const ALL: &[EndpointKind] = &[EndpointKind::Http, EndpointKind::Tcp, EndpointKind::Tls];

/// Every flag. Its properties are methods, and [`FlagSet::apply`] matches on it exhaustively, so a
/// new variant does not compile until it is handled; one missing from [`Flag::ALL`] can never be
/// parsed, which `dead_code` reports as a variant never constructed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flag {
    BasicAuth,
    CidrAllow,
    CidrDeny,
    HostHeader,
    RequestHeaderAdd,
    RequestHeaderRemove,
    ResponseHeaderAdd,
    ResponseHeaderRemove,
    Inspect,
    ProxyProto,
}

impl Flag {
    const ALL: [Flag; 10] = [
        Flag::BasicAuth,
        Flag::CidrAllow,
        Flag::CidrDeny,
        Flag::HostHeader,
        Flag::RequestHeaderAdd,
        Flag::RequestHeaderRemove,
        Flag::ResponseHeaderAdd,
        Flag::ResponseHeaderRemove,
        Flag::Inspect,
        Flag::ProxyProto,
    ];

    /// The flag as typed, with its dashes; errors quote it.
    const fn name(self) -> &'static str {
        match self {
            Flag::BasicAuth => "--basic-auth",
            Flag::CidrAllow => "--cidr-allow",
            Flag::CidrDeny => "--cidr-deny",
            Flag::HostHeader => "--host-header",
            Flag::RequestHeaderAdd => "--request-header-add",
            Flag::RequestHeaderRemove => "--request-header-remove",
            Flag::ResponseHeaderAdd => "--response-header-add",
            Flag::ResponseHeaderRemove => "--response-header-remove",
            Flag::Inspect => "--inspect",
            Flag::ProxyProto => "--proxy-proto",
        }
    }

    fn from_name(name: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The commands that accept it.
    const fn applies_to(self) -> &'static [EndpointKind] {
        match self {
            Flag::CidrAllow | Flag::CidrDeny => ALL,
            Flag::ProxyProto => STREAMS,
            Flag::BasicAuth
            | Flag::HostHeader
            | Flag::RequestHeaderAdd
            | Flag::RequestHeaderRemove
            | Flag::ResponseHeaderAdd
            | Flag::ResponseHeaderRemove
            | Flag::Inspect => HTTP,
        }
    }

    /// Whether giving it twice is an error rather than a second value.
    const fn single_valued(self) -> bool {
        match self {
            Flag::HostHeader | Flag::Inspect | Flag::ProxyProto => true,
            Flag::BasicAuth
            | Flag::CidrAllow
            | Flag::CidrDeny
            | Flag::RequestHeaderAdd
            | Flag::RequestHeaderRemove
            | Flag::ResponseHeaderAdd
            | Flag::ResponseHeaderRemove => false,
        }
    }

    /// Whether it may stand alone (`--inspect` means on). Such a flag is a boolean switch, so it
    /// takes the following word as its value only if that word is `true` or `false`.
    const fn value_optional(self) -> bool {
        matches!(self, Flag::Inspect)
    }
}

/// Parses an exec command line. `Ok(None)` is the empty line: no command, so the remote port
/// decides the endpoint kind.
///
/// Any input is safe: bad input is a [`CommandError`] naming the word at fault, whose Display is
/// the line the user reads, never a panic.
pub fn parse_command_line(line: &str) -> Result<Option<Command>, CommandError> {
    let words = tokenize(line)?;
    let mut words = words.iter().map(String::as_str);
    let Some(first) = words.next() else {
        return Ok(None);
    };
    let rest: Vec<&str> = words.collect();
    if is_help(first) || rest.iter().any(|w| is_help(w)) {
        return Ok(Some(Command::Help));
    }
    match (first, rest.as_slice()) {
        ("list", []) => return Ok(Some(Command::List)),
        ("release", [address]) => return Ok(Some(Command::Release((*address).to_owned()))),
        ("release", []) => return Err(CommandError::MissingName),
        ("list" | "release", [_, extra, ..] | [extra]) => {
            return Err(CommandError::UnexpectedArgument((*extra).into()))
        }
        ("admin", words) => return admin_command(words).map(|a| Some(Command::Admin(a))),
        _ => {}
    }
    let kind = match first {
        "http" => EndpointKind::Http,
        "tcp" => EndpointKind::Tcp,
        "tls" => EndpointKind::Tls,
        w if w.starts_with('-') => return Err(CommandError::MissingCommand(w.into())),
        w => return Err(CommandError::UnknownCommand(w.into())),
    };
    let mut flags = FlagSet::new(kind);
    let mut words = rest.into_iter().peekable();
    while let Some(word) = words.next() {
        let Ok((_, (name, inline))) = flag(word) else {
            if word.starts_with('-') {
                return Err(CommandError::UnknownFlag {
                    flag: word.into(),
                    command: kind,
                    applies_to: &[],
                });
            }
            return Err(CommandError::UnexpectedArgument(word.into()));
        };
        let known = Flag::from_name(name);
        let Some(known) = known.filter(|f| f.applies_to().contains(&kind)) else {
            return Err(CommandError::UnknownFlag {
                flag: word.into(),
                command: kind,
                applies_to: known.map_or(&[], Flag::applies_to),
            });
        };
        let value = match inline {
            Some(v) => Some(v),
            None if known.value_optional() => words.next_if(|w| *w == "true" || *w == "false"),
            None => Some(
                words
                    .next()
                    .ok_or_else(|| CommandError::MissingValue(word.into()))?,
            ),
        };
        flags.apply(known, value)?;
    }
    Ok(Some(flags.finish()))
}

fn admin_command(words: &[&str]) -> Result<AdminCommand, CommandError> {
    match words {
        ["connections"] => Ok(AdminCommand::Connections),
        ["endpoints"] => Ok(AdminCommand::Endpoints),
        ["kick", id, reason @ ..] => {
            // `admin connections` shows `conn#12`; either form is taken.
            let digits = id.strip_prefix("conn#").unwrap_or(id);
            let conn = digits
                .parse::<u64>()
                .map_err(|_| CommandError::UnexpectedArgument((*id).into()))?;
            let reason = (!reason.is_empty()).then(|| reason.join(" "));
            Ok(AdminCommand::Kick { conn, reason })
        }
        ["kick"] | [] => Err(CommandError::MissingAdminCommand),
        ["connections" | "endpoints", extra, ..] => {
            Err(CommandError::UnexpectedArgument((*extra).into()))
        }
        [other, ..] => Err(CommandError::UnknownCommand(
            format!("admin {other}").as_str().into(),
        )),
    }
}

fn is_help(word: &str) -> bool {
    matches!(word, "help" | "--help" | "-h")
}

/// Collects flags into the options of one command, refusing repeats of single-valued ones.
struct FlagSet {
    kind: EndpointKind,
    http: HttpOptions,
    stream: StreamOptions,
    seen_single: Vec<Flag>,
}

impl FlagSet {
    fn new(kind: EndpointKind) -> Self {
        Self {
            kind,
            http: HttpOptions::default(),
            stream: StreamOptions::default(),
            seen_single: Vec::new(),
        }
    }

    fn access(&mut self) -> &mut AccessRules {
        match self.kind {
            EndpointKind::Http => &mut self.http.access,
            EndpointKind::Tcp | EndpointKind::Tls => &mut self.stream.access,
        }
    }

    /// `value` is `None` only for a flag whose value is optional, given alone.
    fn apply(&mut self, flag: Flag, value: Option<&str>) -> Result<(), CommandError> {
        if flag.single_valued() {
            if self.seen_single.contains(&flag) {
                return Err(CommandError::Repeated(flag.name()));
            }
            self.seen_single.push(flag);
        }
        let v = value.unwrap_or("");
        match flag {
            Flag::BasicAuth => self.http.basic_auth.push(parse_value(
                flag,
                v,
                basic_auth,
                "expected USER:PASSWORD with a non-empty user",
            )?),
            Flag::CidrAllow => {
                let net = parse_value(flag, v, cidr, "expected an address or CIDR")?;
                self.access().allow.push(net);
            }
            Flag::CidrDeny => {
                let net = parse_value(flag, v, cidr, "expected an address or CIDR")?;
                self.access().deny.push(net);
            }
            Flag::HostHeader => {
                self.http.host_header = parse_value(
                    flag,
                    v,
                    host_header,
                    "expected preserve, rewrite or HOST[:PORT]",
                )?;
            }
            Flag::RequestHeaderAdd => self.http.request_headers.add.push(parse_value(
                flag,
                v,
                header_line,
                "expected 'NAME: VALUE'",
            )?),
            Flag::RequestHeaderRemove => self.http.request_headers.remove.push(parse_value(
                flag,
                v,
                header_name,
                "expected a header name",
            )?),
            Flag::ResponseHeaderAdd => self.http.response_headers.add.push(parse_value(
                flag,
                v,
                header_line,
                "expected 'NAME: VALUE'",
            )?),
            Flag::ResponseHeaderRemove => self.http.response_headers.remove.push(parse_value(
                flag,
                v,
                header_name,
                "expected a header name",
            )?),
            Flag::Inspect => {
                self.http.inspect = match value {
                    None => true,
                    Some(v) => parse_value(flag, v, boolean, "expected true or false")?,
                };
            }
            Flag::ProxyProto => {
                self.stream.proxy_protocol =
                    Some(parse_value(flag, v, proxy_version, "expected 1 or 2")?);
            }
        }
        Ok(())
    }

    fn finish(self) -> Command {
        match self.kind {
            EndpointKind::Http => Command::Http(self.http),
            EndpointKind::Tcp => Command::Tcp(self.stream),
            EndpointKind::Tls => Command::Tls(self.stream),
        }
    }
}

/// Runs a value parser over the whole value, mapping failure to an error naming flag and value.
fn parse_value<T>(
    flag: Flag,
    input: &str,
    parser: impl Fn(&str) -> IResult<&str, T>,
    reason: &'static str,
) -> Result<T, CommandError> {
    all_consuming(parser)
        .parse(input)
        .map(|(_, v)| v)
        .map_err(|_| CommandError::InvalidValue {
            flag: flag.name(),
            value: input.into(),
            reason,
        })
}

// ---- tokenising -------------------------------------------------------------------------------

/// Splits a command line into words with POSIX-shell-like quoting: `'...'` is literal, `"..."`
/// honours `\"`, `\\`, `\$` and `` \` ``, a bare backslash escapes the next character.
pub(crate) fn tokenize(line: &str) -> Result<Vec<String>, CommandError> {
    let (remaining, words) = preceded(multispace0, many0(terminated(word, multispace0)))
        .parse(line)
        .map_err(|_| CommandError::UnterminatedQuote("single"))?;
    match remaining.chars().next() {
        None => Ok(words),
        Some('\'') => Err(CommandError::UnterminatedQuote("single")),
        Some('"') => Err(CommandError::UnterminatedQuote("double")),
        Some(_) => Err(CommandError::TrailingBackslash),
    }
}

fn word(input: &str) -> IResult<&str, String> {
    fold_many1(word_piece, String::new, |mut acc, piece| {
        acc.push_str(&piece);
        acc
    })
    .parse(input)
}

fn word_piece(input: &str) -> IResult<&str, String> {
    alt((
        map(is_not(" \t\r\n'\"\\"), str::to_owned),
        map(
            delimited(char('\''), opt(is_not("'")), char('\'')),
            |s: Option<&str>| s.unwrap_or_default().to_owned(),
        ),
        delimited(char('"'), double_quoted_body, char('"')),
        map(preceded(char('\\'), anychar), |c| c.to_string()),
    ))
    .parse(input)
}

fn double_quoted_body(input: &str) -> IResult<&str, String> {
    fold_many0(
        alt((
            map(is_not("\\\""), str::to_owned),
            map(preceded(char('\\'), anychar), |c| match c {
                '"' | '\\' | '$' | '`' => c.to_string(),
                '\n' => String::new(),
                other => format!("\\{other}"),
            }),
        )),
        String::new,
        |mut acc, piece| {
            acc.push_str(&piece);
            acc
        },
    )
    .parse(input)
}

/// Quotes one word so that [`tokenize`] gives it back unchanged.
#[cfg(feature = "__testing")]
pub(crate) fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=:./,@%+".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

// ---- flags and values -------------------------------------------------------------------------

/// `--name` or `--name=value`; the name keeps its dashes, as [`Flag::name`] spells it.
fn flag(input: &str) -> IResult<&str, (&str, Option<&str>)> {
    all_consuming((
        recognize(preceded(
            tag("--"),
            take_while1(|c: char| c.is_ascii_lowercase() || c == '-'),
        )),
        opt(preceded(char('='), rest)),
    ))
    .parse(input)
}

fn basic_auth(input: &str) -> IResult<&str, Credentials> {
    map(
        separated_pair(is_not(":"), char(':'), rest),
        |(user, password): (&str, &str)| Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        },
    )
    .parse(input)
}

fn cidr(input: &str) -> IResult<&str, IpNet> {
    let parsed = input
        .parse::<IpNet>()
        .or_else(|_| input.parse::<std::net::IpAddr>().map(IpNet::from));
    match parsed {
        Ok(net) => Ok(("", net.trunc())),
        Err(_) => Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::Verify,
        ))),
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn header_name(input: &str) -> IResult<&str, HeaderName> {
    map(take_while1(is_tchar), |n: &str| HeaderName(n.to_owned())).parse(input)
}

/// `Name: value`; the value is visible ASCII plus spaces and tabs (no CR or LF, so no header
/// injection), surrounding white space trimmed.
fn header_line(input: &str) -> IResult<&str, (HeaderName, String)> {
    let (input, (name, value)) = separated_pair(
        header_name,
        char(':'),
        take_while_or_empty(|c: char| c == ' ' || c == '\t' || c.is_ascii_graphic()),
    )
    .parse(input)?;
    Ok((input, (name, value.trim().to_owned())))
}

fn take_while_or_empty(pred: impl Fn(char) -> bool) -> impl Fn(&str) -> IResult<&str, &str> {
    move |input: &str| {
        let end = input.find(|c: char| !pred(c)).unwrap_or(input.len());
        Ok((&input[end..], &input[..end]))
    }
}

fn host_header(input: &str) -> IResult<&str, HostHeader> {
    // The keywords must be the whole value: `preserved.example` is a literal host.
    alt((
        value(HostHeader::Preserve, all_consuming(tag("preserve"))),
        value(HostHeader::Rewrite, all_consuming(tag("rewrite"))),
        map(
            take_while1(|c: char| c.is_ascii_alphanumeric() || "-.:[]_".contains(c)),
            |h: &str| HostHeader::Literal(h.to_owned()),
        ),
    ))
    .parse(input)
}

fn boolean(input: &str) -> IResult<&str, bool> {
    alt((value(true, tag("true")), value(false, tag("false")))).parse(input)
}

fn proxy_version(input: &str) -> IResult<&str, ProxyVersion> {
    alt((
        value(ProxyVersion::V1, tag("1")),
        value(ProxyVersion::V2, tag("2")),
    ))
    .parse(input)
}

// ---- rendering --------------------------------------------------------------------------------

// Only tests and the fuzz target render (to check the round trip), so rendering and `quote` exist
// only with the `__testing` feature.

/// Renders a command as a line that [`parse_command_line`] reads back to the same command.
#[cfg(feature = "__testing")]
pub(crate) fn render(command: &Command) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut push = |flag: Flag, v: &str| words.push(format!("{}={}", flag.name(), quote(v)));
    match command {
        Command::Help => return "help".to_owned(),
        Command::List => return "list".to_owned(),
        Command::Release(address) => return format!("release {}", quote(address)),
        Command::Admin(AdminCommand::Connections) => return "admin connections".to_owned(),
        Command::Admin(AdminCommand::Endpoints) => return "admin endpoints".to_owned(),
        Command::Admin(AdminCommand::Kick { conn, reason }) => {
            let mut line = format!("admin kick {conn}");
            if let Some(reason) = reason {
                line.push(' ');
                line.push_str(&quote(reason));
            }
            return line;
        }
        Command::Http(o) => {
            for c in &o.basic_auth {
                push(Flag::BasicAuth, &format!("{}:{}", c.user, c.password));
            }
            render_access(&o.access, &mut push);
            match &o.host_header {
                HostHeader::Preserve => {}
                HostHeader::Rewrite => push(Flag::HostHeader, "rewrite"),
                HostHeader::Literal(h) => push(Flag::HostHeader, h),
            }
            let request = (Flag::RequestHeaderAdd, Flag::RequestHeaderRemove);
            render_edits(request, &o.request_headers, &mut push);
            let response = (Flag::ResponseHeaderAdd, Flag::ResponseHeaderRemove);
            render_edits(response, &o.response_headers, &mut push);
            if !o.inspect {
                push(Flag::Inspect, "false");
            }
        }
        Command::Tcp(o) | Command::Tls(o) => {
            render_access(&o.access, &mut push);
            match o.proxy_protocol {
                None => {}
                Some(ProxyVersion::V1) => push(Flag::ProxyProto, "1"),
                Some(ProxyVersion::V2) => push(Flag::ProxyProto, "2"),
            }
        }
    }
    let kind = command.kind().expect("help returned above").as_str();
    std::iter::once(kind.to_owned())
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(feature = "__testing")]
fn render_access(access: &AccessRules, push: &mut impl FnMut(Flag, &str)) {
    for net in &access.allow {
        push(Flag::CidrAllow, &net.to_string());
    }
    for net in &access.deny {
        push(Flag::CidrDeny, &net.to_string());
    }
}

/// `add` and `remove` are the direction's two flags.
#[cfg(feature = "__testing")]
fn render_edits(
    (add, remove): (Flag, Flag),
    edits: &HeaderEdits,
    push: &mut impl FnMut(Flag, &str),
) {
    for (name, value) in &edits.add {
        push(add, &format!("{}: {value}", name.0));
    }
    for name in &edits.remove {
        push(remove, &name.0);
    }
}

#[cfg(test)]
mod tests {
    use super::Flag;
    use crate::command::HELP;

    #[test]
    fn every_flag_parses_by_its_name_and_is_in_help() {
        for flag in Flag::ALL {
            assert_eq!(Flag::from_name(flag.name()), Some(flag));
            assert!(
                HELP.contains(flag.name()),
                "{} missing from HELP",
                flag.name()
            );
        }
    }
}
