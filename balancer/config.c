/* sipslb's flags: one declarative table (core/flags.h) drives parsing, --help, validation
 * and --print-config; the checks that involve several flags or the file system follow.
 * Main thread, before workers start. */
#include "balancer/config.h"

#include "balancer/dns_resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdarg.h>
#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/flags.h"
#include "balancer/maglev.h"
#include "core/sip-t.h"

static const char *const verify_client_names[] = {"none", "optional", "require", NULL};
static const char *const backend_verify_names[] = {"require", "none", NULL};
static const char *const tls_min_names[] = {"1.2", "1.3", NULL};
static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const log_target_names[] = {"stderr", "syslog", NULL};

#define F(name, type, field, def, min, max, choices, arg, help)                                    \
    {                                                                                              \
        name, type, offsetof(struct slb_config, field), def, min, max, choices, arg, help          \
    }

static const struct slb_flag table[] = {
    F("listen", SLB_FLAG_LIST, listen, "0.0.0.0:5061", 0, SLB_MAX_LISTEN, NULL,
      "[tcp://|wss://|ws://]ADDR:PORT",
      "address to accept SIPS (TLS) clients on, IPv4 or [IPv6]; tcp:// for SIP over plain TCP "
      "(lab interop, legacy clients: sips: requests on it get 403); wss:// for SIP over secure "
      "WebSocket (browsers, RFC 7118), ws:// over plain WebSocket (labs, like tcp://)"),
    F("cert", SLB_FLAG_LIST, cert, NULL, 0, SLB_MAX_CERTS, NULL, "FILE",
      "server certificate chain, PEM (ECDSA P-256 recommended) (required); repeat for more "
      "names: the SNI a client sends picks the one whose DNS subjectAltNames match, the first "
      "is the default"),
    F("key", SLB_FLAG_LIST, key, NULL, 0, SLB_MAX_CERTS, NULL, "FILE",
      "private key of the --cert in the same position, PEM (required, one per --cert)"),
    F("ca", SLB_FLAG_STR, ca, NULL, 0, 0, NULL, "FILE",
      "CA certificates that sign client certificates (for --verify-client)"),
    F("verify-client", SLB_FLAG_ENUM, verify_client, "none", 0, 0, verify_client_names, "MODE",
      "ask clients for a certificate (mutual TLS)"),
    F("tls-min", SLB_FLAG_ENUM, tls_min, "1.2", 0, 0, tls_min_names, "VERSION",
      "lowest TLS version accepted from clients and used to backends"),
    F("ciphers", SLB_FLAG_STR, ciphers, NULL, 0, 0, NULL, "LIST",
      "cipher suites, wolfSSL names joined by ':', for clients and backends; default: TLS 1.3's "
      "and, for TLS 1.2, ECDHE with AES-GCM or ChaCha20-Poly1305 only (no CBC, no SHA-1)"),
    F("strict-sni", SLB_FLAG_BOOL, strict_sni, "false", 0, 0, NULL, NULL,
      "refuse clients whose SNI names no --cert (or that send none) with unrecognized_name "
      "instead of giving them the first certificate"),
    F("crl", SLB_FLAG_STR, crl, NULL, 0, 0, NULL, "FILE",
      "PEM CRLs of the --ca CAs: revoked client certificates are refused (needs "
      "--verify-client; a client whose CA has no CRL here is refused too); re-read on SIGHUP"),
    F("groups", SLB_FLAG_STR, groups, NULL, 0, 0, NULL, "LIST",
      "key exchange groups in preference order, e.g. X25519:P-256; this build has P-256, "
      "P-384, P-521 and X25519 (no X448, no ML-KEM); default: the library's"),
    F("backend", SLB_FLAG_LIST, backend, NULL, 0, SLB_MAX_BACKENDS, NULL,
      "sips:HOST:PORT[;weight=N]|sips:NAME",
      "a backend SIPS server (required, repeatable); sips:NAME without a port: every target of "
      "NAME's _sips._tcp SRV records (weight, priority), else of its A/AAAA records (port "
      "5061), re-resolved at the records' TTL"),
    F("backend-ca", SLB_FLAG_STR, backend_ca, NULL, 0, 0, NULL, "FILE",
      "CA certificates that sign backend certificates (needed with --backend-verify require)"),
    F("backend-verify", SLB_FLAG_ENUM, backend_verify, "require", 0, 0, backend_verify_names,
      "MODE", "check backend certificates and host names; none is for labs only"),
    F("backend-cert", SLB_FLAG_STR, backend_cert, NULL, 0, 0, NULL, "FILE",
      "client certificate presented to backends (mutual TLS)"),
    F("backend-key", SLB_FLAG_STR, backend_key, NULL, 0, 0, NULL, "FILE", "key of --backend-cert"),
    F("backend-conns", SLB_FLAG_INT, backend_conns, "2", 1, 64, NULL, "K",
      "persistent TLS connections per backend per worker"),
    F("workers", SLB_FLAG_INT, workers, "0", 0, SLB_MAX_WORKERS, NULL, "N",
      "worker threads, one io_uring each; 0 = online cores"),
    F("pin", SLB_FLAG_BOOL, pin, "false", 0, 0, NULL, NULL, "pin worker i to core i"),
    F("advertise", SLB_FLAG_STR, advertise, NULL, 0, 0, NULL, "HOST[:PORT]",
      "address written into our Via; default: the first --listen address (127.0.0.1 for a "
      "wildcard)"),
    F("max-conns", SLB_FLAG_INT, max_conns, "10000", 16, 16000000, NULL, "N",
      "client connections per worker; more are closed on accept"),
    F("handshake-timeout", SLB_FLAG_MS, handshake_timeout_ms, "10s", 100, 600000, NULL, "DURATION",
      "close a TLS connection whose handshake takes longer"),
    F("idle-timeout", SLB_FLAG_MS, idle_timeout_ms, "15m", 1000, 86400000, NULL, "DURATION",
      "close a client connection silent for this long"),
    F("max-message-size", SLB_FLAG_INT, max_message_size, "65535", 1024, 262144, NULL, "BYTES",
      "largest SIP message (headers + body); larger ones get 513 and a close"),
    F("maglev-size", SLB_FLAG_INT, maglev_size, "65537", 251, 1000003, NULL, "PRIME",
      "slots in the consistent-hash table (a prime)"),
    F("retry-after", SLB_FLAG_INT, retry_after_s, "5", 1, 3600, NULL, "SECONDS",
      "Retry-After of the 503 sent when no backend is reachable"),
    F("resend-max-requests", SLB_FLAG_INT, resend_max_requests, "512", 0, 65536, NULL, "N",
      "requests not yet answered kept per backend link, re-sent to the next backend if the "
      "link fails or the backend goes down; 0 = off"),
    F("resend-max-bytes", SLB_FLAG_INT, resend_max_bytes, "1048576", 4096, 67108864, NULL, "BYTES",
      "bytes of those copies per backend link"),
    F("probe-interval", SLB_FLAG_MS, probe_interval_ms, "1s", 50, 3600000, NULL, "DURATION",
      "how often each backend gets a SIP OPTIONS probe over TLS"),
    F("probe-timeout", SLB_FLAG_MS, probe_timeout_ms, "1s", 10, 3600000, NULL, "DURATION",
      "a probe unanswered this long has failed"),
    F("fall", SLB_FLAG_INT, fall, "2", 1, 100, NULL, "N",
      "consecutive failures (probes, connects, handshakes, resets) that mark a backend down"),
    F("rise", SLB_FLAG_INT, rise, "2", 1, 100, NULL, "N",
      "consecutive answered probes that bring it back up"),
    F("probe-alive", SLB_FLAG_STR, probe_alive, "final-not-503", 0, 0, NULL, "CODES",
      "responses that count as alive: final-not-503, or classes like 2xx,4xx"),
    F("drain-idle", SLB_FLAG_MS, drain_idle_ms, "60s", 100, 86400000, NULL, "DURATION",
      "a draining backend with no traffic this long is reported drained"),
    F("log-level", SLB_FLAG_ENUM, log_level, "info", 0, 0, log_level_names, "LEVEL",
      "lowest level logged"),
    F("log-format", SLB_FLAG_ENUM, log_format, "text", 0, 0, log_format_names, "FORMAT",
      "log lines as text, or as one JSON object each (time, level, event, msg, fields)"),
    F("log-target", SLB_FLAG_ENUM, log_target, "stderr", 0, 0, log_target_names, "TARGET",
      "where log lines go: stderr (with priority prefixes when it is the systemd journal) or "
      "syslog (facility daemon)"),
    F("stats-file", SLB_FLAG_STR, stats_file, NULL, 0, 0, NULL, "FILE",
      "write the counters here (key value lines) at exit and on SIGUSR1"),
    F("config", SLB_FLAG_STR, config_file, NULL, 0, 0, NULL, "FILE",
      "read flags from FILE first: \"flag = value\" lines (bools: true|false), # comments; "
      "the command line has the last word"),
    F("admin", SLB_FLAG_STR, admin, NULL, 0, 0, NULL, "ADDR:PORT|unix:PATH",
      "serve /metrics (Prometheus), /backends, /status, /ready, /live and the admin calls "
      "here (HTTP; loopback or a private address, or a Unix socket of mode 0660)"),
    F("log-connections", SLB_FLAG_BOOL, log_connections, "false", 0, 0, NULL, NULL,
      "log a record per closed client connection (peer, duration, messages, TLS version, "
      "reason), for fail2ban-style tools"),
    F("admin-token-file", SLB_FLAG_STR, admin_token_file, NULL, 0, 0, NULL, "FILE",
      "bearer token for the admin calls that change state (POST); without it they get 403"),
    F("backends-file", SLB_FLAG_STR, backends_file, NULL, 0, 0, NULL, "FILE",
      "more backends, one sips:HOST:PORT[;weight=N][;drain] per line (# comments); "
      "re-read on SIGHUP for weight and drain changes"),
    F("proxy-protocol-from", SLB_FLAG_LIST, proxy_protocol_from, NULL, 0, SLB_MAX_ALLOW, NULL,
      "CIDR[,CIDR...]",
      "connections from these sources (an L4 balancer) must start with a PROXY protocol v2 "
      "(or v1) header, whose address is then the client's; from anywhere else a header is "
      "refused. Never trusted by default"),
    F("proxy-protocol-timeout", SLB_FLAG_MS, proxy_protocol_timeout_ms, "3s", 100, 600000, NULL,
      "DURATION", "close a --proxy-protocol-from connection whose header takes longer"),
    F("dns-server", SLB_FLAG_LIST, dns_server, NULL, 0, SLB_DNS_MAX_SERVERS, NULL, "ADDR:PORT",
      "DNS server for --backend sips:NAME (repeatable); default: the system resolver"),
    F("dns-min-ttl", SLB_FLAG_MS, dns_min_ttl_ms, "5s", 1000, 86400000, NULL, "DURATION",
      "re-resolve DNS backends no more often than this, whatever the records' TTL"),
    F("dns-max-ttl", SLB_FLAG_MS, dns_max_ttl_ms, "300s", 1000, 86400000, NULL, "DURATION",
      "re-resolve DNS backends at least this often (and retry a failure after --dns-min-ttl)"),
    F("ws-origin", SLB_FLAG_STR, ws_origin, NULL, 0, 0, NULL, "ORIGIN[,ORIGIN...]",
      "wss:// and ws:// listeners: only browsers whose Origin is listed (like "
      "https://app.example.com) may open a WebSocket (403 otherwise); default: any"),
    F("secret-file", SLB_FLAG_STR, secret_file, NULL, 0, 0, NULL, "FILE",
      "keys shared by instances, one per line, 64 hex digits (openssl rand -hex 32), newest "
      "first: the newest signs branches, tokens and TLS tickets, all verify; mode 0600; "
      "re-read on SIGHUP. Without it: random keys, lost at exit"),
    F("drain-timeout", SLB_FLAG_MS, drain_timeout_ms, "30s", 0, 86400000, NULL, "DURATION",
      "on SIGTERM (or once a newer process took the listeners), stop accepting and close each "
      "client connection when it is idle, for at most this long; 0 = close at once"),
    F("handover-socket", SLB_FLAG_STR, handover_socket, NULL, 0, 0, NULL, "PATH",
      "Unix socket for zero-downtime upgrades: a new sipslb with the same PATH takes the "
      "running one's listening sockets (queued connections included), and the old one drains"),
    F("no-path", SLB_FLAG_BOOL, no_path, "false", 0, 0, NULL, NULL,
      "do not add our Path to REGISTER requests (RFC 3327)"),
    F("sips-only", SLB_FLAG_BOOL, sips_only, "false", 0, 0, NULL, NULL,
      "refuse sip: Request-URIs with 480 and Warning 381 (RFC 5630); sips: is always taken"),
    F("print-config", SLB_FLAG_BOOL, print_config, "false", 0, 0, NULL, NULL,
      "print the effective configuration and exit"),
    F("version", SLB_FLAG_BOOL, version, "false", 0, 0, NULL, NULL,
      "print the version, git commit, wolfSSL version and build options, and exit"),
    /* Limits and protection. */
    F("message-timeout", SLB_FLAG_MS, message_timeout_ms, "20s", 100, 600000, NULL, "DURATION",
      "close a client whose message stays incomplete this long (slowloris)"),
    F("max-handshakes", SLB_FLAG_INT, max_handshakes, "1024", 1, 1000000, NULL, "N",
      "TLS handshakes in progress per worker; a new one beyond closes the oldest"),
    F("client-out-max", SLB_FLAG_INT, client_out_max, "262144", 32768, 67108864, NULL, "BYTES",
      "output queued toward one client; above half of it its requests are not read until it "
      "drains, past it responses to it are dropped"),
    F("stall-timeout", SLB_FLAG_MS, stall_timeout_ms, "30s", 1000, 3600000, NULL, "DURATION",
      "close a client that reads none of its queued output this long"),
    F("limit-conns", SLB_FLAG_INT, limit_conns, "256", 0, 16000000, NULL, "N",
      "concurrent connections per source address (IPv6: per /64); 0 = no limit"),
    F("limit-conn-rate", SLB_FLAG_INT, limit_conn_rate, "100", 0, 1000000, NULL, "N",
      "new connections per second per source (bursts of N); 0 = no limit"),
    F("limit-handshake-rate", SLB_FLAG_INT, limit_handshake_rate, "100", 0, 1000000, NULL, "N",
      "TLS handshakes started per second per source (bursts of N); 0 = no limit"),
    F("limit-request-rate", SLB_FLAG_INT, limit_request_rate, "0", 0, 10000000, NULL, "N",
      "requests per second per source and worker, answered 503 with Retry-After above it "
      "(bursts of N); 0 = no limit"),
    F("limit-allow", SLB_FLAG_LIST, limit_allow, NULL, 0, SLB_MAX_ALLOW, NULL, "CIDR[,CIDR...]",
      "sources exempt from the per-source limits and bans (trunks, PBXs); repeatable"),
    F("ban-time", SLB_FLAG_MS, ban_time_ms, "60s", 0, 86400000, NULL, "DURATION",
      "refuse a source that broke its limits --ban-after times within 10 s for this long; "
      "0 = no bans"),
    F("ban-after", SLB_FLAG_INT, ban_after, "500", 1, 1000000, NULL, "N",
      "refusals within 10 s that get a source banned"),
    F("tcp-keepalive", SLB_FLAG_MS, tcp_keepalive_ms, "60s", 0, 86400000, NULL, "DURATION",
      "TCP keepalive probes after this much silence, on every connection; 0 = off"),
    F("spin-us", SLB_FLAG_INT, spin_us, "0", 0, 1000, NULL, "N",
      "before a worker sleeps, watch for work up to N microseconds, but only while recent "
      "idle gaps were that short (it learns this from its spins): fewer sleeps under load, "
      "for cores given to sipslb alone; on a shared core it costs CPU and gains nothing "
      "measurable (bench/README.md); 0 = off"),
};

