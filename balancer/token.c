/* Branch tokens: connection id and transaction hash in hex, authenticated by a truncated
 * SipHash MAC under the process's random key, so a forged or corrupted branch in a
 * backend's response cannot steer it to another client's connection. Pure. */
#include "balancer/token.h"

#include <string.h>

static const char hex[] = "0123456789abcdef";

static void put_hex(char *out, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = hex[v & 15];
        v >>= 4;
    }
}

static bool get_hex(const char *in, int digits, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < digits; i++) {
        char c = in[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        x = x << 4 | d;
    }
    *v = x;
    return true;
}

static uint64_t mac(const struct slb_siphash_key *key, uint64_t conn_id, uint32_t tx,
                    uint32_t loop)
{
    unsigned char b[16];
    memcpy(b, &conn_id, 8);
    memcpy(b + 8, &tx, 4);
    memcpy(b + 12, &loop, 4);
    return slb_siphash(key, b, sizeof(b));
}

/* Feeds slices into one hash with a separator so field boundaries cannot be shifted. */
struct hash_buf {
    unsigned char b[2048];
    size_t len;
};

/* Once full, further slices are left out (the hash covers the first 2 KB of the fields,
 * plenty to tell transactions apart); the room is computed only while there is some. */
static void add(struct hash_buf *h, struct slb_slice s)
{
    if (h->len >= sizeof(h->b))
        return;
    size_t room = sizeof(h->b) - h->len - 1; /* keeps one byte for the separator */
    size_t n = s.len < room ? s.len : room;
    if (n)
        memcpy(h->b + h->len, s.ptr, n);
    h->len += n;
    h->b[h->len++] = 0;
}

uint32_t slb_tx_hash(const struct slb_siphash_key *key, const struct slb_sip_msg *msg)
{
    /* Not the To tag: the ACK for a non-2xx response carries the tag its INVITE lacked,
     * and must still get the INVITE's branch. The client's own branch in its top Via
     * already tells transactions apart. */
    struct hash_buf h = {.len = 0};
    add(&h, msg->via_count ? msg->vias[0].value : (struct slb_slice){NULL, 0});
    add(&h, msg->call_id);
    add(&h, msg->from_tag);
    unsigned char cseq[4];
    memcpy(cseq, &msg->cseq, 4);
    add(&h, (struct slb_slice){(const char *)cseq, 4});
    add(&h, msg->ruri);
    return (uint32_t)slb_siphash(key, h.b, h.len);
}

void slb_branch_make(char out[SLB_BRANCH_LEN], const struct slb_siphash_key *key,
                     uint64_t conn_id, uint32_t tx, uint32_t loop)
{
    memcpy(out, SLB_BRANCH_PREFIX, SLB_BRANCH_PREFIX_LEN);
    char *p = out + SLB_BRANCH_PREFIX_LEN;
    put_hex(p, conn_id, 16);
    put_hex(p + 16, tx, 8);
    put_hex(p + 24, loop, 8);
    put_hex(p + 32, mac(key, conn_id, tx, loop), 16);
}

/* Over the branch's own MAC (its last 16 hex digits, which already cover everything else
 * in it) and the time: a short input, on every request and every final response. */
static uint32_t sent_mac(const struct slb_siphash_key *key, struct slb_slice branch,
                         uint64_t sent_us)
{
    char b[16 + 8];
    size_t n = branch.len < 16 ? branch.len : 16;
    memcpy(b, branch.ptr + branch.len - n, n);
    sent_us &= SLB_SENT_MASK;
    memcpy(b + n, &sent_us, 8);
    return (uint32_t)slb_siphash(key, b, n + 8);
}

void slb_sent_make(char out[SLB_SENT_VALUE_LEN], const struct slb_siphash_key *key,
                   struct slb_slice branch, uint64_t sent_us)
{
    put_hex(out, sent_us & SLB_SENT_MASK, 10);
    put_hex(out + 10, sent_mac(key, branch, sent_us), 8);
}

bool slb_sent_parse(struct slb_slice value, const struct slb_siphash_key *key,
                    struct slb_slice branch, uint64_t *sent_us)
{
    uint64_t t, m;
    if (value.len < SLB_SENT_VALUE_LEN || !get_hex(value.ptr, 10, &t) ||
        !get_hex(value.ptr + 10, 8, &m) || m != sent_mac(key, branch, t))
        return false;
    *sent_us = t;
    return true;
}

