/* Proxy rules: our Via and its branch, the edits on forwarded requests, the check on
 * returning responses, and the responses we generate (400, 483, 503, 513...). Pure; any
 * thread. */
#include "balancer/proxy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "balancer/token.h"
#include "core/sip.h"
#include "core/sip_edit.h"

/* Whether a header value holds a NUL or a CR without its LF. */
static bool has_bad_byte(struct slb_slice v)
{
    for (size_t i = 0; i < v.len; i++)
        if (v.ptr[i] == 0 || (v.ptr[i] == '\r' && (i + 1 == v.len || v.ptr[i + 1] != '\n')))
            return true;
    return false;
}

bool slb_proxy_can_reply(const struct slb_sip_msg *msg)
{
    if (!(msg->is_request && msg->method_id != SLB_METHOD_ACK && msg->method.ptr &&
          msg->first[SLB_HDR_VIA] >= 0 && msg->first[SLB_HDR_FROM] >= 0 &&
          msg->first[SLB_HDR_TO] >= 0 && msg->call_id.ptr && msg->first[SLB_HDR_CSEQ] >= 0))
        return false;
    /* The lines our answer copies must not carry a NUL or a bare CR (whatever else made the
     * request bad): the answer would be as malformed as the request (found by fuzz_proxy). */
    for (uint32_t i = 0; i < msg->header_count; i++) {
        uint8_t id = msg->headers[i].id;
        if ((id == SLB_HDR_VIA || id == SLB_HDR_FROM || id == SLB_HDR_TO ||
             id == SLB_HDR_CALL_ID || id == SLB_HDR_CSEQ) &&
            has_bad_byte((struct slb_slice){msg->headers[i].name.ptr, msg->headers[i].line_len}))
            return false;
    }
    return true;
}

struct out {
    char *p;
    size_t len, cap;
    bool full;
};

