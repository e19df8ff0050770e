/* Loop tests on real rings over loopback: echo, streaming, listeners, connect, close
 * reasons, stop. Each test bounds its waits to a few seconds. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define START_OR_SKIP(s)                                                                           \
    do {                                                                                           \
        int rc_ = h_srv_start(s);                                                                  \
        if (h_refused(rc_))                                                                        \
            cr_skip_test("kernel refused io_uring setup: %s", strerror(-rc_));                     \
        cr_assert_eq(rc_, 0, "loop start: %s", strerror(-rc_));                                    \
    } while (0)

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct h_srv g_srv;

static void echo_roundtrip(struct h_srv *s)
{
    int fd = h_connect(s->port);
    cr_assert_geq(fd, 0);
    cr_assert(h_write_all(fd, "hello", 5));
    char buf[5];
    cr_assert_eq(h_read_n(fd, buf, 5), 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    close(fd);
}

Test(loop, echo_roundtrip_on_preferred_ring_flags, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    START_OR_SKIP(&g_srv);
    echo_roundtrip(&g_srv);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    if (!slb_loop_deferred(&g_srv.loop))
        cr_log_warn("kernel refused DEFER_TASKRUN; running with flags %#x",
                    slb_loop_setup_flags(&g_srv.loop));
    cr_assert_eq(g_srv.loop.counters.accepted, 1);
    cr_assert_eq(g_srv.loop.counters.recv_bytes, 5);
    cr_assert_eq(g_srv.loop.counters.sent_bytes, 5);
    cr_assert_eq(g_srv.close_reasons[0], 0, "peer EOF closes with reason 0");
}

Test(loop, echo_roundtrip_on_plain_ring_flags, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    g_srv.opts.plain_setup = true;
    START_OR_SKIP(&g_srv);
    echo_roundtrip(&g_srv);
    h_srv_stop(&g_srv);
    cr_assert(!slb_loop_deferred(&g_srv.loop));
    cr_assert_eq(g_srv.loop.counters.accepted, 1);
}

/* Streams `total` bytes through an echo server on fd and checks every byte comes back.
 * stall_first: read nothing until the writes have been stuck for 200 ms (by then the
 * echo's socket toward us is full), then drain. */
static void stream_on(int fd, size_t total, bool stall_first)
{
    unsigned char *out = malloc(total), *in = malloc(total);
    cr_assert(out && in);
    for (size_t i = 0; i < total; i++)
        out[i] = h_pat(i);
    size_t sent = 0, got = 0;
    bool reading = !stall_first;
    uint64_t deadline = mono_ms() + 8000;
    while (got < total && mono_ms() < deadline) {
        short ev = (short)((reading ? POLLIN : 0) | (sent < total ? POLLOUT : 0));
        struct pollfd p = {.fd = fd, .events = ev};
        int n = poll(&p, 1, stall_first ? 200 : 100);
        if (n == 0 && !reading)
            reading = true;
        if (n <= 0)
            continue;
        if ((p.revents & POLLOUT) && sent < total) {
            size_t len = total - sent < 65536 ? total - sent : 65536;
            ssize_t w = send(fd, out + sent, len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
        }
        if (reading && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = recv(fd, in + got, total - got, MSG_DONTWAIT);
            if (r == 0)
                break;
            if (r > 0)
                got += (size_t)r;
        }
    }
    cr_assert(reading, "the writes never stalled");
    cr_assert_eq(got, total, "echoed %zu of %zu bytes", got, total);
    cr_assert_eq(memcmp(in, out, total), 0, "echoed bytes differ");
    close(fd);
    free(out);
    free(in);
}

static void stream_through(uint16_t port, size_t total)
{
    int fd = h_connect(port);
    cr_assert_geq(fd, 0);
    stream_on(fd, total, false);
}

/* An echo with a 4-buffer ring and a small queue, so it has to pause; it pauses while less
 * than two buffer rings' worth of room is left: what is in flight after a pause fits. */
static void tiny_echo(struct h_srv *s)
{
    h_echo_cbs(&s->cbs);
    s->opts.recv_bufs = 4;
    s->opts.recv_buf_bytes = 1024;
    s->opts.out_cap_bytes = 16384;
    s->opts.out_chunk_bytes = 2048;
    s->pause_below = 8192;
}

Test(loop, streams_one_megabyte_intact_through_a_tiny_buffer_ring, .timeout = 20)
{
    tiny_echo(&g_srv);
    START_OR_SKIP(&g_srv);
    stream_through(g_srv.port, 1 << 20);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    const struct slb_loop_counters *k = slb_loop_counters(&g_srv.loop);
    cr_assert_eq(g_srv.data_errors, 0);
    cr_assert_eq(k->recv_bytes, 1 << 20);
    cr_assert_eq(k->sent_bytes, 1 << 20);
    cr_assert_gt(k->enobufs_rearms, 0, "a 4-buffer ring must run dry under 1 MB");
    cr_log_info("1 MB: %lu sends, %lu ENOBUFS re-arms, %d drained", (unsigned long)k->sends,
                (unsigned long)k->enobufs_rearms, atomic_load(&g_srv.n_drained));
}

/* A client with a tiny receive buffer that reads nothing until its writes stall. */
static void stream_to_a_stalled_reader(uint16_t port, size_t total)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    stream_on(fd, total, true);
}

