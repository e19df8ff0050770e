/* sipslb-load: the SIP requests it sends, written with plain byte copies (no printf on the
 * per-message path), and the parts of a 2xx it needs to build ACK and BYE.
 *
 * Every request carries what RFC 3261 8.1.1 asks of a UAC: Request-URI, Via with ;rport
 * (RFC 3581) and a unique z9hG4bK branch, Max-Forwards 70, From with a tag, To, Call-ID,
 * CSeq, Contact for dialog-forming and registering requests, Content-Length.
 * Pure functions over caller buffers; any thread. */
#include "bench/load.h"

#include <errno.h>
#include <string.h>

#include "core/sip.h"

/* An output buffer; a write past cap marks it failed instead of writing. */
struct wb {
    char *p;
    size_t len, cap;
    bool full;
};

static void put(struct wb *b, const void *s, size_t n)
{
    if (n > b->cap - b->len) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_u(struct wb *b, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(b, tmp + sizeof(tmp) - n, n);
}

static int done(const struct wb *b)
{
    return b->full ? -ENOSPC : (int)b->len;
}

/* Via, Max-Forwards, From, To, Call-ID and CSeq of a new request. */
static void common(struct wb *b, const struct load_cfg *cfg, const struct load_ids *ids,
                   const char *method, const char *from_user, size_t from_user_len,
                   const char *to_user, size_t to_user_len)
{
    PUT_LIT(b, "Via: SIP/2.0/TLS ");
    put(b, ids->local, ids->local_len);
    PUT_LIT(b, ";rport;branch=");
    put(b, ids->branch, ids->branch_len);
    PUT_LIT(b, "\r\nMax-Forwards: 70\r\nFrom: <sips:");
    put(b, from_user, from_user_len);
    put(b, "@", 1);
    put(b, cfg->host, strlen(cfg->host));
    PUT_LIT(b, ">;tag=");
    put(b, ids->from_tag, ids->from_tag_len);
    PUT_LIT(b, "\r\nTo: <sips:");
    if (to_user_len) {
        put(b, to_user, to_user_len);
        put(b, "@", 1);
    }
    put(b, cfg->host, strlen(cfg->host));
    PUT_LIT(b, ">\r\nCall-ID: ");
    put(b, ids->call_id, ids->call_id_len);
    PUT_LIT(b, "\r\nCSeq: ");
    put_u(b, ids->cseq);
    put(b, " ", 1);
    put(b, method, strlen(method));
    PUT_LIT(b, "\r\n");
}

static void contact(struct wb *b, const struct load_ids *ids, const char *user, size_t user_len)
{
    PUT_LIT(b, "Contact: <sips:");
    put(b, user, user_len);
    put(b, "@", 1);
    put(b, ids->local, ids->local_len);
    PUT_LIT(b, ";transport=tls>\r\n");
}

static void start_line(struct wb *b, const char *method, const char *user, size_t user_len,
                       const struct load_cfg *cfg)
{
    put(b, method, strlen(method));
    PUT_LIT(b, " sips:");
    if (user_len) {
        put(b, user, user_len);
        put(b, "@", 1);
    }
    put(b, cfg->hostport, strlen(cfg->hostport));
    PUT_LIT(b, " SIP/2.0\r\n");
}

static const char user_agent[] = "User-Agent: sipslb-load/0.1\r\n";
static const char allow[] =
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY\r\n";

/* An offer as a softphone sends it: SRTP audio with the usual codecs (~570 bytes, so the
 * whole INVITE is about 1 KB). The origin's address is ours, taken from local. */
static void sdp(struct wb *b, const struct load_ids *ids)
{
    size_t host_len = ids->local_len;
    const char *colon = memchr(ids->local, ']', ids->local_len);
    bool v6 = colon != NULL;
    const char *host = ids->local + (v6 ? 1 : 0);
    if (v6)
        host_len = (size_t)(colon - ids->local) - 1;
    else
        for (size_t i = 0; i < ids->local_len; i++)
            if (ids->local[i] == ':')
                host_len = i;
    const char *ip = v6 ? "IP6 " : "IP4 ";
    PUT_LIT(b, "v=0\r\no=- 3912847321 3912847321 IN ");
    put(b, ip, 4);
    put(b, host, host_len);
    PUT_LIT(b, "\r\ns=sipslb-load\r\nc=IN ");
    put(b, ip, 4);
    put(b, host, host_len);
    PUT_LIT(b, "\r\nt=0 0\r\n"
               "m=audio 40000 RTP/SAVP 0 8 9 18 101\r\n"
               "a=rtpmap:0 PCMU/8000\r\n"
               "a=rtpmap:8 PCMA/8000\r\n"
               "a=rtpmap:9 G722/8000\r\n"
               "a=rtpmap:18 G729/8000\r\n"
               "a=fmtp:18 annexb=no\r\n"
               "a=rtpmap:101 telephone-event/8000\r\n"
               "a=fmtp:101 0-16\r\n"
               "a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
               "inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^31\r\n"
               "a=crypto:2 AES_CM_128_HMAC_SHA1_32 "
               "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^31\r\n"
               "a=ptime:20\r\n"
               "a=maxptime:150\r\n"
               "a=rtcp-mux\r\n"
               "a=sendrecv\r\n");
}

int load_sip_invite(char *out, size_t cap, const struct load_cfg *cfg, const struct load_ids *ids)
{
    static const char caller[] = "alice", callee[] = "bob";
    char body[1024];
    struct wb s = {body, 0, sizeof(body), false};
    sdp(&s, ids);
    if (s.full)
        return -ENOSPC;
    struct wb b = {out, 0, cap, false};
    start_line(&b, "INVITE", callee, sizeof(callee) - 1, cfg);
    common(&b, cfg, ids, "INVITE", caller, sizeof(caller) - 1, callee, sizeof(callee) - 1);
    contact(&b, ids, caller, sizeof(caller) - 1);
    put(&b, user_agent, sizeof(user_agent) - 1);
    put(&b, allow, sizeof(allow) - 1);
    PUT_LIT(&b, "Supported: replaces, timer\r\n"
                "Session-Expires: 1800\r\n"
                "Content-Type: application/sdp\r\n"
                "Content-Length: ");
    put_u(&b, s.len);
    PUT_LIT(&b, "\r\n\r\n");
    put(&b, body, s.len);
    return done(&b);
}

int load_sip_options(char *out, size_t cap, const struct load_cfg *cfg, const struct load_ids *ids)
{
    static const char user[] = "load";
    struct wb b = {out, 0, cap, false};
    start_line(&b, "OPTIONS", NULL, 0, cfg);
    common(&b, cfg, ids, "OPTIONS", user, sizeof(user) - 1, NULL, 0);
    contact(&b, ids, user, sizeof(user) - 1);
    put(&b, user_agent, sizeof(user_agent) - 1);
    PUT_LIT(&b, "Accept: application/sdp\r\nContent-Length: 0\r\n\r\n");
    return done(&b);
}

int load_sip_register(char *out, size_t cap, const struct load_cfg *cfg, const struct load_ids *ids)
{
    struct wb b = {out, 0, cap, false};
    start_line(&b, "REGISTER", NULL, 0, cfg);
    /* RFC 3261 10.2: From and To both hold the address-of-record being registered. */
    common(&b, cfg, ids, "REGISTER", ids->user, ids->user_len, ids->user, ids->user_len);
    contact(&b, ids, ids->user, ids->user_len);
    put(&b, user_agent, sizeof(user_agent) - 1);
    put(&b, allow, sizeof(allow) - 1);
    PUT_LIT(&b, "Expires: 3600\r\nContent-Length: 0\r\n\r\n");
    return done(&b);
}

/* ---- in-dialog requests ---------------------------------------------------------------- */

static struct slb_slice header_value(const struct slb_sip_msg *m, enum slb_sip_hdr_id id)
{
    int16_t i = m->first[id];
    if (i < 0 || (uint32_t)i >= m->header_count)
        return (struct slb_slice){NULL, 0};
    return m->headers[i].value;
}

/* The URI inside a name-addr ("x" <uri>;params) or a bare addr-spec (uri;params). */
static struct slb_slice addr_uri(struct slb_slice v)
{
    const char *lt = memchr(v.ptr, '<', v.len);
    if (lt) {
        const char *end = v.ptr + v.len;
        const char *gt = memchr(lt + 1, '>', (size_t)(end - lt - 1));
        if (gt)
            return (struct slb_slice){lt + 1, (size_t)(gt - lt - 1)};
        return (struct slb_slice){NULL, 0};
    }
    size_t n = 0;
    while (n < v.len && v.ptr[n] != ';' && v.ptr[n] != ',' && v.ptr[n] != ' ')
        n++;
    return (struct slb_slice){v.ptr, n};
}

#define ROUTES_MAX 16

/* Splits a header value into its comma-separated entries (commas inside <> or quotes do
 * not count). Returns how many were stored, or -1 if more than room. */
static int split_entries(struct slb_slice v, struct slb_slice *out, int room)
{
    int n = 0;
    size_t start = 0;
    bool quoted = false, angle = false;
    for (size_t i = 0; i <= v.len; i++) {
        char ch = i < v.len ? v.ptr[i] : ',';
        if (quoted) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                quoted = false;
            continue;
        }
        if (ch == '"')
            quoted = true;
        else if (ch == '<')
            angle = true;
        else if (ch == '>')
            angle = false;
        else if (ch == ',' && !angle) {
            size_t a = start, e = i;
            while (a < e && (v.ptr[a] == ' ' || v.ptr[a] == '\t'))
                a++;
            while (e > a && (v.ptr[e - 1] == ' ' || v.ptr[e - 1] == '\t'))
                e--;
            if (e > a) {
                if (n == room)
                    return -1;
                out[n++] = (struct slb_slice){v.ptr + a, e - a};
            }
            start = i + 1;
        }
    }
    return n;
}

