/* Connection tests on real rings: ids and slot reuse, output capacity and on_drained,
 * receive backpressure. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define START_OR_SKIP(s)                                                                           \
    do {                                                                                           \
        int rc_ = h_srv_start(s);                                                                  \
        if (h_refused(rc_))                                                                        \
            cr_skip_test("kernel refused io_uring setup: %s", strerror(-rc_));                     \
        cr_assert_eq(rc_, 0, "loop start: %s", strerror(-rc_));                                    \
    } while (0)

static struct h_srv g_srv;

/* ---- ids ---------------------------------------------------------------------------- */

struct id_ctx {
    struct slb_conn_id first;
    int checks_failed;
    atomic_int checked;
};

static int id_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    struct h_srv *s = slb_loop_user(loop);
    struct id_ctx *cx = s->ctx;
    int n = atomic_load(&s->n_accept);
    h_log_accept(loop, conn);
    if (slb_conn_get(loop, conn->id) != conn)
        cx->checks_failed++;
    if (slb_conn_id_loop(conn->id) != slb_loop_id(loop))
        cx->checks_failed++;
    /* Same slot and generation, other loop: not ours. */
    struct slb_conn_id other = slb_conn_id_make(slb_loop_id(loop) + 1, slb_conn_id_slot(conn->id),
                                                slb_conn_id_gen(conn->id));
    if (slb_conn_get(loop, other) != NULL)
        cx->checks_failed++;
    if (n == 0) {
        cx->first = conn->id;
        return 0;
    }
    /* The only slot was reused: the old id must not resolve to the new connection. */
    if (slb_conn_id_slot(conn->id) != slb_conn_id_slot(cx->first))
        cx->checks_failed++;
    if (slb_conn_id_gen(conn->id) == slb_conn_id_gen(cx->first))
        cx->checks_failed++;
    if (slb_conn_get(loop, cx->first) != NULL)
        cx->checks_failed++;
    atomic_store(&cx->checked, 1);
    return 0;
}

static void id_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    h_log_close(loop, conn, reason);
}

Test(conn, stale_id_resolves_to_null_after_close_and_slot_reuse, .timeout = 10)
{
    static struct id_ctx cx;
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_accept = id_accept;
    g_srv.cbs.on_close = id_close;
    g_srv.opts.max_conns = 1;
    g_srv.opts.loop_id = 3;
    g_srv.ctx = &cx;
    START_OR_SKIP(&g_srv);
    int fd = h_connect(g_srv.port);
    cr_assert(h_wait_atomic(&g_srv.n_accept, 1, 3000));
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    fd = h_connect(g_srv.port);
    cr_assert(h_wait_atomic(&cx.checked, 1, 3000));
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 2, 3000));
    h_srv_stop(&g_srv);
    cr_assert_eq(cx.checks_failed, 0);
    cr_assert_eq(slb_conn_id_loop(cx.first), 3);
    cr_assert_neq(cx.first.v, 0);
    cr_assert_eq(g_srv.loop.counters.accept_rejected_full, 0);
}

/* ---- output capacity ------------------------------------------------------------------ */

struct cap_ctx {
    int written;  /* accepted writes of 1000 bytes */
    int refused;  /* -ENOBUFS seen */
    int emsgsize; /* a write above capacity said -EMSGSIZE */
    size_t space_after;
};

static unsigned char g_piece[1000];

static int cap_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    struct h_srv *s = slb_loop_user(loop);
    struct cap_ctx *cx = s->ctx;
    h_log_accept(loop, conn);
    for (int i = 0; i < 20; i++) {
        int rc = slb_conn_write(conn, g_piece, sizeof(g_piece));
        if (rc == -ENOBUFS) {
            cx->refused++;
            break;
        }
        if (rc != (int)sizeof(g_piece))
            return -EPROTO;
        cx->written++;
    }
    cx->space_after = slb_conn_out_space(conn);
    static unsigned char too_big[9000];
    cx->emsgsize = slb_conn_write(conn, too_big, sizeof(too_big)) == -EMSGSIZE;
    return 0;
}

static void cap_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    struct h_srv *s = slb_loop_user(loop);
    atomic_fetch_add(&s->n_drained, 1);
    slb_conn_write(conn, "END", 3);
    slb_conn_close(conn, true);
}