Test(loop, a_stalled_reader_fills_the_socket_and_loses_no_byte, .timeout = 20)
{
    tiny_echo(&g_srv);
    START_OR_SKIP(&g_srv);
    stream_to_a_stalled_reader(g_srv.port, 2 << 20);
    h_srv_stop(&g_srv);
    const struct slb_loop_counters *k = slb_loop_counters(&g_srv.loop);
    cr_log_info("2 MB to a stalled reader: %lu sends, %d drained", (unsigned long)k->sends,
                atomic_load(&g_srv.n_drained));
    cr_assert_eq(g_srv.data_errors, 0);
    cr_assert_eq(k->sent_bytes, 2 << 20);
    cr_assert_gt(atomic_load(&g_srv.n_drained), 0, "the echo paused and resumed");
}

/* Many clients at once, each streaming its own pattern offset, all through one poll loop. */
static void stream_many(uint16_t port, int nconns, size_t per_conn)
{
    enum { MAXC = 64 };
    cr_assert_leq(nconns, MAXC);
    int fds[MAXC];
    size_t sent[MAXC] = {0}, got[MAXC] = {0};
    unsigned char *out = malloc(per_conn), *in = malloc(65536);
    cr_assert(out && in);
    for (size_t i = 0; i < per_conn; i++)
        out[i] = h_pat(i);
    for (int c = 0; c < nconns; c++) {
        fds[c] = h_connect(port);
        cr_assert_geq(fds[c], 0);
    }
    int done = 0, bad = 0;
    uint64_t deadline = mono_ms() + 10000;
    while (done < nconns && mono_ms() < deadline) {
        struct pollfd p[MAXC];
        for (int c = 0; c < nconns; c++) {
            p[c].fd = got[c] < per_conn ? fds[c] : -1;
            p[c].events = POLLIN | (sent[c] < per_conn ? POLLOUT : 0);
        }
        if (poll(p, (nfds_t)nconns, 100) <= 0)
            continue;
        for (int c = 0; c < nconns; c++) {
            if ((p[c].revents & POLLOUT) && sent[c] < per_conn) {
                size_t n = per_conn - sent[c] < 8192 ? per_conn - sent[c] : 8192;
                ssize_t w = send(fds[c], out + sent[c], n, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (w > 0)
                    sent[c] += (size_t)w;
            }
            if (p[c].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t r = recv(fds[c], in, 65536, MSG_DONTWAIT);
                if (r == 0) {
                    bad++;
                    got[c] = per_conn; /* give up on it */
                    done++;
                    continue;
                }
                for (ssize_t i = 0; i < r; i++)
                    if (in[i] != h_pat(got[c] + (size_t)i))
                        bad++;
                if (r > 0) {
                    got[c] += (size_t)r;
                    if (got[c] == per_conn)
                        done++;
                }
            }
        }
    }
    cr_assert_eq(done, nconns, "%d of %d streams complete", done, nconns);
    cr_assert_eq(bad, 0, "%d bad bytes or early EOFs", bad);
    for (int c = 0; c < nconns; c++)
        close(fds[c]);
    free(out);
    free(in);
}

Test(loop, sixty_four_streams_through_a_tiny_ring_and_small_batches, .timeout = 20)
{
    h_echo_cbs(&g_srv.cbs);
    g_srv.opts.ring_entries = 8; /* SQ fills inside a turn: submits early */
    g_srv.opts.cqe_batch = 4;    /* CQEs left over between turns */
    g_srv.opts.recv_bufs = 16;
    g_srv.opts.recv_buf_bytes = 2048;
    g_srv.opts.out_cap_bytes = 65536;
    g_srv.opts.out_chunk_bytes = 1024; /* sends gather many chunks */
    g_srv.pause_below = 40000;
    START_OR_SKIP(&g_srv);
    stream_many(g_srv.port, 64, 128 * 1024);
    cr_assert(h_wait_atomic(&g_srv.n_close, 64, 5000));
    h_srv_stop(&g_srv);
    const struct slb_loop_counters *k = slb_loop_counters(&g_srv.loop);
    cr_assert_eq(g_srv.data_errors, 0);
    cr_assert_eq(k->accepted, 64);
    cr_assert_eq(k->recv_bytes, 64u * 128 * 1024);
    cr_assert_eq(k->sent_bytes, 64u * 128 * 1024);
    cr_log_info("64 streams: %lu sends, %lu ENOBUFS re-arms, %d drained", (unsigned long)k->sends,
                (unsigned long)k->enobufs_rearms, atomic_load(&g_srv.n_drained));
}

Test(loop, accepts_up_to_max_conns_then_closes_and_counts_the_extra_one, .timeout = 10)
{
    enum { MAX = 4 };
    h_echo_cbs(&g_srv.cbs);
    g_srv.opts.max_conns = MAX;
    START_OR_SKIP(&g_srv);
    int fds[MAX + 1];
    for (int i = 0; i < MAX; i++) {
        fds[i] = h_connect(g_srv.port);
        cr_assert_geq(fds[i], 0);
    }
    cr_assert(h_wait_atomic(&g_srv.n_accept, MAX, 3000));
    fds[MAX] = h_connect(g_srv.port);
    cr_assert_geq(fds[MAX], 0);
    cr_assert(h_read_eof(fds[MAX]), "the extra connection is closed at once");
    for (int i = 0; i < MAX; i++) {
        char c = (char)('a' + i), back = 0;
        cr_assert(h_write_all(fds[i], &c, 1));
        cr_assert_eq(h_read_n(fds[i], &back, 1), 1);
        cr_assert_eq(back, c);
    }
    for (int i = 0; i <= MAX; i++)
        close(fds[i]);
    cr_assert(h_wait_atomic(&g_srv.n_close, MAX, 3000));
    h_srv_stop(&g_srv);
    cr_assert_eq(g_srv.loop.counters.accepted, MAX);
    cr_assert_eq(g_srv.loop.counters.accept_rejected_full, 1);
    cr_assert_eq(atomic_load(&g_srv.n_close), MAX);
}

static int write_then_close_after_flush(struct slb_loop *loop, struct slb_conn *conn)
{
    h_log_accept(loop, conn);
    static unsigned char chunk[4096];
    size_t total = 200 * 1024;
    for (size_t off = 0; off < total; off += sizeof(chunk)) {
        for (size_t i = 0; i < sizeof(chunk); i++)
            chunk[i] = h_pat(off + i);
        if (slb_conn_write(conn, chunk, sizeof(chunk)) != (int)sizeof(chunk))
            return -EPROTO;
    }
    slb_conn_close(conn, true);
    if (slb_conn_write(conn, "x", 1) != -EPIPE)
        return -EPROTO;
    return 0;
}

Test(loop, close_after_flush_delivers_every_queued_byte_then_eof, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_accept = write_then_close_after_flush;
    g_srv.opts.out_cap_bytes = 256 * 1024;
    START_OR_SKIP(&g_srv);
    int fd = h_connect(g_srv.port);
    cr_assert_geq(fd, 0);
    size_t total = 200 * 1024;
    unsigned char *buf = malloc(total);
    cr_assert_eq(h_read_n(fd, buf, total), total);
    for (size_t i = 0; i < total; i++)
        cr_assert_eq(buf[i], h_pat(i), "byte %zu", i);
    cr_assert(h_read_eof(fd), "FIN after the last byte");
    free(buf);
    cr_assert_eq(atomic_load(&g_srv.n_close), 0, "still lingering for our FIN");
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    cr_assert_eq(g_srv.close_reasons[0], 0);
    cr_assert_eq(g_srv.close_ids[0], g_srv.accept_ids[0]);
    cr_assert_eq(atomic_load(&g_srv.n_close), 1);
}

static void check_one_close(struct h_srv *s, int reason)
{
    cr_assert_eq(atomic_load(&s->n_accept), 1);
    cr_assert_eq(atomic_load(&s->n_close), 1, "on_close ran %d times", atomic_load(&s->n_close));
    cr_assert_eq(s->close_ids[0], s->accept_ids[0]);
    cr_assert_eq(s->close_reasons[0], reason, "reason %d, want %d", s->close_reasons[0], reason);
    cr_assert_eq(s->loop.counters.closed, 1);
}

Test(loop, on_close_reports_peer_eof_once_with_reason_zero, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    START_OR_SKIP(&g_srv);
    echo_roundtrip(&g_srv);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    check_one_close(&g_srv, 0);
}

Test(loop, on_close_reports_a_reset_as_econnreset, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    START_OR_SKIP(&g_srv);
    int fd = h_connect(g_srv.port);
    cr_assert(h_wait_atomic(&g_srv.n_accept, 1, 3000));
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd); /* RST */
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    check_one_close(&g_srv, -ECONNRESET);
}