#define N_FLAGS (sizeof(table) / sizeof(table[0]))

static const char usage[] =
    "usage: sipslb --cert FILE --key FILE [--cert FILE --key FILE ...]\n"
    "              --backend sips:HOST:PORT [--backend ...] [flags]\n"
    "An edge load balancer for SIP over TLS: terminates TLS from clients, routes every\n"
    "dialog by its Call-ID (Maglev consistent hashing) to one backend SIPS server over\n"
    "persistent TLS connections, and relays responses back. SIGINT/SIGTERM: stop\n"
    "accepting, close client connections as they go idle (--drain-timeout), exit 0; a\n"
    "second one or SIGQUIT: stop at once. SIGUSR1: write --stats-file. SIGHUP: re-read\n"
    "the --cert, --key, --ca and --crl files when they changed, --backends-file (weights and\n"
    "drain flags) and --secret-file (key rotation).";

int slb_config_parse_hostport(const char *text, struct slb_addr *addr, char *host, size_t host_cap,
                              uint16_t *port)
{
    const char *colon;
    size_t hlen;
    const char *h = text;
    if (text[0] == '[') {
        const char *rb = strchr(text, ']');
        if (!rb || rb[1] != ':')
            return -EINVAL;
        h = text + 1;
        hlen = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || memchr(text, ':', (size_t)(colon - text)))
            return -EINVAL;
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0 || hlen >= host_cap)
        return -EINVAL;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 1 || p > 65535)
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = 0;
    *port = (uint16_t)p;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return -EINVAL;
    memcpy(&addr->sa, res->ai_addr, res->ai_addrlen);
    addr->len = res->ai_addrlen;
    freeaddrinfo(res);
    snprintf(addr->text, sizeof(addr->text), "%s", text);
    return 0;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sipslb: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