/* Route set of a UAC (RFC 3261 12.1.2): the 2xx's Record-Route entries in reverse order. */
static void route_set(struct wb *b, const struct slb_sip_msg *m)
{
    struct slb_slice rr[ROUTES_MAX];
    int n = 0;
    for (uint32_t i = 0; i < m->header_count; i++) {
        if (m->headers[i].id != SLB_HDR_RECORD_ROUTE)
            continue;
        int got = split_entries(m->headers[i].value, rr + n, ROUTES_MAX - n);
        if (got < 0) {
            b->full = true; /* a route set we cannot hold: fail rather than misroute */
            return;
        }
        n += got;
    }
    for (int i = n - 1; i >= 0; i--) {
        PUT_LIT(b, "Route: ");
        put(b, rr[i].ptr, rr[i].len);
        PUT_LIT(b, "\r\n");
    }
}

static void dialog_headers(struct wb *b, const struct load_ids *ids, const char *method,
                           const struct slb_sip_msg *m)
{
    struct slb_slice from = header_value(m, SLB_HDR_FROM), to = header_value(m, SLB_HDR_TO);
    PUT_LIT(b, "Max-Forwards: 70\r\nFrom: ");
    put(b, from.ptr, from.len);
    PUT_LIT(b, "\r\nTo: ");
    put(b, to.ptr, to.len);
    PUT_LIT(b, "\r\nCall-ID: ");
    put(b, ids->call_id, ids->call_id_len);
    PUT_LIT(b, "\r\nCSeq: ");
    put_u(b, ids->cseq);
    put(b, " ", 1);
    put(b, method, strlen(method));
    PUT_LIT(b, "\r\n");
}

