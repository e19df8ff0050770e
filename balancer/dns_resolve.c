/* Backends from DNS for SIPS (RFC 3263 4.2, RFC 2782): _sips._tcp.NAME SRV, then the A and
 * AAAA records of each SRV target, or NAME's own A and AAAA records when there is no SRV.
 *
 * One call owns one c-ares channel from start to end and drives it itself (ares_getsock,
 * poll, ares_process_fd) against one deadline for the whole call; at the deadline the queries
 * still open are cancelled. Two steps: the SRV query, then every address query at once.
 * Runs on a control thread, never on a worker: it blocks for up to timeout_ms.
 *
 * TTL: c-ares 1.18's ares_parse_srv_reply gives no TTL, so the SRV answer's TTL is read from
 * the raw answer by a small bounded parser (answer_min_ttl: the smallest TTL of the answer
 * section, which holds the SRV records and any CNAME on the way); address TTLs come from
 * ares_parse_a_reply/ares_parse_aaaa_reply. ttl_s is the minimum over every record used.
 *
 * Invariants: run.pending counts the queries whose callback has not run yet; every loop is
 * bounded by the answer's length or by SLB_MAX_BACKENDS. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "balancer/dns_resolve.h"

#include <sys/select.h> /* before ares.h: it uses fd_set */
#include <sys/time.h>

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    DNS_CLASS_IN = 1,
    DNS_TYPE_A = 1,
    DNS_TYPE_AAAA = 28,
    DNS_TYPE_SRV = 33,
    TRIES = 3, /* per server; each try waits twice as long as the one before (c-ares) */
    TRY_MAX_MS = 5000,
};

/* One SRV record as published. */
struct srv_rec {
    char host[256]; /* "" for the "." target */
    uint16_t port, priority, weight;
};

/* One A or AAAA query: what it asks for and how it ended. */
struct lookup {
    struct run *run;
    unsigned rec; /* index into run->srv; 0 for NAME itself */
    int family;
    int status; /* ARES_SUCCESS, ARES_ENODATA, ARES_ENOTFOUND, ... */
};

/* One address an A or AAAA answer gave. */
struct found {
    unsigned rec;
    int family;
    unsigned char ip[16];
};

/* The state of one slb_dns_resolve call; owned by it (heap, freed before it returns). */
struct run {
    ares_channel ch;
    uint64_t deadline_ms; /* CLOCK_MONOTONIC */
    unsigned pending;     /* queries whose callback has not run */
    int srv_status;
    struct srv_rec srv[SLB_MAX_BACKENDS];
    unsigned n_srv;
    bool too_many; /* more SRV records or addresses than SLB_MAX_BACKENDS */
    uint32_t ttl_s;
    struct lookup lk[2 * SLB_MAX_BACKENDS];
    unsigned n_lk;
    struct found addr[SLB_MAX_BACKENDS];
    unsigned n_addr;
};

static void say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void min_ttl(struct run *r, int ttl)
{
    uint32_t t = ttl < 0 ? 0 : (uint32_t)ttl;
    if (t < r->ttl_s)
        r->ttl_s = t;
}

/* Offset just past the (possibly compressed) name at off, or -1 when it runs past len.
 * RFC 1035 4.1.4: a name ends at a zero length byte or at a two-byte pointer; the label types
 * 0x40 and 0x80 are not in use. Skipping never follows a pointer, so it cannot loop. */
static int skip_name(const unsigned char *m, int len, int off)
{
    while (off < len) {
        unsigned c = m[off];
        if (c == 0)
            return off + 1;
        if ((c & 0xC0) == 0xC0)
            return off + 2 <= len ? off + 2 : -1;
        if (c & 0xC0)
            return -1;
        off += 1 + (int)c;
    }
    return -1;
}

static unsigned get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* The smallest TTL among the answer section's records (the SRV records and any CNAME that
 * led to them). Returns 0, or -1 when the message is malformed or has no answer. */