/* "sips:NAME" with no port and no parameter, NAME a host name (not an address): resolved
 * through DNS (SRV, then A/AAAA) instead of once at start. */
static bool dns_name(const char *text)
{
    if (strncmp(text, "sips:", 5) != 0)
        return false;
    const char *n = text + 5;
    size_t len = strlen(n);
    if (len == 0 || len > 253 ||
        strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789-._") != len)
        return false;
    struct in_addr a4;
    return inet_pton(AF_INET, n, &a4) != 1;
}

static int parse_backend(const char *text, struct slb_backend_spec *b)
{
    if (strncmp(text, "sips:", 5) != 0)
        return -EINVAL;
    char hp[300];
    snprintf(hp, sizeof(hp), "%s", text + 5);
    b->weight = 1;
    b->drain = false;
    char *semi = strchr(hp, ';');
    if (semi)
        *semi = 0;
    while (semi) {
        char *param = semi + 1, *next = strchr(param, ';');
        if (next)
            *next = 0;
        if (!strncmp(param, "weight=", 7)) {
            char *end;
            long w = strtol(param + 7, &end, 10);
            if (*end || end == param + 7 || w < 1 || w > SLB_MAX_WEIGHT)
                return -EINVAL;
            b->weight = (uint32_t)w;
        } else if (!strcmp(param, "drain")) {
            b->drain = true;
        } else {
            return -EINVAL;
        }
        semi = next;
    }
    if (slb_config_parse_hostport(hp, &b->addr, b->host, sizeof(b->host), &b->port) < 0)
        return -EINVAL;
    snprintf(b->name, sizeof(b->name), "%s", hp);
    return 0;
}

static int parse_alive(struct slb_config *cfg)
{
    memset(cfg->alive_class, 0, sizeof(cfg->alive_class));
    cfg->alive_not_503 = false;
    if (!strcmp(cfg->probe_alive, "final-not-503")) {
        for (int c = 2; c <= 6; c++)
            cfg->alive_class[c] = 1;
        cfg->alive_not_503 = true;
        return 0;
    }
    const char *p = cfg->probe_alive;
    for (;;) {
        if (p[0] < '1' || p[0] > '6' || p[1] != 'x' || p[2] != 'x')
            return -EINVAL;
        cfg->alive_class[p[0] - '0'] = 1;
        if (!p[3])
            return 0;
        if (p[3] != ',')
            return -EINVAL;
        p += 4;
    }
}

/* Reads the backends file: each non-comment line a backend spec. Returns the count, or -1
 * with err set. */
static int read_backends_file(const char *path, struct slb_backend_spec *out, unsigned cap,
                              char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "--backends-file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    int n = 0, lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        char *end = p + strcspn(p, "#\r\n");
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = 0;
        if (!*p)
            continue;
        if ((unsigned)n == cap || parse_backend(p, &out[n]) < 0) {
            snprintf(err, errlen,
                     "--backends-file %s line %d: '%s' is not "
                     "sips:HOST:PORT[;weight=N][;drain] (or too many backends)",
                     path, lineno, p);
            fclose(f);
            return -1;
        }
        n++;
    }
    fclose(f);
    return n;
}