static int accept_with_timeout(struct slb_loop *loop, struct slb_conn *conn)
{
    h_log_accept(loop, conn);
    slb_conn_set_timeout(conn, 60);
    return 0;
}

Test(loop, on_close_reports_timeout_from_the_timer_wheel, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_accept = accept_with_timeout;
    START_OR_SKIP(&g_srv);
    uint64_t t0 = mono_ms();
    int fd = h_connect(g_srv.port);
    cr_assert_geq(fd, 0);
    cr_assert(h_read_eof(fd), "closed by the idle timeout");
    uint64_t took = mono_ms() - t0;
    cr_assert_geq(took, 50, "closed after %lu ms", (unsigned long)took);
    cr_assert_lt(took, 2000);
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    check_one_close(&g_srv, -ETIMEDOUT);
}

static int accept_with_long_timeout(struct slb_loop *loop, struct slb_conn *conn)
{
    h_log_accept(loop, conn);
    slb_conn_set_timeout(conn, 800);
    return 0;
}

/* A timer armed in a callback after the loop slept long counts from now, not from the
 * wheel's last run (which would make an 800 ms timeout fire at once). */
Test(loop, timeout_armed_after_a_long_idle_counts_from_now, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_accept = accept_with_long_timeout;
    START_OR_SKIP(&g_srv);
    usleep(1500 * 1000); /* the loop sleeps with no timer armed */
    uint64_t t0 = mono_ms();
    int fd = h_connect(g_srv.port);
    cr_assert_geq(fd, 0);
    cr_assert(h_read_eof(fd), "closed by the timeout");
    uint64_t took = mono_ms() - t0;
    cr_assert_geq(took, 700, "closed after %lu ms: the timeout counted from a stale clock",
                  (unsigned long)took);
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    check_one_close(&g_srv, -ETIMEDOUT);
}