static int answer_min_ttl(const unsigned char *m, int len, uint32_t *ttl)
{
    if (len < 12)
        return -1;
    unsigned qd = get16(m + 4), an = get16(m + 6);
    int off = 12;
    for (unsigned i = 0; i < qd; i++) {
        off = skip_name(m, len, off);
        if (off < 0 || len - off < 4)
            return -1;
        off += 4; /* QTYPE, QCLASS */
    }
    uint32_t min = UINT32_MAX;
    for (unsigned i = 0; i < an; i++) {
        off = skip_name(m, len, off);
        if (off < 0 || len - off < 10)
            return -1;
        const unsigned char *p = m + off;
        uint32_t t = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
        if (t > INT32_MAX) /* RFC 2181 8: a TTL with the top bit set is read as 0 */
            t = 0;
        if (t < min)
            min = t;
        unsigned rdlen = get16(p + 8);
        off += 10;
        if ((unsigned)(len - off) < rdlen)
            return -1;
        off += (int)rdlen;
    }
    if (an == 0)
        return -1;
    *ttl = min;
    return 0;
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct run *r = arg;
    (void)timeouts;
    r->pending--;
    r->srv_status = status;
    if (status != ARES_SUCCESS)
        return;
    struct ares_srv_reply *head = NULL;
    int st = ares_parse_srv_reply(abuf, alen, &head);
    uint32_t ttl = 0;
    if (st == ARES_SUCCESS && answer_min_ttl(abuf, alen, &ttl) < 0)
        st = ARES_EBADRESP;
    r->srv_status = st;
    for (struct ares_srv_reply *s = head; st == ARES_SUCCESS && s; s = s->next) {
        if (r->n_srv == SLB_MAX_BACKENDS) {
            r->too_many = true;
            break;
        }
        struct srv_rec *rec = &r->srv[r->n_srv++];
        /* ares_expand_name gives "" for the root name; "." is accepted too. */
        const char *h = strcmp(s->host, ".") == 0 ? "" : s->host;
        if ((size_t)snprintf(rec->host, sizeof(rec->host), "%s", h) >= sizeof(rec->host))
            r->srv_status = ARES_EBADRESP;
        rec->port = s->port;
        rec->priority = s->priority;
        rec->weight = s->weight;
    }
    if (st == ARES_SUCCESS)
        min_ttl(r, (int)(ttl > INT32_MAX ? INT32_MAX : ttl));
    ares_free_data(head);
}

static void add_found(struct run *r, const struct lookup *lk, const void *ip, size_t len, int ttl)
{
    if (r->n_addr == SLB_MAX_BACKENDS) {
        r->too_many = true;
        return;
    }
    struct found *f = &r->addr[r->n_addr++];
    f->rec = lk->rec;
    f->family = lk->family;
    memcpy(f->ip, ip, len);
    min_ttl(r, ttl);
}

static void on_addr(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct lookup *lk = arg;
    struct run *r = lk->run;
    (void)timeouts;
    r->pending--;
    lk->status = status;
    if (status != ARES_SUCCESS)
        return;
    /* One more than fits, so that a full answer shows as too many. */
    enum { CAP = SLB_MAX_BACKENDS + 1 };
    int n = CAP;
    if (lk->family == AF_INET) {
        struct ares_addrttl a[CAP];
        lk->status = ares_parse_a_reply(abuf, alen, NULL, a, &n);
        for (int i = 0; lk->status == ARES_SUCCESS && i < n; i++)
            add_found(r, lk, &a[i].ipaddr, 4, a[i].ttl);
    } else {
        struct ares_addr6ttl a[CAP];
        lk->status = ares_parse_aaaa_reply(abuf, alen, NULL, a, &n);
        for (int i = 0; lk->status == ARES_SUCCESS && i < n; i++)
            add_found(r, lk, &a[i].ip6addr, 16, a[i].ttl);
    }
}