void slb_config_attrs(const struct slb_config *cfg, struct slb_backend_attrs *attrs)
{
    memset(attrs, 0, sizeof(*attrs));
    attrs->n = cfg->n_backends;
    for (unsigned i = 0; i < cfg->n_backends; i++) {
        attrs->present[i] = true;
        attrs->weight[i] = cfg->backends[i].weight;
        attrs->drain[i] = cfg->backends[i].drain;
    }
}

static uint32_t name_token(const char *name)
{
    return (uint32_t)slb_route_hash((struct slb_slice){name, strlen(name)});
}

struct slb_backends *slb_backends_new(const struct slb_config *cfg)
{
    struct slb_backends *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    slb_config_attrs(cfg, &b->attrs);
    memcpy(b->spec, cfg->backends, sizeof(b->spec));
    memcpy(b->from_file, cfg->from_file, sizeof(b->from_file));
    return b;
}

const struct slb_backends *slb_backends_ref(const struct slb_backends *b)
{
    /* The count is the one field that changes: the cast is its only writer's. */
    atomic_fetch_add_explicit(&((struct slb_backends *)b)->refs, 1, memory_order_relaxed);
    return b;
}

void slb_backends_unref(const struct slb_backends *b)
{
    if (b &&
        atomic_fetch_sub_explicit(&((struct slb_backends *)b)->refs, 1, memory_order_acq_rel) == 1)
        free((void *)b);
}