Test(loop, on_close_reports_teardown_as_ecanceled, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    START_OR_SKIP(&g_srv);
    int fd = h_connect(g_srv.port);
    cr_assert(h_wait_atomic(&g_srv.n_accept, 1, 3000));
    h_srv_stop(&g_srv); /* run returns, deinit closes what is open */
    cr_assert(h_read_eof(fd));
    close(fd);
    check_one_close(&g_srv, -ECANCELED);
}

static int data_returns_error(struct slb_loop *loop, struct slb_conn *conn, const void *d, size_t n)
{
    (void)loop, (void)conn, (void)d, (void)n;
    return -EPROTO;
}

Test(loop, negative_on_data_return_closes_with_that_reason, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_data = data_returns_error;
    START_OR_SKIP(&g_srv);
    int fd = h_connect(g_srv.port);
    cr_assert(h_write_all(fd, "junk", 4));
    cr_assert(h_read_eof(fd));
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    check_one_close(&g_srv, -EPROTO);
}

static int write_100k(struct slb_loop *loop, struct slb_conn *conn)
{
    h_log_accept(loop, conn);
    static unsigned char big[100 * 1024];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = h_pat(i);
    return slb_conn_write(conn, big, sizeof(big)) == (int)sizeof(big) ? 0 : -EPROTO;
}

