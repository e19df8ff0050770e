/* The slice editor: builds an outgoing SIP message as an iovec list over the original
 * bytes plus small inserted pieces, and the proxy's standard edits on top of it
 * (RFC 3261 16.6, 16.7, 18.2.1; RFC 3581; RFC 3327).
 *
 * Invariants: ops stay sorted by offset and no op starts inside another's deleted range,
 * so walking them once yields the output; inserted text lives in the edit's scratch; a
 * failed call leaves the edit unchanged. Pure; any thread. */
#include "core/sip_edit.h"

#include "core/sip.h"

#include <errno.h>
#include <string.h>

void slb_sip_edit_init(struct slb_sip_edit *e, const char *msg, size_t len)
{
    e->base = msg;
    e->len = (uint32_t)len;
    e->n_ops = 0;
    e->scratch_used = 0;
}

static bool overlaps(const struct slb_sip_edit_op *op, size_t off, size_t del)
{
    size_t o_end = (size_t)op->off + op->del;
    if (off > op->off && off < o_end)
        return true; /* starts inside op's deleted range */
    if (del > 0 && op->off > off && op->off < off + del)
        return true; /* op starts inside ours */
    if (del > 0 && op->del > 0 && op->off == off)
        return true;
    return false;
}

int slb_sip_edit_splice(struct slb_sip_edit *e, size_t off, size_t del, const void *ins,
                        size_t ins_len)
{
    if (off > e->len || del > e->len - off)
        return -EINVAL;
    if (e->n_ops == SLB_SIP_EDIT_MAX_OPS || ins_len > SLB_SIP_EDIT_SCRATCH - e->scratch_used)
        return -ENOSPC;
    size_t at = e->n_ops;
    for (size_t i = 0; i < e->n_ops; i++) {
        if (overlaps(&e->ops[i], off, del))
            return -EINVAL;
        if (at == e->n_ops && e->ops[i].off > off)
            at = i;
    }
    memmove(&e->ops[at + 1], &e->ops[at], (e->n_ops - at) * sizeof(e->ops[0]));
    e->ops[at] = (struct slb_sip_edit_op){
        .off = (uint32_t)off,
        .del = (uint32_t)del,
        .ins_off = e->scratch_used,
        .ins_len = (uint16_t)ins_len,
    };
    if (ins_len)
        memcpy(e->scratch + e->scratch_used, ins, ins_len);
    e->scratch_used = (uint16_t)(e->scratch_used + ins_len);
    e->n_ops++;
    return 0;
}

int slb_sip_edit_iov(const struct slb_sip_edit *e, struct iovec *iov, int max)
{
    int n = 0;
    size_t pos = 0;
#define EMIT(p, l)                                                                         \
    do {                                                                                   \
        if ((l) > 0) {                                                                     \
            if (n == max)                                                                  \
                return -ENOSPC;                                                            \
            iov[n++] = (struct iovec){(void *)(p), (l)};                                   \
        }                                                                                  \
    } while (0)
    for (size_t i = 0; i < e->n_ops; i++) {
        const struct slb_sip_edit_op *op = &e->ops[i];
        if (op->off > pos)
            EMIT(e->base + pos, op->off - pos);
        EMIT(e->scratch + op->ins_off, (size_t)op->ins_len);
        if ((size_t)op->off + op->del > pos)
            pos = (size_t)op->off + op->del;
    }
    EMIT(e->base + pos, e->len - pos);
#undef EMIT
    return n;
}

size_t slb_sip_edit_len(const struct slb_sip_edit *e)
{
    size_t len = e->len;
    for (size_t i = 0; i < e->n_ops; i++)
        len = len - e->ops[i].del + e->ops[i].ins_len;
    return len;
}