int slb_config_reload_backends(const struct slb_config *cfg, const struct slb_backends *cur,
                               struct slb_backends **out, char *err, size_t errlen)
{
    if (!cfg->backends_file) {
        snprintf(err, errlen, "no --backends-file to re-read");
        return -EINVAL;
    }
    static struct slb_backend_spec fresh[SLB_MAX_BACKENDS];
    int n = read_backends_file(cfg->backends_file, fresh, SLB_MAX_BACKENDS, err, errlen);
    if (n < 0)
        return -EINVAL;
    int slot_of[SLB_MAX_BACKENDS];
    uint32_t next = cur->attrs.n;
    for (int k = 0; k < n; k++) {
        slot_of[k] = -1;
        for (int j = 0; j < k; j++)
            if (!strcmp(fresh[j].name, fresh[k].name)) {
                snprintf(err, errlen, "--backends-file: %s listed twice", fresh[k].name);
                return -EINVAL;
            }
        for (uint32_t i = 0; i < cur->attrs.n; i++) {
            if (strcmp(cur->spec[i].name, fresh[k].name))
                continue;
            if (!cur->from_file[i]) {
                snprintf(err, errlen, "--backends-file: %s is also a --backend flag",
                         fresh[k].name);
                return -EINVAL;
            }
            slot_of[k] = (int)i;
        }
        if (slot_of[k] < 0) {
            if (next == SLB_MAX_BACKENDS) {
                snprintf(err, errlen,
                         "--backends-file: more than %u backends over this "
                         "process's life",
                         SLB_MAX_BACKENDS);
                return -EINVAL;
            }
            slot_of[k] = (int)next++;
        }
    }
    struct slb_backends *b = malloc(sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    /* Valid: from here on nothing fails. A slot keeps its backend (its name, hence its
     * token); only its attributes follow the file. */
    memcpy(b, cur, sizeof(*b));
    atomic_init(&b->refs, 1);
    for (uint32_t i = 0; i < b->attrs.n; i++)
        if (b->from_file[i])
            b->attrs.present[i] = false;
    for (int k = 0; k < n; k++) {
        unsigned i = (unsigned)slot_of[k];
        if (i >= cur->attrs.n) {
            b->spec[i] = fresh[k];
            b->spec[i].token = name_token(fresh[k].name);
            b->from_file[i] = true;
        }
        b->attrs.present[i] = true;
        b->attrs.weight[i] = fresh[k].weight;
        b->attrs.drain[i] = fresh[k].drain;
    }
    b->attrs.n = next;
    *out = b;
    return 0;
}

/* The name a DNS target goes by (Maglev hashes it, our Record-Route token is its hash):
 * "host:port" when that is one address of the answer, else "address:port" (the several
 * A/AAAA records of one name). Stable while the records are. */
static void dns_target_name(const struct slb_dns_result *r, unsigned k, char *out, size_t cap)
{
    unsigned same = 0;
    for (unsigned j = 0; j < r->n; j++)
        same += !strcasecmp(r->t[j].host, r->t[k].host) && r->t[j].port == r->t[k].port;
    if (same == 1) {
        snprintf(out, cap, "%s:%u", r->t[k].host, r->t[k].port);
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    uint16_t port;
    slb_sockaddr_text((const struct sockaddr *)&r->t[k].addr, ip, sizeof(ip), &port);
    snprintf(out, cap, strchr(ip, ':') ? "[%s]:%u" : "%s:%u", ip, r->t[k].port);
}

int slb_config_dns_backends(const struct slb_backends *cur, unsigned group,
                            const struct slb_dns_result *r, struct slb_backends **out, char *err,
                            size_t errlen)
{
    *out = NULL;
    uint32_t weight[SLB_MAX_BACKENDS];
    slb_dns_maglev_weights(r, weight);
    struct slb_backends *b = malloc(sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(b, cur, sizeof(*b));
    atomic_init(&b->refs, 1);
    bool keep[SLB_MAX_BACKENDS] = {false};
    for (unsigned k = 0; k < r->n; k++) {
        char name[sizeof(b->spec[0].name)];
        dns_target_name(r, k, name, sizeof(name));
        int slot = -1;
        for (unsigned i = 0; i < b->attrs.n && slot < 0; i++)
            if (!strcmp(b->spec[i].name, name))
                slot = (int)i;
        if (slot >= 0 && b->from_dns[slot] != group + 1) {
            snprintf(err, errlen, "%s is also another backend: left out", name);
            continue;
        }
        if (slot < 0) {
            if (b->attrs.n == SLB_MAX_BACKENDS) {
                snprintf(err, errlen, "more than %u backends over this process's life",
                         SLB_MAX_BACKENDS);
                free(b);
                return -ENOSPC;
            }
            slot = (int)b->attrs.n++;
            struct slb_backend_spec *sp = &b->spec[slot];
            memset(sp, 0, sizeof(*sp));
            snprintf(sp->host, sizeof(sp->host), "%s", r->t[k].host);
            sp->port = r->t[k].port;
            snprintf(sp->name, sizeof(sp->name), "%s", name);
            sp->token = name_token(name);
            memcpy(&sp->addr.sa, &r->t[k].addr, r->t[k].addr_len);
            sp->addr.len = r->t[k].addr_len;
            snprintf(sp->addr.text, sizeof(sp->addr.text), "%s", name);
            sp->weight = weight[k];
            b->from_dns[slot] = (uint8_t)(group + 1);
        }
        keep[slot] = true;
        b->attrs.present[slot] = true;
        b->attrs.weight[slot] = weight[k];
        b->attrs.priority[slot] = r->t[k].priority;
    }
    for (unsigned i = 0; i < b->attrs.n; i++)
        if (b->from_dns[i] == group + 1 && !keep[i])
            b->attrs.present[i] = false;
    if (!memcmp(&b->attrs, &cur->attrs, sizeof(b->attrs))) {
        free(b);
        return 0;
    }
    *out = b;
    return 1;
}

const char *slb_sockaddr_text(const struct sockaddr *sa, char *ip, size_t cap, uint16_t *port)
{
    *port = 0;
    snprintf(ip, cap, "0.0.0.0");
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)cap);
        *port = ntohs(a->sin6_port);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)cap);
        *port = ntohs(a->sin_port);
    }
    return ip;
}