/* Runs the channel until no query is open or the deadline passes (then cancels them all).
 * Returns 0, -ETIMEDOUT, or -errno of poll. */
static int wait_all(struct run *r)
{
    while (r->pending > 0) {
        uint64_t now = now_ms();
        if (now >= r->deadline_ms) {
            ares_cancel(r->ch); /* runs the callbacks with ARES_ECANCELLED */
            return -ETIMEDOUT;
        }
        uint64_t left = r->deadline_ms - now;
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        /* Not ARES_GETSOCK_WRITABLE: it shifts a signed 1 into the sign bit (UB) at 15. */
        unsigned bits = (unsigned)ares_getsock(r->ch, socks, ARES_GETSOCK_MAXNUM);
        struct pollfd pfd[ARES_GETSOCK_MAXNUM];
        nfds_t n = 0;
        for (unsigned i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            short ev = (short)(((bits & (1u << i)) ? POLLIN : 0) |
                               ((bits & (1u << (i + ARES_GETSOCK_MAXNUM))) ? POLLOUT : 0));
            if (ev)
                pfd[n++] = (struct pollfd){.fd = socks[i], .events = ev};
        }
        struct timeval maxtv = {.tv_sec = (time_t)(left / 1000),
                                .tv_usec = (suseconds_t)(left % 1000 * 1000)};
        struct timeval tv, *t = ares_timeout(r->ch, &maxtv, &tv);
        int64_t wait_ms = (int64_t)t->tv_sec * 1000 + (t->tv_usec + 999) / 1000;
        int rc = poll(pfd, n, wait_ms > 1000 ? 1000 : (int)wait_ms); /* poll takes an int */
        if (rc < 0 && errno != EINTR)
            return -errno;
        if (rc <= 0) {
            ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* retries, timeouts */
            continue;
        }
        for (nfds_t i = 0; i < n; i++) {
            short ev = pfd[i].revents;
            ares_process_fd(r->ch, ev & (POLLIN | POLLERR | POLLHUP) ? pfd[i].fd : ARES_SOCKET_BAD,
                            ev & POLLOUT ? pfd[i].fd : ARES_SOCKET_BAD);
        }
    }
    return 0;
}

/* Parses "ADDR:PORT", "[V6]:PORT", "ADDR", "[V6]" or a bare IPv6 address (port 53). */
static int parse_server(const char *s, struct ares_addr_port_node *nd)
{
    const char *host = s, *port = NULL;
    size_t hlen;
    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || (e[1] && e[1] != ':'))
            return -EINVAL;
        host = s + 1;
        hlen = (size_t)(e - host);
        port = e[1] ? e + 2 : NULL;
    } else {
        const char *c = strchr(s, ':');
        bool bare_v6 = c && strchr(c + 1, ':');
        hlen = c && !bare_v6 ? (size_t)(c - s) : strlen(s);
        port = c && !bare_v6 ? c + 1 : NULL;
    }
    char buf[INET6_ADDRSTRLEN];
    if (hlen == 0 || hlen >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, host, hlen);
    buf[hlen] = '\0';
    unsigned long p = 53;
    if (port) {
        char *end;
        if (*port < '0' || *port > '9')
            return -EINVAL;
        p = strtoul(port, &end, 10);
        if (*end || p == 0 || p > 65535)
            return -EINVAL;
    }
    memset(nd, 0, sizeof(*nd));
    if (inet_pton(AF_INET, buf, &nd->addr.addr4) == 1)
        nd->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, &nd->addr.addr6) == 1)
        nd->family = AF_INET6;
    else
        return -EINVAL;
    nd->udp_port = nd->tcp_port = (int)p;
    return 0;
}

