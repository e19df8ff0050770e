/* Test harness: two in-memory TLS sessions pumped into each other. Single-threaded. */
#include "tls_pair.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

const char *cert(const char *name)
{
    static char bufs[64][512];
    static int next;
    char *b = bufs[next++ & 63];
    snprintf(b, sizeof(bufs[0]), "%s/%s", SLB_TLS_TEST_CERTS, name);
    return b;
}

struct slb_tls_server_opts server_opts(void)
{
    return (struct slb_tls_server_opts){
        .cert_file = cert("server-ec.pem"),
        .key_file = cert("server-ec.key"),
    };
}

struct slb_tls_client_opts client_opts(void)
{
    return (struct slb_tls_client_opts){
        .ca_file = cert("ca.pem"),
        .verify_server = SLB_TLS_VERIFY_REQUIRE,
    };
}

struct slb_tls_ctx *server_ctx(const struct slb_tls_server_opts *o)
{
    char err[256] = "";
    struct slb_tls_ctx *ctx = slb_tls_server_ctx_new(o, err, sizeof(err));
    cr_assert_not_null(ctx, "server ctx: %s", err);
    return ctx;
}

struct slb_tls_ctx *client_ctx(const struct slb_tls_client_opts *o)
{
    char err[256] = "";
    struct slb_tls_ctx *ctx = slb_tls_client_ctx_new(o, err, sizeof(err));
    cr_assert_not_null(ctx, "client ctx: %s", err);
    return ctx;
}

static int wire_out(void *arg, const void *data, size_t len)
{
    struct wire *w = arg;
    if (w->hard_error)
        return w->hard_error;
    if (w->refuse > 0) {
        w->refuse--;
        return -ENOBUFS;
    }
    cr_assert_leq(w->len + len, WIRE_CAP, "wire overflow");
    memcpy(w->buf + w->len, data, len);
    w->len += len;
    w->sends++;
    w->last_len = len;
    return (int)len;
}

static void end_init(struct end *e)
{
    memset(e, 0, sizeof(*e));
    e->out.buf = malloc(WIRE_CAP);
    e->plain = malloc(PLAIN_CAP);
    e->read_cap = PLAIN_CAP;
    cr_assert(e->out.buf && e->plain);
}

void pair_init(struct pair *p, struct slb_tls_ctx *sctx, struct slb_tls_ctx *cctx, const char *host)
{
    memset(p, 0, sizeof(*p));
    p->sctx = sctx;
    p->cctx = cctx;
    end_init(&p->s);
    end_init(&p->c);
    cr_assert_eq(slb_tls_conn_init(&p->s.conn, sctx, NULL, wire_out, &p->s.out), 0);
    cr_assert_eq(slb_tls_conn_init(&p->c.conn, cctx, host, wire_out, &p->c.out), 0);
}

void pair_deinit(struct pair *p)
{
    slb_tls_conn_deinit(&p->s.conn);
    slb_tls_conn_deinit(&p->c.conn);
    free(p->s.out.buf);
    free(p->s.plain);
    free(p->c.out.buf);
    free(p->c.plain);
}

static void note(struct end *e, int rc)
{
    if (rc < 0) {
        if (e->rc == 0)
            e->rc = rc;
    } else {
        e->events |= (unsigned)rc;
    }
}

/* Deliver plaintext still held inside the session while there is room. */
static void drain_more(struct end *e, int rc)
{
    for (int guard = 0; rc >= 0 && (rc & SLB_TLS_EV_MORE) && guard < 100000; guard++) {
        size_t room = PLAIN_CAP - e->plain_len;
        if (room > e->read_cap)
            room = e->read_cap;
        if (room == 0)
            return;
        size_t got = 0;
        rc = slb_tls_read(&e->conn, e->plain + e->plain_len, room, &got);
        e->plain_len += got;
        note(e, rc);
    }
}

void end_feed(struct pair *p, struct end *e, const void *data, size_t len)
{
    const uint8_t *d = data;
    size_t step = p->chunk ? p->chunk : len;
    size_t off = 0;
    do {
        size_t n = len - off < step ? len - off : step;
        size_t room = PLAIN_CAP - e->plain_len;
        if (room > e->read_cap)
            room = e->read_cap;
        size_t got = 0;
        int rc = slb_tls_feed(&e->conn, d + off, n, e->plain + e->plain_len, room, &got);
        e->plain_len += got;
        note(e, rc);
        drain_more(e, rc);
        off += n;
    } while (off < len);
}

/* Move what `from` sent into `to`. Returns bytes moved. */
static size_t move(struct pair *p, struct end *from, struct end *to)
{
    size_t n = from->out.len;
    if (n == 0)
        return 0;
    uint8_t *copy = malloc(n);
    cr_assert_not_null(copy);
    memcpy(copy, from->out.buf, n);
    from->out.len = 0;
    end_feed(p, to, copy, n);
    free(copy);
    return n;
}

void pair_pump(struct pair *p)
{
    for (int round = 0; round < 1000; round++) {
        size_t moved = move(p, &p->c, &p->s);
        moved += move(p, &p->s, &p->c);
        if (moved == 0)
            return;
    }
    cr_assert_fail("pump did not settle");
}

bool pair_handshake(struct pair *p)
{
    note(&p->c, slb_tls_start(&p->c.conn));
    pair_pump(p);
    return slb_tls_handshake_done(&p->s.conn) && slb_tls_handshake_done(&p->c.conn);
}
