//! The usage text printed by `help`, `--help` and `-h`.

/// Usage, printed on the session's stdout with exit status 0.
pub const HELP: &str = "\
Usage: ssh -R [NAME:]RPORT:LHOST:LPORT -p PORT [v2@]HOST [COMMAND [FLAGS]]

Commands:
  http    share an HTTP service at http(s)://NAME.DOMAIN   (remote port 80, 443 or 0)
  tcp     share any TCP service on a public port             (remote port 0, or a port in the server's range)
  tls     pass TLS through by SNI, never terminated          (remote port 443 or 0; needs a NAME)
  list    print your endpoints and the names and ports reserved for your key (`ssh HOST list`)
  release NAME|PORT   drop one of your reservations now (`ssh HOST release app`)
  admin connections|endpoints|kick ID [REASON]   operator keys only (the server's --admin-keys)
  help    print this text (also --help, -h; type `ssh HOST help` or `ssh HOST -- --help`)
  With no command, remote port 80 or 443 means http, anything else tcp.

Names: NAME empty or `localhost` gives a random name; a label gives LABEL.DOMAIN; a full host under
DOMAIN is taken as is. A name belongs to the key that took it and stays reserved for that key for a
while after it disconnects, so a reconnect gets the same URL back.

Flags (FLAG VALUE or FLAG=VALUE; repeatable ones marked *):
  --basic-auth USER:PASS *        http: require these credentials (401 otherwise)
  --cidr-allow CIDR *             http, tcp, tls: only these visitor addresses pass
  --cidr-deny CIDR *              http, tcp, tls: refuse these visitor addresses (deny wins)
  --host-header VALUE             http: preserve (default), rewrite (Host: localhost) or HOST[:PORT]
  --request-header-add 'K: V' *   http: add a header to requests
  --request-header-remove K *     http: remove a header from requests
  --response-header-add 'K: V' *  http: add a header to responses
  --response-header-remove K *    http: remove a header from responses
  --inspect[=false]               http: print one line per request (default on)
  --proxy-proto 1|2               tcp, tls: send a PROXY protocol header before the stream

Examples:
  ssh -R 80:localhost:3000 -p 2222 tunnel.example.com http --basic-auth user:pass
  ssh -R 0:localhost:22 -p 2222 tunnel.example.com tcp --cidr-allow 203.0.113.0/24
";