int slb_sip_edit_flatten(const struct slb_sip_edit *e, char *out, size_t cap)
{
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    int n = slb_sip_edit_iov(e, iov, (int)SLB_SIP_EDIT_MAX_IOV);
    if (n < 0)
        return n;
    size_t len = slb_sip_edit_len(e);
    if (len > cap || len > INT32_MAX)
        return -ENOSPC;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        memcpy(out + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    return (int)len;
}

/* A small builder for inserted text, on the stack of the edit functions. */
struct text {
    char buf[512];
    size_t len;
    bool overflow;
};

static void put(struct text *t, const void *p, size_t n)
{
    if (n > sizeof(t->buf) - t->len) {
        t->overflow = true;
        return;
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
}

static void put_str(struct text *t, const char *s)
{
    put(t, s, strlen(s));
}

static void put_uint(struct text *t, uint32_t v)
{
    char d[10];
    size_t n = 0;
    do {
        d[sizeof(d) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(t, d + sizeof(d) - n, n);
}

static size_t off_of(const struct slb_sip_edit *e, const char *p)
{
    return (size_t)(p - e->base);
}

static int splice_text(struct slb_sip_edit *e, size_t off, size_t del, const struct text *t)
{
    return t->overflow ? -ENOSPC : slb_sip_edit_splice(e, off, del, t->buf, t->len);
}

/* Where new header lines go when they must come first: the first header line. */
static size_t headers_top(const struct slb_sip_msg *msg)
{
    return msg->header_count ? msg->headers[0].line_off : msg->header_len;
}

int slb_sip_edit_push_via(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                          const char *value, size_t value_len)
{
    struct text t = {.len = 0};
    put_str(&t, "Via: ");
    put(&t, value, value_len);
    put_str(&t, "\r\n");
    return splice_text(e, headers_top(msg), 0, &t);
}

int slb_sip_edit_pop_via(struct slb_sip_edit *e, const struct slb_sip_msg *msg)
{
    if (msg->via_count == 0)
        return -ENOENT;
    const struct slb_sip_via_ref *top = &msg->vias[0];
    if (msg->via_count > 1 && msg->vias[1].header == top->header) {
        /* "Via: ours, theirs": drop "ours, " up to where the next value starts. */
        size_t from = off_of(e, top->value.ptr);
        return slb_sip_edit_splice(e, from, off_of(e, msg->vias[1].value.ptr) - from, NULL, 0);
    }
    const struct slb_sip_header *h = &msg->headers[top->header];
    return slb_sip_edit_splice(e, h->line_off, h->line_len, NULL, 0);
}

int slb_sip_edit_pop_list_value(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                                uint32_t header)
{
    if (header >= msg->header_count)
        return -ENOENT;
    const struct slb_sip_header *h = &msg->headers[header];
    size_t next = slb_sip_list_next(h->value);
    if (next >= h->value.len)
        return slb_sip_edit_splice(e, h->line_off, h->line_len, NULL, 0);
    return slb_sip_edit_splice(e, off_of(e, h->value.ptr), next, NULL, 0);
}

int slb_sip_edit_pop_list_values(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                                 enum slb_sip_hdr_id id, unsigned count)
{
    for (uint32_t i = 0; i < msg->header_count && count > 0; i++) {
        const struct slb_sip_header *h = &msg->headers[i];
        if (h->id != id)
            continue;
        /* Skip `count` elements of this line, or all of them. */
        size_t at = 0;
        unsigned taken = 0;
        while (taken < count && at < h->value.len) {
            at += slb_sip_list_next((struct slb_slice){h->value.ptr + at, h->value.len - at});
            taken++;
        }
        int rc = at >= h->value.len
                     ? slb_sip_edit_splice(e, h->line_off, h->line_len, NULL, 0)
                     : slb_sip_edit_splice(e, off_of(e, h->value.ptr), at, NULL, 0);
        if (rc < 0)
            return rc;
        count -= taken;
    }
    return 0;
}

int slb_sip_edit_strict_route(struct slb_sip_edit *e, const struct slb_sip_msg *msg)
{
    int last = -1;
    for (uint32_t i = 0; i < msg->header_count; i++)
        if (msg->headers[i].id == SLB_HDR_ROUTE)
            last = (int)i;
    if (last < 0 || !msg->ruri.ptr)
        return -ENOENT;
    const struct slb_sip_header *h = &msg->headers[last];
    /* The last element of the last Route line. */
    size_t start = 0, prev_end = 0;
    for (;;) {
        struct slb_slice rest = {h->value.ptr + start, h->value.len - start};
        size_t next = slb_sip_list_next(rest);
        if (next >= rest.len)
            break;
        prev_end = start + next;
        start += next;
    }
    struct slb_slice elem = {h->value.ptr + start, h->value.len - start};
    struct slb_slice uri = slb_sip_first_uri(elem);
    if (!uri.ptr || uri.len == 0)
        return -EINVAL;
    /* Both splices must land: keep a copy of the op table to roll back. */
    struct slb_sip_edit_op saved[SLB_SIP_EDIT_MAX_OPS];
    uint16_t n_ops = e->n_ops, scratch_used = e->scratch_used;
    memcpy(saved, e->ops, n_ops * sizeof(saved[0]));
    int rc = slb_sip_edit_splice(e, off_of(e, msg->ruri.ptr), msg->ruri.len, uri.ptr, uri.len);
    if (rc == 0) {
        if (start == 0) {
            rc = slb_sip_edit_splice(e, h->line_off, h->line_len, NULL, 0);
        } else {
            /* From the comma that ends the element before it to the end of the value. */
            const char *p = h->value.ptr + prev_end;
            while (p > h->value.ptr && p[-1] != ',')
                p--;
            if (p > h->value.ptr)
                p--;
            size_t from = off_of(e, p);
            rc = slb_sip_edit_splice(e, from, off_of(e, h->value.ptr + h->value.len) - from,
                                     NULL, 0);
        }
    }
    if (rc < 0) {
        memcpy(e->ops, saved, n_ops * sizeof(saved[0]));
        e->n_ops = n_ops;
        e->scratch_used = scratch_used;
    }
    return rc;
}

int slb_sip_edit_max_forwards(struct slb_sip_edit *e, const struct slb_sip_msg *msg)
{
    if (msg->max_forwards < 0) {
        static const char line[] = "Max-Forwards: 70\r\n";
        return slb_sip_edit_splice(e, headers_top(msg), 0, line, sizeof(line) - 1);
    }
    if (msg->max_forwards == 0)
        return -ELOOP;
    const struct slb_sip_header *h = &msg->headers[msg->first[SLB_HDR_MAX_FORWARDS]];
    struct text t = {.len = 0};
    put_uint(&t, (uint32_t)msg->max_forwards - 1);
    return splice_text(e, off_of(e, h->value.ptr), h->value.len, &t);
}

int slb_sip_edit_via_received(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                              const char *ip, size_t ip_len, uint16_t port)
{
    if (msg->via_count == 0)
        return -ENOENT;
    const struct slb_sip_via *via = &msg->top_via;
    size_t value_end = off_of(e, msg->vias[0].value.ptr) + msg->vias[0].value.len;
    /* Two splices that must land together: keep a copy of the op table to roll back. */
    struct slb_sip_edit_op saved[SLB_SIP_EDIT_MAX_OPS];
    uint16_t n_ops = e->n_ops, scratch_used = e->scratch_used;
    memcpy(saved, e->ops, n_ops * sizeof(saved[0]));
    /* rport first: a valueless rport at the very end takes its "=PORT" at the same offset
     * where ";received=" may go, and inserts at one offset keep their order. */
    struct text t = {.len = 0};
    size_t at = value_end, del = 0;
    if (via->has_rport) {
        at = off_of(e, via->rport.ptr);
        del = via->rport.len;
        if (del == 0)
            put_str(&t, "=");
    } else {
        put_str(&t, ";rport=");
    }
    put_uint(&t, port);
    int rc = splice_text(e, at, del, &t);
    if (rc < 0)
        return rc;
    t.len = 0;
    at = value_end;
    del = 0;
    if (via->received.ptr) {
        at = off_of(e, via->received.ptr);
        del = via->received.len;
    } else {
        put_str(&t, ";received=");
    }
    put(&t, ip, ip_len);
    rc = splice_text(e, at, del, &t);
    if (rc < 0) {
        memcpy(e->ops, saved, n_ops * sizeof(saved[0]));
        e->n_ops = n_ops;
        e->scratch_used = scratch_used;
    }
    return rc;
}

int slb_sip_edit_insert_header(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                               enum slb_sip_hdr_id before_id, const char *name,
                               const char *value, size_t value_len)
{
    size_t at = headers_top(msg);
    if (before_id < SLB_HDR__COUNT && msg->first[before_id] >= 0)
        at = msg->headers[msg->first[before_id]].line_off;
    struct text t = {.len = 0};
    put_str(&t, name);
    put_str(&t, ": ");
    put(&t, value, value_len);
    put_str(&t, "\r\n");
    return splice_text(e, at, 0, &t);
}