static int open_channel(struct run *r, const char *const *servers, unsigned n_servers,
                        unsigned timeout_ms, char *err, size_t errlen)
{
    struct ares_addr_port_node nodes[SLB_DNS_MAX_SERVERS];
    if (n_servers > SLB_DNS_MAX_SERVERS) {
        say(err, errlen, "%u DNS servers given, at most %u", n_servers, SLB_DNS_MAX_SERVERS);
        return -EINVAL;
    }
    for (unsigned i = 0; servers && i < n_servers; i++) {
        if (!servers[i] || parse_server(servers[i], &nodes[i]) < 0) {
            say(err, errlen, "bad DNS server \"%s\" (want ADDR:PORT or [V6]:PORT)",
                servers[i] ? servers[i] : "(null)");
            return -EINVAL;
        }
        nodes[i].next = i + 1 < n_servers ? &nodes[i + 1] : NULL;
    }
    /* Each try waits a quarter of the budget (at most TRY_MAX_MS), the next ones twice as
     * long: a lost datagram is resent in time, and the deadline cuts the last try short. */
    unsigned try_ms = timeout_ms / 4 > TRY_MAX_MS ? TRY_MAX_MS : timeout_ms / 4;
    struct ares_options o = {.timeout = try_ms ? (int)try_ms : 1, .tries = TRIES};
    int st = ares_init_options(&r->ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (st == ARES_SUCCESS && servers && n_servers > 0)
        st = ares_set_servers_ports(r->ch, nodes);
    if (st != ARES_SUCCESS) {
        say(err, errlen, "DNS resolver setup: %s", ares_strerror(st));
        return st == ARES_ENOMEM ? -ENOMEM : -EIO;
    }
    return 0;
}

/* A failed query's status as an errno. ARES_ECANCELLED only comes from the deadline. */
static int status_errno(int st)
{
    switch (st) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
        return -ENOENT;
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:
        return -ETIMEDOUT;
    case ARES_ECONNREFUSED:
        return -ECONNREFUSED;
    case ARES_ENOMEM:
        return -ENOMEM;
    case ARES_EBADNAME:
        return -EINVAL;
    default: /* ARES_ESERVFAIL, ARES_EREFUSED, ARES_EFORMERR, ARES_EBADRESP, ... */
        return -EIO;
    }
}

static bool absent(int st)
{
    return st == ARES_ENOTFOUND || st == ARES_ENODATA;
}

/* Asks for the A and AAAA records of host on behalf of SRV record rec (0 for NAME). */
static void ask_addrs(struct run *r, const char *host, unsigned rec)
{
    static const int fam[2] = {AF_INET, AF_INET6};
    for (int i = 0; i < 2; i++) {
        struct lookup *lk = &r->lk[r->n_lk++];
        *lk = (struct lookup){.run = r, .rec = rec, .family = fam[i], .status = ARES_ENODATA};
        r->pending++;
        ares_query(r->ch, host, DNS_CLASS_IN, fam[i] == AF_INET ? DNS_TYPE_A : DNS_TYPE_AAAA,
                   on_addr, lk);
    }
}

/* Runs the address queries asked for; fails on the first query that neither succeeded nor
 * found nothing (a partial answer is not an answer). */
static int wait_addrs(struct run *r, const char *name, unsigned timeout_ms, char *err,
                      size_t errlen)
{
    int rc = wait_all(r);
    if (rc == -ETIMEDOUT) {
        say(err, errlen, "DNS: no answer for the addresses of %s within %u ms", name, timeout_ms);
        return rc;
    }
    if (rc < 0) {
        say(err, errlen, "DNS: poll: %s", strerror(-rc));
        return rc;
    }
    for (unsigned i = 0; i < r->n_lk; i++) {
        const struct lookup *lk = &r->lk[i];
        if (lk->status == ARES_SUCCESS || absent(lk->status))
            continue;
        const char *host = r->n_srv ? r->srv[lk->rec].host : name;
        say(err, errlen, "DNS: %s of %s: %s", lk->family == AF_INET ? "A" : "AAAA", host,
            ares_strerror(lk->status));
        return status_errno(lk->status);
    }
    if (r->too_many) {
        say(err, errlen, "DNS: %s has more than %u addresses", name, SLB_MAX_BACKENDS);
        return -E2BIG;
    }
    return 0;
}