int slb_cidr_parse(const char *text, struct slb_cidr *c)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(text, '/');
    size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, text, hlen);
    host[hlen] = 0;
    memset(c, 0, sizeof(*c));
    unsigned max;
    if (inet_pton(AF_INET, host, c->addr) == 1) {
        c->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, c->addr) == 1) {
        c->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    long bits = (long)max;
    if (slash) {
        char *end;
        bits = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || bits < 0 || bits > (long)max)
            return -EINVAL;
    }
    c->bits = (uint8_t)bits;
    return 0;
}

bool slb_cidr_match(const struct slb_cidr *list, unsigned n, const struct sockaddr_storage *ss)
{
    const uint8_t *a;
    if (ss->ss_family == AF_INET)
        a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)ss)->sin_addr;
    else if (ss->ss_family == AF_INET6)
        a = (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr;
    else
        return false;
    for (unsigned i = 0; i < n; i++) {
        const struct slb_cidr *c = &list[i];
        if (c->family != ss->ss_family)
            continue;
        unsigned full = c->bits / 8u, rest = c->bits % 8u;
        if (memcmp(a, c->addr, full))
            continue;
        uint8_t mask = (uint8_t)(0xff00u >> rest);
        if (rest && ((a[full] ^ c->addr[full]) & mask))
            continue;
        return true;
    }
    return false;
}

/* --limit-allow and --proxy-protocol-from values: each a comma-separated list of
 * prefixes. */
static int parse_cidrs(const struct slb_flag_list *in, const char *flag, struct slb_cidr *out,
                       unsigned *n)
{
    *n = 0;
    for (unsigned i = 0; i < in->n; i++) {
        char buf[1024];
        snprintf(buf, sizeof(buf), "%s", in->v[i]);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            if (*n == SLB_MAX_ALLOW) {
                usage_error("--%s: more than %u prefixes", flag, SLB_MAX_ALLOW);
                return -EINVAL;
            }
            if (slb_cidr_parse(tok, &out[*n]) < 0) {
                usage_error("--%s %s: not ADDR[/BITS]", flag, tok);
                return -EINVAL;
            }
            (*n)++;
        }
    }
    return 0;
}

static int parse_allow(struct slb_config *cfg)
{
    if (parse_cidrs(&cfg->limit_allow, "limit-allow", cfg->allow, &cfg->n_allow) < 0)
        return -EINVAL;
    return parse_cidrs(&cfg->proxy_protocol_from, "proxy-protocol-from", cfg->proxy_from,
                       &cfg->n_proxy_from);
}

static bool readable(const char *path)
{
    return path && access(path, R_OK) == 0;
}

/* --config FILE: its "name = value" lines (# comments, blank lines) become "--name=value"
 * arguments ahead of the command line's, so both go through the one flag table and the
 * command line has the last word. A bool is "name = true|false". The lines live as long as
 * the configuration (boot objects). Returns the new argc with *out, or -1 with err set. */
static void free_file_args(char **args, int n_alloc)
{
    for (int i = 1; i <= n_alloc; i++)
        free(args[i]);
    free(args);
}

static int config_file_args(int argc, char **argv, char ***out, int *n_alloc, char *err,
                            size_t errlen)
{
    *n_alloc = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
    }
    *out = argv;
    if (!path)
        return argc;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "--config %s: %s", path, strerror(errno));
        return -1;
    }
    char **args = calloc((size_t)argc + SLB_CONFIG_FILE_LINES + 1, sizeof(char *));
    int n = 0;
    if (args)
        args[n++] = argv[0];
    char line[4096];
    for (unsigned no = 1; args && fgets(line, sizeof(line), f); no++) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *eq = strchr(line, '=');
        char *name = line + strspn(line, " \t");
        char *end = name + strlen(name);
        while (end > name && strchr(" \t\r\n", end[-1]))
            *--end = 0;
        if (!*name)
            continue;
        if (!eq || n == SLB_CONFIG_FILE_LINES + 1) {
            snprintf(err, errlen, "--config %s line %u: not \"flag = value\" (or too many lines)",
                     path, no);
            fclose(f);
            free_file_args(args, n - 1);
            return -1;
        }
        char *value = eq + 1 + strspn(eq + 1, " \t");
        char *name_end = eq;
        while (name_end > name && strchr(" \t", name_end[-1]))
            name_end--;
        *name_end = 0;
        char *arg = malloc(strlen(name) + strlen(value) + 8);
        if (!arg) {
            free_file_args(args, n - 1);
            args = NULL;
            break;
        }
        if (!strcmp(value, "true"))
            sprintf(arg, "--%s", name);
        else if (!strcmp(value, "false"))
            sprintf(arg, "--no-%s", name);
        else
            sprintf(arg, "--%s=%s", name, value);
        args[n++] = arg;
    }
    fclose(f);
    if (!args) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *n_alloc = n - 1;
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    *out = args;
    return n;
}