Test(loop, stop_lets_queued_output_flush_before_returning, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_accept = write_100k;
    g_srv.opts.out_cap_bytes = 128 * 1024;
    START_OR_SKIP(&g_srv);
    int fd = h_connect(g_srv.port);
    cr_assert(h_wait_atomic(&g_srv.n_accept, 1, 3000));
    slb_loop_stop(&g_srv.loop); /* the client has not read anything yet */
    unsigned char *buf = malloc(100 * 1024);
    cr_assert_eq(h_read_n(fd, buf, 100 * 1024), 100 * 1024);
    for (size_t i = 0; i < 100 * 1024; i++)
        cr_assert_eq(buf[i], h_pat(i));
    free(buf);
    pthread_join(g_srv.thread, NULL);
    cr_assert(h_read_eof(fd));
    close(fd);
    cr_assert_eq(g_srv.run_rc, 0);
    check_one_close(&g_srv, -ECANCELED);
    /* Listener gone: a new connection is refused. */
    cr_assert_lt(h_connect(g_srv.port), 0);
}

/* ---- outbound connects -------------------------------------------------------------- */

struct conn_ctx {
    uint16_t port;
    struct slb_conn_id id;
    int connect_res;
    atomic_int connected;
    atomic_int got_pong;
};

static int connect_setup(struct h_srv *s)
{
    struct conn_ctx *cx = s->ctx;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(cx->port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct slb_conn_id id;
    int rc = slb_loop_connect(&s->loop, (struct sockaddr *)&sin, sizeof(sin), 42, &id);
    if (rc < 0)
        return rc;
    struct slb_conn *c = slb_conn_get(&s->loop, id);
    if (!c || c->state != SLB_CONN_CONNECTING || c->tag != 42)
        return -EPROTO;
    c->owner = cx;
    cx->id = id;
    /* Queued while connecting, sent once connected. */
    return slb_conn_write(c, "ping", 4) == 4 ? 0 : -EPROTO;
}

static int on_connect_cb(struct slb_loop *loop, struct slb_conn *conn, int res)
{
    struct h_srv *s = slb_loop_user(loop);
    struct conn_ctx *cx = s->ctx;
    cx->connect_res = res;
    atomic_store(&cx->connected, 1);
    if (res == 0)
        h_log_accept(loop, conn); /* log as "reported open" */
    return 0;
}

static int pong_data(struct slb_loop *loop, struct slb_conn *conn, const void *d, size_t n)
{
    (void)loop;
    struct conn_ctx *cx = conn->owner;
    if (n == 4 && memcmp(d, "pong", 4) == 0) {
        atomic_store(&cx->got_pong, 1);
        slb_conn_close(conn, true);
    }
    return 0;
}

Test(loop, outbound_connect_succeeds_and_carries_data_both_ways, .timeout = 10)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    getsockname(lfd, (struct sockaddr *)&sin, &len);
    static struct conn_ctx cx;
    cx.port = ntohs(sin.sin_port);
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_connect = on_connect_cb;
    g_srv.cbs.on_data = pong_data;
    g_srv.setup = connect_setup;
    g_srv.ctx = &cx;
    START_OR_SKIP(&g_srv);
    int fd = accept(lfd, NULL, NULL);
    cr_assert_geq(fd, 0);
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[4];
    cr_assert_eq(h_read_n(fd, buf, 4), 4);
    cr_assert_eq(memcmp(buf, "ping", 4), 0);
    cr_assert(h_write_all(fd, "pong", 4));
    cr_assert(h_read_eof(fd), "closed after flush");
    close(fd);
    cr_assert(h_wait_atomic(&g_srv.n_close, 1, 3000));
    h_srv_stop(&g_srv);
    close(lfd);
    cr_assert_eq(cx.connect_res, 0);
    cr_assert_eq(atomic_load(&cx.got_pong), 1);
    cr_assert_eq(g_srv.loop.counters.connect_ok, 1);
    check_one_close(&g_srv, 0);
}