static void fill_target(struct slb_dns_target *t, const struct found *f, uint16_t port)
{
    memset(&t->addr, 0, sizeof(t->addr));
    if (f->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        memcpy(&sin->sin_addr, f->ip, 4);
        t->addr_len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&t->addr;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        memcpy(&sin6->sin6_addr, f->ip, 16);
        t->addr_len = sizeof(*sin6);
    }
    t->port = port;
}

static int addr_cmp(const struct slb_dns_target *a, const struct slb_dns_target *b)
{
    if (a->addr.ss_family != b->addr.ss_family)
        return a->addr.ss_family == AF_INET ? -1 : 1;
    if (a->addr.ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)&a->addr)->sin_addr,
                      &((const struct sockaddr_in *)&b->addr)->sin_addr, 4);
    return memcmp(&((const struct sockaddr_in6 *)&a->addr)->sin6_addr,
                  &((const struct sockaddr_in6 *)&b->addr)->sin6_addr, 16);
}

/* Same host, port and address: one backend, whatever the records say. */
static int target_key_cmp(const struct slb_dns_target *a, const struct slb_dns_target *b)
{
    int c = strcmp(a->host, b->host);
    if (c)
        return c;
    if (a->port != b->port)
        return a->port < b->port ? -1 : 1;
    return addr_cmp(a, b);
}

/* Best priority first, then heaviest, then by key: a stable order for the same records. */
static int target_cmp(const void *pa, const void *pb)
{
    const struct slb_dns_target *a = pa, *b = pb;
    if (a->priority != b->priority)
        return a->priority < b->priority ? -1 : 1;
    if (a->weight != b->weight)
        return a->weight > b->weight ? -1 : 1;
    return target_key_cmp(a, b);
}

/* out->t from the addresses found: sorted, duplicates (same host, port and address from two
 * SRV records) kept once, at their best priority. */
static void build_targets(const struct run *r, const char *name, uint16_t default_port,
                          struct slb_dns_result *out)
{
    for (unsigned i = 0; i < r->n_addr; i++) {
        const struct found *f = &r->addr[i];
        struct slb_dns_target *t = &out->t[i];
        if (out->from_srv) {
            const struct srv_rec *s = &r->srv[f->rec];
            snprintf(t->host, sizeof(t->host), "%s", s->host);
            t->priority = s->priority;
            t->weight = s->weight;
            fill_target(t, f, s->port);
        } else {
            snprintf(t->host, sizeof(t->host), "%s", name);
            t->priority = 0;
            t->weight = 1;
            fill_target(t, f, default_port);
        }
    }
    qsort(out->t, r->n_addr, sizeof(out->t[0]), target_cmp);
    unsigned n = 0;
    for (unsigned i = 0; i < r->n_addr; i++) {
        bool dup = false;
        for (unsigned j = 0; j < n && !dup; j++)
            dup = target_key_cmp(&out->t[j], &out->t[i]) == 0;
        if (!dup)
            out->t[n++] = out->t[i];
    }
    out->n = n;
}