static void put(struct out *o, const void *s, size_t n)
{
    if (n > o->cap - o->len) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Whether p points into the slice v. */
static bool holds(struct slb_slice v, const char *p)
{
    return p && p >= v.ptr && p <= v.ptr + v.len;
}

int slb_proxy_reply(char *out, size_t cap, const struct slb_sip_msg *msg, const char *base,
                    int status, const char *reason, const char *extra, const char *to_tag)
{
    struct out o = {out, 0, cap, false};
    char line[96];
    int n = snprintf(line, sizeof(line), "SIP/2.0 %03d ", status);
    put(&o, line, (size_t)n);
    puts_(&o, reason);
    puts_(&o, "\r\n");
    for (uint32_t i = 0; i < msg->header_count; i++) {
        const struct slb_sip_header *h = &msg->headers[i];
        switch (h->id) {
        case SLB_HDR_VIA:
            put(&o, base + h->line_off, h->line_len);
            break;
        case SLB_HDR_FROM:
        case SLB_HDR_CALL_ID:
        case SLB_HDR_CSEQ:
            /* One line each, the one the scanner read (the first From; the Call-ID and
             * CSeq it took, else the first CSeq: the client's own, overlarge or not, is
             * what it matches our answer with): a request that repeats one (RFC 4475
             * 3.3.8) gets an answer that does not (found by fuzz_proxy). */
            if (h->id == SLB_HDR_FROM ? (int16_t)i == msg->first[SLB_HDR_FROM]
                : h->id == SLB_HDR_CALL_ID
                    ? holds(h->value, msg->call_id.ptr)
                    : (msg->cseq_method.ptr ? holds(h->value, msg->cseq_method.ptr)
                                            : (int16_t)i == msg->first[SLB_HDR_CSEQ]))
                put(&o, base + h->line_off, h->line_len);
            break;
        case SLB_HDR_TO:
            if ((int16_t)i != msg->first[SLB_HDR_TO])
                break;
            if (msg->to_tag.ptr || !to_tag) {
                put(&o, base + h->line_off, h->line_len);
            } else {
                /* RFC 3261 8.2.6.2: a response we originate carries our To tag. */
                puts_(&o, "To: ");
                put(&o, h->value.ptr, h->value.len);
                puts_(&o, ";tag=");
                puts_(&o, to_tag);
                puts_(&o, "\r\n");
            }
            break;
        default:
            break;
        }
    }
    if (extra)
        puts_(&o, extra);
    puts_(&o, "Server: sipslb\r\nContent-Length: 0\r\n\r\n");
    return o.full ? -ENOSPC : (int)o.len;
}

void slb_proxy_self_set_keys(struct slb_proxy_self *self, const struct slb_siphash_key *keys,
                             unsigned n, uint32_t boot_id)
{
    if (n > SLB_PROXY_KEYS_MAX)
        n = SLB_PROXY_KEYS_MAX;
    self->boot_id = boot_id;
    self->n_old = n ? n - 1 : 0;
    for (unsigned i = 0; i < n; i++) {
        /* The branch key: the key's own PRF over a label and the boot id. */
        unsigned char b[10] = {'b', 'r', 'a', 'n', 'c', 'h'};
        memcpy(b + 6, &boot_id, 4);
        struct slb_siphash_key bk = {slb_siphash(&keys[i], b, sizeof(b)), 0};
        b[0] = 'B';
        bk.k1 = slb_siphash(&keys[i], b, sizeof(b));
        if (i == 0) {
            self->mac_key = keys[0];
            self->branch_key = bk;
        } else {
            self->old_keys[i - 1] = keys[i];
            self->old_branch_keys[i - 1] = bk;
        }
    }
}

/* Verification under every key in force, newest first: a rotation keeps what the keys
 * still listed signed. Old keys are tried only when the newest fails. */
static bool branch_parse(const struct slb_proxy_self *self, struct slb_slice branch,
                         uint64_t *conn_id, uint32_t *tx, uint32_t *loop)
{
    if (slb_branch_parse(branch, &self->branch_key, conn_id, tx, loop))
        return true;
    for (unsigned i = 0; i < self->n_old; i++)
        if (slb_branch_parse(branch, &self->old_branch_keys[i], conn_id, tx, loop))
            return true;
    return false;
}

static bool backend_token_parse(const struct slb_proxy_self *self, struct slb_slice tok,
                                uint32_t *backend)
{
    if (slb_backend_token_parse(tok, &self->mac_key, backend))
        return true;
    for (unsigned i = 0; i < self->n_old; i++)
        if (slb_backend_token_parse(tok, &self->old_keys[i], backend))
            return true;
    return false;
}

static bool flow_token_parse(const struct slb_proxy_self *self, struct slb_slice tok,
                             uint64_t *conn, uint32_t *boot, unsigned *flags)
{
    if (slb_flow_token_parse(tok, &self->mac_key, conn, boot, flags))
        return true;
    for (unsigned i = 0; i < self->n_old; i++)
        if (slb_flow_token_parse(tok, &self->old_keys[i], conn, boot, flags))
            return true;
    return false;
}

int slb_proxy_request_edits(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                            const struct slb_proxy_self *self, const char *ip, size_t ip_len,
                            uint16_t port, uint64_t conn_id, bool backend_side, uint64_t sent_us,
                            uint32_t *tx_out)
{
    /* RFC 3261 16.3 step 2: checked first so nothing is half done. */
    if (msg->max_forwards == 0)
        return -ELOOP;
    /* RFC 3261 16.6 step 8: our Via on top, its branch deterministic per transaction
     * (16.11). Added first so it is also the first line when Max-Forwards is inserted. */
    char via[sizeof(self->via_sent_by) + SLB_BRANCH_LEN + SLB_SENT_PARAM_LEN +
             SLB_SENT_VALUE_LEN + 32];
    size_t n = 0;
    memcpy(via, "SIP/2.0/TLS ", 12);
    n += 12;
    memcpy(via + n, self->via_sent_by, self->via_sent_by_len);
    n += self->via_sent_by_len;
    memcpy(via + n, ";branch=", 8);
    n += 8;
    uint32_t tx = slb_tx_hash(&self->mac_key, msg) & ~SLB_BRANCH_TX_BACKEND_SIDE;
    if (backend_side)
        tx |= SLB_BRANCH_TX_BACKEND_SIDE;
    if (tx_out)
        *tx_out = tx;
    slb_branch_make(via + n, &self->branch_key, conn_id, tx, slb_loop_hash(&self->mac_key, msg));
    struct slb_slice branch = {via + n, SLB_BRANCH_LEN};
    n += SLB_BRANCH_LEN;
    if (sent_us) {
        memcpy(via + n, SLB_SENT_PARAM, SLB_SENT_PARAM_LEN);
        slb_sent_make(via + n + SLB_SENT_PARAM_LEN, &self->branch_key, branch, sent_us);
        n += SLB_SENT_PARAM_LEN + SLB_SENT_VALUE_LEN;
    }
    int rc = slb_sip_edit_push_via(e, msg, via, n);
    if (rc < 0)
        return rc;
    rc = slb_sip_edit_via_received(e, msg, ip, ip_len, port);
    if (rc < 0)
        return rc;
    return slb_sip_edit_max_forwards(e, msg); /* RFC 3261 16.6 step 3 */
}

bool slb_proxy_response_target(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                               uint64_t *conn_id, uint32_t *tx_out, bool *backend_side)
{
    uint32_t tx;
    if (msg->via_count == 0 ||
        !branch_parse(self, msg->top_via.branch, conn_id, &tx, NULL))
        return false;
    *backend_side = (tx & SLB_BRANCH_TX_BACKEND_SIDE) != 0;
    if (tx_out)
        *tx_out = tx;
    return true;
}

bool slb_proxy_response_sent(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                             uint64_t *sent_us)
{
    if (msg->via_count == 0)
        return false;
    /* We write it right behind the branch: found there, or not at all (no search). */
    struct slb_slice v = msg->vias[0].value, br = msg->top_via.branch;
    const char *p = br.ptr + br.len;
    if (!br.ptr || p < v.ptr ||
        (size_t)(v.ptr + v.len - p) < SLB_SENT_PARAM_LEN + SLB_SENT_VALUE_LEN ||
        memcmp(p, SLB_SENT_PARAM, SLB_SENT_PARAM_LEN))
        return false;
    p += SLB_SENT_PARAM_LEN;
    struct slb_slice value = {p, (size_t)(v.ptr + v.len - p)};
    return slb_sent_parse(value, &self->branch_key, msg->top_via.branch, sent_us);
}

/* Our tokens in a URI's parameters. */
static void uri_tokens(struct slb_slice uri, const struct slb_proxy_self *self,
                       struct slb_route_info *ri)
{
    *ri = (struct slb_route_info){.ours = false};
    const char *semi = uri.ptr ? memchr(uri.ptr, ';', uri.len) : NULL;
    if (!semi)
        return;
    struct slb_slice params = {semi, (size_t)(uri.ptr + uri.len - semi)}, tok;
    if (slb_sip_param_find(params, "slb", &tok))
        ri->has_backend = backend_token_parse(self, tok, &ri->backend);
    if (slb_sip_param_find(params, "flow", &tok)) {
        ri->has_flow = true;
        uint32_t boot = 0;
        ri->flow_ok = flow_token_parse(self, tok, &ri->flow, &boot, &ri->flow_flags);
        ri->flow_elsewhere = ri->flow_ok && boot != self->boot_id;
    }
    ri->ours = ri->has_backend || ri->flow_ok;
    ri->count = ri->ours;
}

void slb_proxy_route_info(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                          struct slb_route_info *ri)
{
    *ri = (struct slb_route_info){.ours = false};
    int first = msg->first[SLB_HDR_ROUTE];
    if (first < 0)
        return;
    struct slb_slice v = msg->headers[first].value;
    uri_tokens(slb_sip_first_uri(v), self, ri);
    if (!ri->ours)
        return;
    /* Double Record-Route: the next value may be ours too (the other side's URI). */
    struct slb_slice second = {NULL, 0};
    size_t next = slb_sip_list_next(v);
    if (next < v.len) {
        second = (struct slb_slice){v.ptr + next, v.len - next};
    } else {
        for (uint32_t i = (uint32_t)first + 1; i < msg->header_count; i++)
            if (msg->headers[i].id == SLB_HDR_ROUTE) {
                second = msg->headers[i].value;
                break;
            }
    }
    if (second.ptr) {
        struct slb_route_info r2;
        uri_tokens(slb_sip_first_uri(second), self, &r2);
        if (r2.ours && r2.flow == ri->flow && r2.backend == ri->backend)
            ri->count = 2;
    }
}

bool slb_proxy_strict_routed(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                             struct slb_route_info *ri)
{
    struct slb_route_info r;
    uri_tokens(msg->ruri, self, &r);
    if (!r.ours)
        return false;
    *ri = r;
    return true;
}

bool slb_proxy_our_route(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                         uint32_t *backend)
{
    struct slb_route_info ri;
    slb_proxy_route_info(msg, self, &ri);
    *backend = ri.backend;
    return ri.has_backend;
}

bool slb_proxy_dialog_forming(const struct slb_sip_msg *msg)
{
    switch (msg->method_id) {
    case SLB_METHOD_INVITE:
    case SLB_METHOD_SUBSCRIBE:
    case SLB_METHOD_REFER:
    case SLB_METHOD_NOTIFY:
        return true;
    default:
        return false;
    }
}

enum side { SIDE_TLS, SIDE_TCP, SIDE_WS };

/* "<sips:ADVERTISE;lr[;slb=B][;flow=F]>", or the sip:...;transport=tcp form of the tcp://
 * side, or the ...;transport=ws form of the WebSocket side, into v; returns its length. */
static size_t our_uri(char *v, const struct slb_proxy_self *self, enum side side,
                      const uint32_t *backend, const uint64_t *client_conn, unsigned flags)
{
    size_t n = 0;
    if (side == SIDE_TCP) {
        memcpy(v, "<sip:", 5);
        n += 5;
        memcpy(v + n, self->tcp_sent_by, self->tcp_sent_by_len);
        n += self->tcp_sent_by_len;
        memcpy(v + n, ";transport=tcp", 14);
        n += 14;
    } else if (side == SIDE_WS) {
        const char *scheme = self->ws_plain ? "<sip:" : "<sips:";
        memcpy(v, scheme, strlen(scheme));
        n += strlen(scheme);
        memcpy(v + n, self->ws_sent_by, self->ws_sent_by_len);
        n += self->ws_sent_by_len;
        memcpy(v + n, ";transport=ws", 13);
        n += 13;
    } else {
        memcpy(v, "<sips:", 6);
        n += 6;
        memcpy(v + n, self->via_sent_by, self->via_sent_by_len);
        n += self->via_sent_by_len;
    }
    memcpy(v + n, ";lr", 3);
    n += 3;
    if (backend) {
        memcpy(v + n, ";slb=", 5);
        n += 5;
        slb_backend_token_make(v + n, &self->mac_key, *backend);
        n += SLB_BACKEND_TOKEN_LEN;
    }
    if (client_conn) {
        memcpy(v + n, ";flow=", 6);
        n += 6;
        slb_flow_token_make(v + n, &self->mac_key, *client_conn, self->boot_id, flags);
        n += SLB_FLOW_TOKEN_LEN;
    }
    v[n++] = '>';
    return n;
}

#define OUR_URI_MAX (sizeof(((struct slb_proxy_self *)0)->via_sent_by) + 128)

int slb_proxy_record_route(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                           const struct slb_proxy_self *self, uint32_t backend,
                           uint64_t client_conn, unsigned flow_flags, bool to_client)
{
    char v[OUR_URI_MAX];
    enum side client_side = SIDE_TLS;
    if ((flow_flags & SLB_FLOW_WS) && self->ws_sent_by_len)
        client_side = SIDE_WS;
    else if ((flow_flags & SLB_FLOW_PLAIN) && self->tcp_sent_by_len)
        client_side = SIDE_TCP;
    bool twice = client_side != SIDE_TLS;
    /* The value nearest the next hop goes on top (RFC 5658 double record-routing). */
    enum side first = twice && to_client ? client_side : SIDE_TLS;
    size_t n = our_uri(v, self, first, &backend, &client_conn, flow_flags);
    int rc = slb_sip_edit_insert_header(e, msg, SLB_HDR_RECORD_ROUTE, "Record-Route", v, n);
    if (rc < 0 || !twice)
        return rc;
    n = our_uri(v, self, first == SIDE_TLS ? client_side : SIDE_TLS, &backend, &client_conn,
                flow_flags);
    return slb_sip_edit_insert_header(e, msg, SLB_HDR_RECORD_ROUTE, "Record-Route", v, n);
}

int slb_proxy_path(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                   const struct slb_proxy_self *self, uint64_t client_conn, unsigned flow_flags)
{
    char v[OUR_URI_MAX];
    size_t n = our_uri(v, self, SIDE_TLS, NULL, &client_conn, flow_flags);
    return slb_sip_edit_insert_header(e, msg, SLB_HDR_PATH, "Path", v, n);
}
bool slb_proxy_is_loop(const struct slb_sip_msg *msg, const struct slb_proxy_self *self)
{
    uint32_t want = 0;
    bool computed = false;
    for (unsigned i = 0; i < msg->via_count; i++) {
        struct slb_slice v = msg->vias[i].value;
        /* Cheap filter first: only a Via of ours can carry our branch. */
        if (v.len < SLB_BRANCH_LEN || !memmem(v.ptr, v.len, SLB_BRANCH_PREFIX,
                                              SLB_BRANCH_PREFIX_LEN))
            continue;
        struct slb_sip_via via;
        uint64_t conn;
        uint32_t tx, loop;
        if (slb_sip_via_parse(v, &via) < 0 ||
            !branch_parse(self, via.branch, &conn, &tx, &loop))
            continue;
        if (!computed) {
            want = slb_loop_hash(&self->mac_key, msg);
            computed = true;
        }
        if (loop == want)
            return true; /* the same request came back: a loop, not a spiral */
    }
    return false;
}

/* "Unsupported: TAGS\r\n" into extra (RFC 3261 20.40), always a whole line: a value too
 * long for it keeps as many leading option tags as fit. */
static void unsupported(char *extra, size_t extra_len, struct slb_slice v)
{
    static const char name[] = "Unsupported: ";
    size_t fixed = sizeof(name) - 1 + 3; /* CRLF and NUL */
    if (extra_len < fixed + 1) {
        extra[0] = 0;
        return;
    }
    size_t n = v.len;
    if (n > extra_len - fixed) {
        n = extra_len - fixed;
        size_t cut = n;
        while (cut > 0 && v.ptr[cut] != ',')
            cut--;
        if (cut > 0)
            n = cut; /* drop the tag the cut went through */
        while (n > 0 && (v.ptr[n - 1] == ' ' || v.ptr[n - 1] == '\t'))
            n--;
    }
    snprintf(extra, extra_len, "%s%.*s\r\n", name, (int)n, v.ptr);
}

int slb_proxy_check_request(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                            bool sips_only, const char **reason, char *extra, size_t extra_len)
{
    *reason = NULL;
    extra[0] = 0;
    struct slb_slice u = msg->ruri;
    /* RFC 3261 16.3 step 1: a scheme we cannot route (sip, sips and tel are ours). */
    bool sip = u.len > 4 && !strncasecmp(u.ptr, "sip:", 4);
    bool sips = u.len > 5 && !strncasecmp(u.ptr, "sips:", 5);
    bool tel = u.len > 4 && !strncasecmp(u.ptr, "tel:", 4);
    if (!sip && !sips && !tel) {
        *reason = "Unsupported URI Scheme";
        return 416;
    }
    /* RFC 5630 3.1.3 and RFC 3261 26.2.2: SIPS required. */
    if (sips_only && !sips) {
        *reason = "Temporarily Unavailable";
        snprintf(extra, extra_len, "Warning: 381 %.*s \"SIPS Required\"\r\n",
                 (int)self->via_sent_by_len, self->via_sent_by);
        return 480;
    }
    /* RFC 3261 16.3 step 3: we support no extension a proxy must understand. */
    if (msg->first[SLB_HDR_PROXY_REQUIRE] >= 0) {
        const struct slb_sip_header *h = &msg->headers[msg->first[SLB_HDR_PROXY_REQUIRE]];
        *reason = "Bad Extension";
        unsupported(extra, extra_len, h->value);
        return 420;
    }
    /* RFC 3261 16.3 step 4 and 16.6 step 8: our own Via with the same loop hash. */
    if (slb_proxy_is_loop(msg, self)) {
        *reason = "Loop Detected";
        return 482;
    }
    return 0;
}