Test(loop, outbound_connect_to_a_closed_port_reports_econnrefused, .timeout = 10)
{
    static struct conn_ctx cx;
    cx.port = h_closed_port();
    cr_assert_neq(cx.port, 0);
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_connect = on_connect_cb;
    g_srv.setup = connect_setup;
    g_srv.ctx = &cx;
    START_OR_SKIP(&g_srv);
    cr_assert(h_wait_atomic(&cx.connected, 1, 3000));
    h_srv_stop(&g_srv);
    cr_assert_eq(cx.connect_res, -ECONNREFUSED, "got %d", cx.connect_res);
    cr_assert_eq(g_srv.loop.counters.connect_failed, 1);
    cr_assert_eq(atomic_load(&g_srv.n_close), 0, "never reported open: no on_close");
    cr_assert_eq(g_srv.loop.nconns, 0, "slot freed");
}

static int connect_with_timeout_setup(struct h_srv *s)
{
    int rc = connect_setup(s);
    if (rc < 0)
        return rc;
    struct conn_ctx *cx = s->ctx;
    struct slb_conn *c = slb_conn_get(&s->loop, cx->id);
    if (!c)
        return -EPROTO;
    slb_conn_set_timeout(c, 100);
    return 0;
}

Test(loop, outbound_connect_timeout_reports_etimedout_through_on_connect, .timeout = 10)
{
    /* A listener whose accept queue is full drops SYNs: the connect hangs. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(lfd, 0), 0);
    getsockname(lfd, (struct sockaddr *)&sin, &len);
    int fillers[3];
    for (int i = 0; i < 3; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&sin, sizeof(sin));
    }
    usleep(50 * 1000);
    static struct conn_ctx cx;
    cx.port = ntohs(sin.sin_port);
    h_echo_cbs(&g_srv.cbs);
    g_srv.cbs.on_connect = on_connect_cb;
    g_srv.setup = connect_with_timeout_setup;
    g_srv.ctx = &cx;
    START_OR_SKIP(&g_srv);
    cr_assert(h_wait_atomic(&cx.connected, 1, 3000));
    h_srv_stop(&g_srv);
    for (int i = 0; i < 3; i++)
        close(fillers[i]);
    close(lfd);
    cr_assert_eq(cx.connect_res, -ETIMEDOUT, "got %d", cx.connect_res);
    cr_assert_eq(g_srv.loop.counters.connect_failed, 1);
    cr_assert_eq(atomic_load(&g_srv.n_close), 0);
    cr_assert_eq(g_srv.loop.nconns, 0);
}

/* ---- listeners ---------------------------------------------------------------------- */

static struct h_srv g_srv2;
static uint16_t g_shared_port;

static int listen_shared(struct h_srv *s)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(g_shared_port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int idx = slb_loop_listen(&s->loop, (struct sockaddr *)&sin, sizeof(sin), 64, 1);
    return idx < 0 ? idx : 0;
}

Test(loop, two_loops_listen_on_one_port_with_reuseport, .timeout = 10)
{
    h_echo_cbs(&g_srv.cbs);
    START_OR_SKIP(&g_srv);
    g_shared_port = g_srv.port;
    h_echo_cbs(&g_srv2.cbs);
    g_srv2.opts.loop_id = 1;
    g_srv2.setup = listen_shared;
    cr_assert_eq(h_srv_start(&g_srv2), 0, "second SO_REUSEPORT listener on the same port");
    for (int i = 0; i < 16; i++)
        echo_roundtrip(&g_srv);
    h_srv_stop(&g_srv);
    h_srv_stop(&g_srv2);
    uint64_t total = g_srv.loop.counters.accepted + g_srv2.loop.counters.accepted;
    cr_assert_eq(total, 16);
    cr_log_info("reuseport spread: %lu / %lu", (unsigned long)g_srv.loop.counters.accepted,
                (unsigned long)g_srv2.loop.counters.accepted);
}

static int listen_v6_any_and_v4_any(struct h_srv *s)
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = 0};
    sin6.sin6_addr = in6addr_any;
    int idx = slb_loop_listen(&s->loop, (struct sockaddr *)&sin6, sizeof(sin6), 16, 6);
    if (idx < 0)
        return idx;
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = slb_loop_listener_addr(&s->loop, idx, &ss, &len);
    if (rc < 0)
        return rc;
    s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    /* V6ONLY on [::] leaves the IPv4 wildcard of the same port free. */
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(s->port)};
    sin.sin_addr.s_addr = htonl(INADDR_ANY);
    idx = slb_loop_listen(&s->loop, (struct sockaddr *)&sin, sizeof(sin), 16, 4);
    return idx < 0 ? idx : 0;
}