/* The SRV step's outcome: the addresses of every SRV target. */
static int resolve_srv_targets(struct run *r, const char *name, unsigned timeout_ms,
                               struct slb_dns_result *out, char *err, size_t errlen)
{
    out->from_srv = true;
    if (r->too_many) {
        say(err, errlen, "DNS: _sips._tcp.%s has more than %u SRV records", name, SLB_MAX_BACKENDS);
        return -E2BIG;
    }
    for (unsigned i = 0; i < r->n_srv; i++)
        if (r->srv[i].host[0])
            ask_addrs(r, r->srv[i].host, i);
    if (r->n_lk == 0) { /* RFC 2782: a "." target: decidedly not available */
        out->ttl_s = r->ttl_s;
        say(err, errlen, "DNS: _sips._tcp.%s: service not available (SRV target \".\")", name);
        return 0;
    }
    int rc = wait_addrs(r, name, timeout_ms, err, errlen);
    if (rc < 0)
        return rc;
    unsigned real = 0;
    const char *first_skipped = NULL;
    for (unsigned i = 0; i < r->n_srv; i++) {
        if (!r->srv[i].host[0])
            continue;
        real++;
        bool has = false;
        for (unsigned j = 0; j < r->n_addr && !has; j++)
            has = r->addr[j].rec == i;
        if (!has && out->skipped++ == 0)
            first_skipped = r->srv[i].host;
    }
    if (out->skipped == real) {
        say(err, errlen, "DNS: no SRV target of _sips._tcp.%s has an address (%s, ...)", name,
            first_skipped);
        return -ENOENT;
    }
    build_targets(r, NULL, 0, out);
    out->ttl_s = r->ttl_s;
    if (out->skipped)
        say(err, errlen, "DNS: _sips._tcp.%s: %u SRV target(s) without an address left out (%s)",
            name, out->skipped, first_skipped);
    return (int)out->n;
}

/* No SRV record: NAME's own addresses with the default port. */
static int resolve_plain(struct run *r, const char *name, uint16_t default_port,
                         unsigned timeout_ms, struct slb_dns_result *out, char *err, size_t errlen)
{
    int srv_status = r->srv_status;
    ask_addrs(r, name, 0);
    int rc = wait_addrs(r, name, timeout_ms, err, errlen);
    if (rc < 0)
        return rc;
    if (r->n_addr == 0) {
        bool nowhere = srv_status == ARES_ENOTFOUND && r->lk[0].status == ARES_ENOTFOUND &&
                       r->lk[1].status == ARES_ENOTFOUND;
        say(err, errlen,
            nowhere ? "DNS: %s does not exist" : "DNS: %s has no SRV, A or AAAA record", name);
        return -ENOENT;
    }
    build_targets(r, name, default_port, out);
    out->ttl_s = r->ttl_s;
    return (int)out->n;
}

/* RFC 3263 4.2: a numeric IP address is used as it is, with the default port. */
static bool ip_literal(const char *name, uint16_t default_port, struct slb_dns_result *out)
{
    char buf[INET6_ADDRSTRLEN];
    size_t len = strlen(name);
    if (name[0] == '[' && len > 2 && name[len - 1] == ']' && len - 2 < sizeof(buf)) {
        memcpy(buf, name + 1, len - 2);
        buf[len - 2] = '\0';
    } else if (len < sizeof(buf)) {
        memcpy(buf, name, len + 1);
    } else {
        return false;
    }
    struct found f = {0};
    if (inet_pton(AF_INET, buf, f.ip) == 1)
        f.family = AF_INET;
    else if (inet_pton(AF_INET6, buf, f.ip) == 1)
        f.family = AF_INET6;
    else
        return false;
    struct slb_dns_target *t = &out->t[0];
    snprintf(t->host, sizeof(t->host), "%s", buf);
    fill_target(t, &f, default_port);
    t->weight = 1;
    out->n = 1;
    out->ttl_s = UINT32_MAX;
    return true;
}

