/* libFuzzer target: the worker's input path as far as it is shared code. Two connections
 * share one core/inbuf pool (so an overflow of one buffer lands in the other's, and ASan
 * or the oracle sees it) and receive SIP byte streams the way the worker does: reads that
 * fill slb_inbuf_dst (TLS decryptions), bytes handed over directly (plain TCP), bytes that
 * arrive while the connection is paused (appended), and framing with the real
 * slb_sip_frame that may stop after any frame (a park) and resume later.
 *
 * Input: two bytes of stream length split, the two streams, then the script: each byte
 * an operation on connection (op & 1) with an amount from the next byte.
 *
 * Oracle: for each connection, the bytes framed so far followed by its pending bytes are
 * exactly the bytes delivered so far (nothing lost, duplicated, reordered or mixed with
 * the other connection's), and nothing valid is refused for room. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/inbuf.h"
#include "core/sip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MSG   2048u
#define RECORD    512u /* a "TLS record" in this model */
#define BUF_BYTES (MAX_MSG + 2 * RECORD)
#define RECV_BYTES 1024u /* io/'s receive buffer in this model, below BUF_BYTES as there */

struct conn {
    struct slb_inbuf in;
    const uint8_t *stream;
    size_t stream_len;
    size_t delivered; /* stream bytes handed to the input path */
    size_t framed;    /* stream bytes consumed by framing */
    bool parked;      /* stops framing until resumed */
    bool dead;        /* closed for bad input (framing fatal): no more checks */
    struct slb_sip_frame fr;
};

static struct slb_sip_limits lim;
static struct slb_sip_msg msg;
static struct slb_sip_header hdrs[SLB_SIP_MAX_HEADERS_DEFAULT];

/* Frames buf[0, len) until it needs more, a fatal error, or `budget` frames (then the
 * connection parks, as the worker does when a backend link is full). Returns bytes used. */
static size_t consume(struct conn *c, const char *buf, size_t len, unsigned budget)
{
    size_t at = 0;
    while (at < len && !c->parked) {
        slb_sip_frame(buf + at, len - at, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &c->fr);
        if (c->fr.kind == SLB_FRAME_NEED_MORE)
            break;
        if (c->fr.kind == SLB_FRAME_FATAL) {
            c->dead = true;
            return at;
        }
        if (budget-- == 0) {
            c->parked = true; /* this frame stays unconsumed */
            break;
        }
        at += c->fr.frame_len;
        c->fr = (struct slb_sip_frame){0};
    }
    return at;
}

static void check(const struct conn *c)
{
    if (c->dead)
        return;
    if (c->in.len > BUF_BYTES || (c->in.len == 0) != (c->in.pending == NULL))
        abort();
    if (c->framed + c->in.len != c->delivered)
        abort();
    if (c->in.len && memcmp(c->in.pending, c->stream + c->framed, c->in.len))
        abort();
}

static void keep(struct slb_inbuf_pool *pool, struct conn *c, const char *buf, size_t used,
                 size_t len)
{
    c->framed += used;
    int rc = slb_inbuf_keep(pool, &c->in, buf, used, len);
    if (rc == -EMSGSIZE)
        abort(); /* the rest of one read must always fit */
    if (rc < 0)
        c->dead = true; /* no buffer free: the worker closes; the pool has one per conn */
}

/* A read into the input path: a "decryption" of up to n bytes at slb_inbuf_dst. */
static void read_op(struct slb_inbuf_pool *pool, struct conn *c, size_t n, unsigned budget)
{
    size_t cap;
    char *dst = slb_inbuf_dst(pool, &c->in, &cap);
    size_t left = c->stream_len - c->delivered;
    n = n < cap ? n : cap;
    n = n < left ? n : left;
    memcpy(dst, c->stream + c->delivered, n);
    c->delivered += n;
    size_t total;
    const char *buf = slb_inbuf_filled(pool, &c->in, n, &total);
    if (c->parked) {
        /* Bytes of a paused connection only wait. */
        if (buf != c->in.pending)
            keep(pool, c, buf, 0, total);
        return;
    }
    keep(pool, c, buf, consume(c, buf, total, budget), total);
}

/* Bytes handed over directly (plain TCP), or while paused: behind what waits. They come
 * from one io/ receive buffer, which is smaller than a pending buffer (16 KiB against at
 * least a message and two records): what framing leaves of them always fits one. */
static void plain_op(struct slb_inbuf_pool *pool, struct conn *c, size_t n, unsigned budget)
{
    size_t left = c->stream_len - c->delivered;
    n = n < RECV_BYTES ? n : RECV_BYTES;
    n = n < left ? n : left;
    const char *data = (const char *)c->stream + c->delivered;
    if (c->in.pending || c->parked) {
        if (n > slb_inbuf_room(pool, &c->in))
            n = slb_inbuf_room(pool, &c->in); /* the worker closes a client past this */
        if (slb_inbuf_append(pool, &c->in, data, n) < 0)
            abort();
        c->delivered += n;
        if (c->parked)
            return;
        const char *buf = c->in.pending;
        size_t len = c->in.len;
        keep(pool, c, buf, consume(c, buf, len, budget), len);
        return;
    }
    c->delivered += n;
    keep(pool, c, data, consume(c, data, n, budget), n);
}

static void resume_op(struct slb_inbuf_pool *pool, struct conn *c, unsigned budget)
{
    c->parked = false;
    if (!c->in.pending)
        return;
    const char *buf = c->in.pending;
    size_t len = c->in.len;
    keep(pool, c, buf, consume(c, buf, len, budget), len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    static bool init;
    if (!init) {
        slb_sip_limits_default(&lim);
        lim.max_msg_bytes = MAX_MSG;
        init = true;
    }
    size_t split = ((size_t)data[0] << 8 | data[1]) % (size - 2 + 1);
    size_t script_at = split + (size - 2 - split) / 2;
    struct conn c[2] = {{.stream = data + 2, .stream_len = split},
                        {.stream = data + 2 + split, .stream_len = script_at - split}};
    const uint8_t *script = data + 2 + script_at;
    size_t script_len = size - 2 - script_at;
    struct slb_inbuf_pool pool;
    if (slb_inbuf_pool_init(&pool, 2, BUF_BYTES) < 0)
        return 0;
    for (size_t i = 0; i + 1 < script_len; i += 2) {
        struct conn *x = &c[script[i] & 1];
        if (x->dead)
            continue;
        size_t amount = (size_t)script[i + 1] * 16 + 1;
        unsigned budget = script[i + 1] & 3;
        switch ((script[i] >> 1) & 3) {
        case 0:
        case 1:
            read_op(&pool, x, amount, budget + 1);
            break;
        case 2:
            plain_op(&pool, x, amount, budget + 1);
            break;
        case 3:
            resume_op(&pool, x, budget + 1);
            break;
        }
        check(&c[0]);
        check(&c[1]);
    }
    slb_inbuf_release(&pool, &c[0].in);
    slb_inbuf_release(&pool, &c[1].in);
    slb_inbuf_pool_deinit(&pool);
    return 0;
}