bool slb_branch_parse(struct slb_slice branch, const struct slb_siphash_key *key,
                      uint64_t *conn_id, uint32_t *tx, uint32_t *loop)
{
    if (branch.len != SLB_BRANCH_LEN ||
        memcmp(branch.ptr, SLB_BRANCH_PREFIX, SLB_BRANCH_PREFIX_LEN) != 0)
        return false;
    const char *p = branch.ptr + SLB_BRANCH_PREFIX_LEN;
    uint64_t c, t, l, m;
    if (!get_hex(p, 16, &c) || !get_hex(p + 16, 8, &t) || !get_hex(p + 24, 8, &l) ||
        !get_hex(p + 32, 16, &m))
        return false;
    if (m != mac(key, c, (uint32_t)t, (uint32_t)l))
        return false;
    *conn_id = c;
    *tx = (uint32_t)t;
    if (loop)
        *loop = (uint32_t)l;
    return true;
}

uint32_t slb_loop_hash(const struct slb_siphash_key *key, const struct slb_sip_msg *msg)
{
    struct hash_buf h = {.len = 0};
    add(&h, msg->ruri);
    add(&h, msg->from_tag);
    add(&h, msg->to_tag);
    add(&h, msg->call_id);
    unsigned char cseq[4];
    memcpy(cseq, &msg->cseq, 4);
    add(&h, (struct slb_slice){(const char *)cseq, 4});
    /* The Route set too: a dialog request that passes us twice on its way (caller side,
     * then callee side) keeps its Request-URI but has fewer Route values the second time. */
    for (uint32_t i = 0; i < msg->header_count; i++)
        if (msg->headers[i].id == SLB_HDR_ROUTE)
            add(&h, msg->headers[i].value);
    return (uint32_t)slb_siphash(key, h.b, h.len);
}

static uint64_t backend_mac(const struct slb_siphash_key *key, uint32_t backend)
{
    unsigned char b[8] = {'s', 'l', 'b', 'r'};
    memcpy(b + 4, &backend, 4);
    return slb_siphash(key, b, sizeof(b));
}

void slb_backend_token_make(char out[SLB_BACKEND_TOKEN_LEN], const struct slb_siphash_key *key,
                            uint32_t backend)
{
    put_hex(out, backend, 8);
    put_hex(out + 8, backend_mac(key, backend), 16);
}

bool slb_backend_token_parse(struct slb_slice tok, const struct slb_siphash_key *key,
                             uint32_t *backend)
{
    uint64_t b, m;
    if (tok.len != SLB_BACKEND_TOKEN_LEN || !get_hex(tok.ptr, 8, &b) ||
        !get_hex(tok.ptr + 8, 16, &m) || m != backend_mac(key, (uint32_t)b))
        return false;
    *backend = (uint32_t)b;
    return true;
}

static uint64_t flow_mac(const struct slb_siphash_key *key, uint64_t conn_id, uint32_t boot_id,
                         unsigned flags)
{
    unsigned char b[17] = {'f', 'l', 'o', 'w'};
    memcpy(b + 4, &conn_id, 8);
    memcpy(b + 12, &boot_id, 4);
    b[16] = (unsigned char)flags;
    return slb_siphash(key, b, sizeof(b));
}

void slb_flow_token_make(char out[SLB_FLOW_TOKEN_LEN], const struct slb_siphash_key *key,
                         uint64_t conn_id, uint32_t boot_id, unsigned flags)
{
    put_hex(out, conn_id, 16);
    put_hex(out + 16, boot_id, 8);
    put_hex(out + 24, flags & 15u, 1);
    put_hex(out + 25, flow_mac(key, conn_id, boot_id, flags & 15u), 16);
}

bool slb_flow_token_parse(struct slb_slice tok, const struct slb_siphash_key *key,
                          uint64_t *conn_id, uint32_t *boot_id, unsigned *flags)
{
    uint64_t c, b, f, m;
    if (tok.len != SLB_FLOW_TOKEN_LEN || !get_hex(tok.ptr, 16, &c) ||
        !get_hex(tok.ptr + 16, 8, &b) || !get_hex(tok.ptr + 24, 1, &f) ||
        !get_hex(tok.ptr + 25, 16, &m) || m != flow_mac(key, c, (uint32_t)b, (unsigned)f))
        return false;
    *conn_id = c;
    if (boot_id)
        *boot_id = (uint32_t)b;
    if (flags)
        *flags = (unsigned)f;
    return true;
}