/* The SRV query, then the addresses of its targets or of NAME. */
static int resolve(struct run *r, const char *name, uint16_t default_port, unsigned timeout_ms,
                   struct slb_dns_result *out, char *err, size_t errlen)
{
    char qname[300];
    snprintf(qname, sizeof(qname), "_sips._tcp.%s", name);
    r->pending = 1;
    ares_query(r->ch, qname, DNS_CLASS_IN, DNS_TYPE_SRV, on_srv, r);
    int rc = wait_all(r);
    if (rc == -ETIMEDOUT) {
        say(err, errlen, "DNS: no answer for %s SRV within %u ms", qname, timeout_ms);
        return rc;
    }
    if (rc < 0) {
        say(err, errlen, "DNS: poll: %s", strerror(-rc));
        return rc;
    }
    if (r->srv_status == ARES_SUCCESS)
        return resolve_srv_targets(r, name, timeout_ms, out, err, errlen);
    if (!absent(r->srv_status)) {
        say(err, errlen, "DNS: %s SRV: %s", qname, ares_strerror(r->srv_status));
        return status_errno(r->srv_status);
    }
    return resolve_plain(r, name, default_port, timeout_ms, out, err, errlen);
}

int slb_dns_resolve(const char *name, uint16_t default_port, const char *const *servers,
                    unsigned n_servers, unsigned timeout_ms, struct slb_dns_result *out, char *err,
                    size_t errlen)
{
    memset(out, 0, sizeof(*out));
    say(err, errlen, "%s", "");
    /* The SRV owner _sips._tcp.NAME must fit in a name's 253 characters (RFC 1035 2.3.4). */
    size_t len = name ? strlen(name) : 0;
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 253 - strlen("_sips._tcp.") || timeout_ms == 0) {
        say(err, errlen, "DNS: bad name \"%s\" or timeout %u ms", name ? name : "(null)",
            timeout_ms);
        return -EINVAL;
    }
    if (ip_literal(name, default_port, out))
        return 1;
    char bare[256]; /* NAME without its final dot: the host name for SNI */
    memcpy(bare, name, len);
    bare[len] = '\0';

    struct run *r = calloc(1, sizeof(*r));
    if (!r) {
        say(err, errlen, "DNS: out of memory");
        return -ENOMEM;
    }
    r->deadline_ms = now_ms() + timeout_ms;
    r->ttl_s = UINT32_MAX;
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        say(err, errlen, "DNS: c-ares init: %s", ares_strerror(rc));
        free(r);
        return -EIO;
    }
    rc = open_channel(r, servers, n_servers, timeout_ms, err, errlen);
    if (rc == 0) {
        rc = resolve(r, bare, default_port, timeout_ms, out, err, errlen);
        ares_destroy(r->ch);
    }
    ares_library_cleanup();
    free(r);
    if (rc < 0) {
        out->n = 0;
        out->skipped = 0;
    }
    return rc;
}

void slb_dns_maglev_weights(const struct slb_dns_result *r, uint32_t *weight)
{
    if (!r->from_srv) {
        for (unsigned i = 0; i < r->n; i++)
            weight[i] = 1;
        return;
    }
    /* A target's weight per address: its SRV weight over its number of addresses. */
    double share[SLB_MAX_BACKENDS], max = 0;
    for (unsigned i = 0; i < r->n; i++) {
        const struct slb_dns_target *t = &r->t[i];
        unsigned k = 0;
        for (unsigned j = 0; j < r->n; j++)
            k += strcmp(r->t[j].host, t->host) == 0 && r->t[j].port == t->port &&
                 r->t[j].priority == t->priority;
        share[i] = (double)t->weight / k;
        if (share[i] > max)
            max = share[i];
    }
    for (unsigned i = 0; i < r->n; i++) {
        double w = max > 0 ? share[i] * SLB_MAX_WEIGHT / max + 0.5 : 1;
        weight[i] = w < 1 ? 1 : w > SLB_MAX_WEIGHT ? SLB_MAX_WEIGHT : (uint32_t)w;
    }
}

uint32_t slb_dns_best_priority(const struct slb_dns_result *r, const bool *up)
{
    uint32_t best = UINT32_MAX;
    for (unsigned i = 0; i < r->n; i++)
        if (up[i] && r->t[i].priority < best)
            best = r->t[i].priority;
    return best;
}