Test(conn, output_capacity_refuses_with_enobufs_and_on_drained_follows, .timeout = 10)
{
    static struct cap_ctx cx;
    for (size_t i = 0; i < sizeof(g_piece); i++)
        g_piece[i] = (unsigned char)i;
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_accept = cap_accept;
    g_srv.cbs.on_drained = cap_drained;
    g_srv.opts.out_cap_bytes = 8192;
    g_srv.opts.out_chunk_bytes = 1024;
    g_srv.opts.out_low_bytes = 2048;
    g_srv.ctx = &cx;
    START_OR_SKIP(&g_srv);
    int fd = h_connect(g_srv.port);
    cr_assert_geq(fd, 0);
    static unsigned char buf[8003];
    cr_assert_eq(h_read_n(fd, buf, sizeof(buf)), sizeof(buf));
    for (int i = 0; i < 8; i++)
        cr_assert_eq(memcmp(buf + i * 1000, g_piece, 1000), 0);
    cr_assert_eq(memcmp(buf + 8000, "END", 3), 0);
    cr_assert(h_read_eof(fd));
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    cr_assert_eq(cx.written, 8);
    cr_assert_eq(cx.refused, 1);
    cr_assert_eq(cx.space_after, 192);
    cr_assert(cx.emsgsize);
    cr_assert_eq(atomic_load(&g_srv.n_drained), 1);
    cr_assert_geq(g_srv.loop.counters.out_full, 1);
    cr_assert_eq(g_srv.close_reasons[0], 0);
}

/* ---- pause / resume ----------------------------------------------------------------- */

struct pr_ctx {
    struct slb_loop *loop;
    struct slb_conn_id id;
    struct slb_timer resume;
    size_t offset; /* next expected stream byte */
    int pauses;
    int while_paused; /* deliveries that arrived after pause (in flight) */
    int bad_bytes;
};

static void pr_resume(struct slb_timer *t)
{
    struct pr_ctx *cx = slb_timer_entry(t, struct pr_ctx, resume);
    struct slb_conn *c = slb_conn_get(cx->loop, cx->id);
    if (c)
        slb_conn_resume_recv(c);
}

static int pr_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    struct h_srv *s = slb_loop_user(loop);
    struct pr_ctx *cx = s->ctx;
    h_log_accept(loop, conn);
    cx->loop = loop;
    cx->id = conn->id;
    slb_timer_init(&cx->resume, pr_resume);
    return 0;
}

static int pr_data(struct slb_loop *loop, struct slb_conn *conn, const void *d, size_t n)
{
    struct h_srv *s = slb_loop_user(loop);
    struct pr_ctx *cx = s->ctx;
    const unsigned char *p = d;
    for (size_t i = 0; i < n; i++)
        if (p[i] != h_pat(cx->offset + i))
            cx->bad_bytes++;
    cx->offset += n;
    if (slb_conn_recv_paused(conn)) {
        cx->while_paused++;
    } else {
        slb_conn_pause_recv(conn);
        cx->pauses++;
        slb_timer_arm(slb_loop_wheel(loop), &cx->resume, 1);
    }
    atomic_fetch_add(&s->n_data_bytes, (long long)n);
    return 0;
}

Test(conn, pause_and_resume_lose_no_bytes, .timeout = 15)
{
    enum { TOTAL = 512 * 1024 };
    static struct pr_ctx cx;
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_accept = pr_accept;
    g_srv.cbs.on_data = pr_data;
    g_srv.opts.recv_bufs = 8;
    g_srv.opts.recv_buf_bytes = 2048;
    g_srv.ctx = &cx;
    START_OR_SKIP(&g_srv);
    int fd = h_connect(g_srv.port);
    cr_assert_geq(fd, 0);
    static unsigned char out[TOTAL];
    for (size_t i = 0; i < TOTAL; i++)
        out[i] = h_pat(i);
    cr_assert(h_write_all(fd, out, TOTAL));
    for (int i = 0; i < 8000 && atomic_load(&g_srv.n_data_bytes) < TOTAL; i++)
        usleep(1000);
    cr_assert_eq(atomic_load(&g_srv.n_data_bytes), TOTAL);
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    cr_assert_eq(cx.bad_bytes, 0);
    cr_assert_eq(cx.offset, TOTAL);
    cr_assert_gt(cx.pauses, 10);
    cr_log_info("%d pauses, %d deliveries after a pause", cx.pauses, cx.while_paused);
}