void slb_config_free(struct slb_config *cfg)
{
    if (cfg->file_args)
        free_file_args(cfg->file_args, cfg->n_file_args);
    cfg->file_args = NULL;
    cfg->n_file_args = 0;
}

int slb_config_load(struct slb_config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    char err[512];
    char **args;
    int n_alloc;
    argc = config_file_args(argc, argv, &args, &n_alloc, err, sizeof(err));
    if (argc < 0)
        return usage_error("%s", err);
    if (args != argv) {
        cfg->file_args = args; /* the flags keep pointers into them: freed by slb_config_free */
        cfg->n_file_args = n_alloc;
    }
    argv = args;
    int rc = slb_flags_parse(table, N_FLAGS, cfg, argc, argv, usage, err, sizeof(err));
    if (rc == 1)
        return 1;
    if (rc < 0)
        return usage_error("%s", err);
    if (cfg->version)
        return 1; /* main prints it: the TLS library's version is not ours to read here */
    if (cfg->cert.n == 0 || cfg->key.n == 0)
        return usage_error("--cert and --key are required");
    if (cfg->cert.n != cfg->key.n)
        return usage_error("--cert given %u times but --key %u times: one key per certificate, "
                           "in the same order",
                           cfg->cert.n, cfg->key.n);
    for (unsigned i = 0; i < cfg->cert.n; i++) {
        if (!readable(cfg->cert.v[i]))
            return usage_error("--cert %s: cannot read the file", cfg->cert.v[i]);
        if (!readable(cfg->key.v[i]))
            return usage_error("--key %s: cannot read the file", cfg->key.v[i]);
    }
    if (cfg->ca && !readable(cfg->ca))
        return usage_error("--ca %s: cannot read the file", cfg->ca);
    if (cfg->verify_client != SLB_VERIFY_CLIENT_NONE && !cfg->ca)
        return usage_error("--verify-client %s needs --ca",
                           verify_client_names[cfg->verify_client]);
    if (cfg->crl && !readable(cfg->crl))
        return usage_error("--crl %s: cannot read the file", cfg->crl);
    if (cfg->crl && cfg->verify_client == SLB_VERIFY_CLIENT_NONE)
        return usage_error("--crl needs --verify-client optional or require (and --ca)");
    if (cfg->backend.n == 0 && !cfg->backends_file)
        return usage_error("at least one --backend sips:HOST:PORT is required");
    if (cfg->backend_verify == SLB_BACKEND_VERIFY_REQUIRE && !cfg->backend_ca)
        return usage_error("--backend-verify require needs --backend-ca (or --backend-verify "
                           "none, for labs only)");
    if (cfg->backend_ca && !readable(cfg->backend_ca))
        return usage_error("--backend-ca %s: cannot read the file", cfg->backend_ca);
    if (!cfg->backend_cert != !cfg->backend_key)
        return usage_error("--backend-cert and --backend-key go together");
    for (unsigned i = 0; i < cfg->listen.n; i++) {
        char host[256];
        uint16_t port;
        const char *l = cfg->listen.v[i];
        bool plain = !strncmp(l, "tcp://", 6), ws = !strncmp(l, "ws://", 5),
             wss = !strncmp(l, "wss://", 6);
        if (plain || !strncmp(l, "tls://", 6) || wss)
            l += 6;
        else if (ws)
            l += 5;
        cfg->listen_addrs[i].plain = plain || ws;
        cfg->listen_addrs[i].ws = ws || wss;
        if ((ws || wss) && !cfg->advertise_ws[0]) {
            /* What the browser side's Record-Route names (RFC 7118 with RFC 5658): this
             * listener, as for tcp://. */
            snprintf(cfg->advertise_ws, sizeof(cfg->advertise_ws), "%s",
                     !strncmp(l, "0.0.0.0:", 8) ? "127.0.0.1:" : "");
            size_t k = strlen(cfg->advertise_ws);
            snprintf(cfg->advertise_ws + k, sizeof(cfg->advertise_ws) - k, "%s",
                     !strncmp(l, "0.0.0.0:", 8) ? l + 8 : l);
            cfg->advertise_ws_plain = ws;
        }
        if (plain && !cfg->advertise_tcp[0]) {
            /* What the plain side's Record-Route names: this listener (loopback for a
             * wildcard, as for TLS). */
            if (!strncmp(l, "0.0.0.0:", 8))
                snprintf(cfg->advertise_tcp, sizeof(cfg->advertise_tcp), "127.0.0.1:%s", l + 8);
            else
                snprintf(cfg->advertise_tcp, sizeof(cfg->advertise_tcp), "%s", l);
        }
        if (slb_config_parse_hostport(l, &cfg->listen_addrs[i], host, sizeof(host), &port) < 0)
            return usage_error("--listen %s: not ADDR:PORT (IPv6 as [ADDR]:PORT)",
                               cfg->listen.v[i]);
    }
    cfg->n_listen = cfg->listen.n;
    cfg->n_backends = 0;
    cfg->n_dns = 0;
    for (unsigned i = 0; i < cfg->backend.n; i++) {
        const char *v = cfg->backend.v[i];
        if (dns_name(v)) {
            if (cfg->n_dns == SLB_MAX_DNS_GROUPS)
                return usage_error("--backend %s: more than %u sips:NAME backends", v,
                                   SLB_MAX_DNS_GROUPS);
            for (unsigned j = 0; j < cfg->n_dns; j++)
                if (!strcasecmp(cfg->dns_names[j], v + 5))
                    return usage_error("--backend %s given twice", v);
            snprintf(cfg->dns_names[cfg->n_dns++], sizeof(cfg->dns_names[0]), "%s", v + 5);
            continue;
        }
        struct slb_backend_spec *b = &cfg->backends[cfg->n_backends];
        if (parse_backend(v, b) < 0)
            return usage_error("--backend %s: not sips:HOST:PORT[;weight=N][;drain] or "
                               "sips:NAME, or HOST does not resolve",
                               v);
        for (unsigned j = 0; j < cfg->n_backends; j++)
            if (!strcmp(cfg->backends[j].name, b->name))
                return usage_error("--backend %s given twice", v);
        cfg->n_backends++;
    }
    if (cfg->backends_file) {
        char ferr[600];
        int n = read_backends_file(cfg->backends_file, cfg->backends + cfg->n_backends,
                                   SLB_MAX_BACKENDS - cfg->n_backends, ferr, sizeof(ferr));
        if (n < 0)
            return usage_error("%s", ferr);
        for (int k = 0; k < n; k++) {
            unsigned i = cfg->n_backends + (unsigned)k;
            cfg->from_file[i] = true;
            for (unsigned j = 0; j < i; j++)
                if (!strcmp(cfg->backends[j].name, cfg->backends[i].name))
                    return usage_error("backend %s listed twice", cfg->backends[i].name);
        }
        cfg->n_backends += (unsigned)n;
        if (cfg->n_backends == 0 && cfg->n_dns == 0)
            return usage_error("no backend: --backends-file %s lists none", cfg->backends_file);
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->n_workers = cfg->workers ? (unsigned)cfg->workers : (unsigned)(cores > 0 ? cores : 1);
    if (cfg->n_workers > SLB_MAX_WORKERS)
        cfg->n_workers = SLB_MAX_WORKERS;
    /* Our Via sent-by: --advertise, else the first listen address. */
    if (cfg->advertise) {
        if (strlen(cfg->advertise) >= sizeof(cfg->advertise_hostport) - 8 ||
            strpbrk(cfg->advertise, " ;,\"<>"))
            return usage_error("--advertise %s: not HOST[:PORT]", cfg->advertise);
        snprintf(cfg->advertise_hostport, sizeof(cfg->advertise_hostport), "%s", cfg->advertise);
    } else {
        /* The first TLS listener (sips: URIs lead to TLS). */
        const char *l = cfg->listen.v[0];
        for (unsigned i = 0; i < cfg->listen.n; i++)
            if (!cfg->listen_addrs[i].plain && !cfg->listen_addrs[i].ws) {
                l = cfg->listen.v[i];
                break;
            }
        if (!strncmp(l, "ws://", 5))
            l += 5;
        else if (!strncmp(l, "tls://", 6) || !strncmp(l, "tcp://", 6) || !strncmp(l, "wss://", 6))
            l += 6; /* only tcp:// listeners: the first of them (our Via names an address) */
        if (!strncmp(l, "0.0.0.0:", 8))
            snprintf(cfg->advertise_hostport, sizeof(cfg->advertise_hostport), "127.0.0.1:%s",
                     l + 8);
        else if (!strncmp(l, "[::]:", 5))
            snprintf(cfg->advertise_hostport, sizeof(cfg->advertise_hostport), "[::1]:%s", l + 5);
        else
            snprintf(cfg->advertise_hostport, sizeof(cfg->advertise_hostport), "%s", l);
    }
    if (!slb_is_prime((uint32_t)cfg->maglev_size))
        return usage_error("--maglev-size %lld is not a prime", (long long)cfg->maglev_size);
    if (cfg->probe_timeout_ms > cfg->probe_interval_ms)
        return usage_error("--probe-timeout must not exceed --probe-interval");
    if (parse_alive(cfg) < 0)
        return usage_error("--probe-alive %s: not final-not-503 or a list like 2xx,4xx",
                           cfg->probe_alive);
    for (unsigned i = 0; i < cfg->n_backends; i++)
        cfg->backends[i].token = name_token(cfg->backends[i].name);
    if (parse_allow(cfg) < 0)
        return 2;
    if (cfg->admin && !strncmp(cfg->admin, "unix:", 5)) {
        if (strlen(cfg->admin + 5) == 0 || strlen(cfg->admin + 5) >= 100)
            return usage_error("--admin %s: unix:PATH with a path of 1 to 99 bytes", cfg->admin);
    } else if (cfg->admin) {
        char host[256];
        uint16_t port;
        if (slb_config_parse_hostport(cfg->admin, &cfg->admin_addr, host, sizeof(host), &port) < 0)
            return usage_error("--admin %s: not ADDR:PORT (IPv6 as [ADDR]:PORT)", cfg->admin);
    }
    /* A response to a request of the largest size must fit a client's queue. */
    if (cfg->client_out_max < 2 * cfg->max_message_size)
        return usage_error("--client-out-max %lld is below twice --max-message-size (%lld)",
                           (long long)cfg->client_out_max, (long long)cfg->max_message_size);
    return 0;
}

void slb_config_print(const struct slb_config *cfg, FILE *out)
{
    slb_flags_dump(table, N_FLAGS, cfg, out);
}

const struct slb_flag *slb_config_flags(size_t *n)
{
    *n = N_FLAGS;
    return table;
}