Test(loop, ipv6_wildcard_listener_is_v6only, .timeout = 10)
{
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    if (probe < 0)
        cr_skip_test("no IPv6");
    close(probe);
    h_echo_cbs(&g_srv.cbs);
    g_srv.setup = listen_v6_any_and_v4_any;
    int rc = h_srv_start(&g_srv);
    if (h_refused(rc) || rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT)
        cr_skip_test("setup refused: %s", strerror(-rc));
    cr_assert_eq(rc, 0, "%s", strerror(-rc));
    echo_roundtrip(&g_srv); /* over IPv4, accepted by the 0.0.0.0 listener */
    h_srv_stop(&g_srv);
    cr_assert_eq(g_srv.loop.counters.accepted, 1);
}

/* Ping-pong of small messages: every reply goes out before the next request exists, so
 * the loop is idle for a few microseconds between turns. */
static void ping_pong(uint16_t port, int rounds)
{
    int fd = h_connect(port);
    cr_assert_geq(fd, 0);
    for (int i = 0; i < rounds; i++) {
        char out[8], in[8];
        memset(out, 'a' + i % 26, sizeof(out));
        cr_assert(h_write_all(fd, out, sizeof(out)));
        cr_assert_eq(h_read_n(fd, in, sizeof(in)), sizeof(in), "round %d", i);
        cr_assert_eq(memcmp(in, out, sizeof(in)), 0, "round %d", i);
    }
    close(fd);
}

Test(loop, spin_us_watches_for_work_between_turns_and_finds_it, .timeout = 20)
{
    h_echo_cbs(&g_srv.cbs);
    g_srv.opts.spin_us = 5000; /* above the bound: capped */
    START_OR_SKIP(&g_srv);
    if (g_srv.loop.spin_us == 0) { /* the ring cannot flag pending task work */
        h_srv_stop(&g_srv);
        cr_skip_test("kernel refused IORING_SETUP_TASKRUN_FLAG (flags %#x): no spinning",
                     slb_loop_setup_flags(&g_srv.loop));
    }
    cr_assert_eq(g_srv.loop.spin_us, SLB_LOOP_SPIN_US_MAX);
    ping_pong(g_srv.port, 2000);
    h_srv_stop(&g_srv);
    const struct slb_loop_counters *k = &g_srv.loop.counters;
    cr_log_info("spins %lu, hits %lu, sleeps %lu", (unsigned long)k->spins,
                (unsigned long)k->spin_hits, (unsigned long)k->sleeps);
    cr_assert_gt(k->spins, 0);
    cr_assert_gt(k->spin_hits, 0, "a reply within 1 ms of the last one is a hit");
    cr_assert_leq(k->spin_hits, k->spins);
    cr_assert_eq(k->recv_bytes, 2000 * 8);
    cr_assert_eq(k->sent_bytes, 2000 * 8);
}

Test(loop, spin_us_zero_never_spins, .timeout = 20)
{
    h_echo_cbs(&g_srv.cbs);
    START_OR_SKIP(&g_srv);
    ping_pong(g_srv.port, 200);
    h_srv_stop(&g_srv);
    cr_assert_eq(g_srv.loop.counters.spins, 0);
    cr_assert_eq(g_srv.loop.counters.spin_hits, 0);
    cr_assert_gt(g_srv.loop.counters.sleeps, 0, "an echo server waits between rounds");
}