int load_sip_in_dialog(char *out, size_t cap, const struct load_cfg *cfg,
                       const struct load_ids *ids, const char *method, const struct slb_sip_msg *m)
{
    struct wb b = {out, 0, cap, false};
    struct slb_slice target = addr_uri(header_value(m, SLB_HDR_CONTACT));
    put(&b, method, strlen(method));
    put(&b, " ", 1);
    if (target.len) {
        put(&b, target.ptr, target.len);
    } else {
        /* No Contact: the remote target stays the INVITE's Request-URI (12.1.2). */
        PUT_LIT(&b, "sips:bob@");
        put(&b, cfg->hostport, strlen(cfg->hostport));
    }
    PUT_LIT(&b, " SIP/2.0\r\nVia: SIP/2.0/TLS ");
    put(&b, ids->local, ids->local_len);
    PUT_LIT(&b, ";rport;branch=");
    put(&b, ids->branch, ids->branch_len);
    PUT_LIT(&b, "\r\n");
    route_set(&b, m);
    dialog_headers(&b, ids, method, m);
    put(&b, user_agent, sizeof(user_agent) - 1);
    PUT_LIT(&b, "Content-Length: 0\r\n\r\n");
    return done(&b);
}

int load_sip_ack_error(char *out, size_t cap, const struct load_cfg *cfg,
                       const struct load_ids *ids, const struct slb_sip_msg *m)
{
    struct wb b = {out, 0, cap, false};
    start_line(&b, "ACK", "bob", 3, cfg);
    PUT_LIT(&b, "Via: SIP/2.0/TLS ");
    put(&b, ids->local, ids->local_len);
    PUT_LIT(&b, ";rport;branch=");
    put(&b, ids->branch, ids->branch_len);
    PUT_LIT(&b, "\r\n");
    dialog_headers(&b, ids, "ACK", m);
    PUT_LIT(&b, "Content-Length: 0\r\n\r\n");
    return done(&b);
}
