/* SIP stream tests (balancer/sip_stream.h) on real io_uring loops over loopback: framing
 * across reads and TLS records, a stopped or held stream's pending input, whole-message
 * output under a connection's bound, redial backoff on the loop's timers, TLS session
 * resumption, TLS failure and the peer's close_notify.
 *
 * Each test runs one loop on its own thread (tests/io/harness). Both ends of a TLS
 * connection live in that loop: a listener whose accepted connection gets the server end,
 * and a dial (slb_redial_connect) whose connection gets the client end. A plain stream's
 * peer is a blocking socket on the test thread. The test thread acts on the loop through a
 * command slot that a 1 ms timer polls, waits on atomics (each wait bounded), and reads the
 * rest after a command or after the loop stopped. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "balancer/sip_stream.h"
#include "harness.h"
#include "io/loop.h"
#include "io/timer.h"
#include "tls/tls.h"

#define TAG_LISTEN 1u
#define TAG_DIAL   2u
#define WAIT_MS    5000
#define MAX_MSG    8192u
#define FRAMES_MAX 64
#define RX_CAP     (128u * 1024u)
#define MSGS_MAX   64
#define MSG_CAP    4096u
#define STEPS_MAX  16
#define FAILS_MAX  16
#define HS_MAX     4

/* ---- the fixture -------------------------------------------------------------------- */

/* One end of a connection under test: the stream first (the ops cast it back), then what
 * the stream told the test. Owned by the fixture; written on the loop's thread; the test
 * thread reads the atomics while the loop runs and the rest after a command or a stop. */
struct end {
    struct slb_stream s;
    /* Controls, set before the traffic they govern. */
    int refuse_at;       /* refuse (return false) once, when this many frames were taken */
    bool hold_on_refuse; /* and hold the stream then */
    bool ignore_fatal;   /* answer "go on" to a fatal frame (a careless owner) */
    /* Frames taken (the callback returned true), in order. */
    int n_frames;
    uint8_t kinds[FRAMES_MAX];
    uint32_t lens[FRAMES_MAX];
    size_t body_lens[FRAMES_MAX];
    bool requests[FRAMES_MAX];
    char rx[RX_CAP]; /* the bytes of every MESSAGE frame taken, back to back */
    size_t rx_len;
    bool rx_overflow;
    unsigned events; /* OR of the TLS events */
    int tls_failed_rc;
    int tls_fail_reason;
    int state_at_close; /* the stream's state when io/'s on_close ran */
    int close_reason;
    bool resumed[HS_MAX]; /* slb_tls_resumed at each handshake */
    int flush_rc;
    atomic_int a_opened, a_frames, a_refused, a_hs, a_sessions, a_tls_failed, a_closed;
    atomic_int a_data, a_drained, a_peer_closed;
    atomic_llong a_data_bytes;
};

/* What the test thread snapshots of an end through a command. */
struct snap {
    int n_frames;
    bool pending;
    uint32_t pending_len;
    int state;
    bool held;
    bool session_kept;
    size_t out_queued;
};

/* A send the client end makes on a tick of its own once open: parts of g.msg bytes. */
struct step {
    int n;
    struct {
        unsigned msg;
        size_t off, len;
    } part[4];
};

typedef void (*cmd_fn)(void);

/* The one fixture of a test process (Criterion runs each test in its own). */
struct fx {
    struct h_srv srv;
    struct slb_stream_env env;
    bool env_ready;
    struct slb_tls_ctx *sctx; /* NULL: plain */
    struct slb_tls_ctx *cctx;
    struct end srv_end, cli_end;
    struct slb_redial redial;
    uint32_t redial_min_ms, redial_max_ms;
    struct slb_timer tick;
    _Atomic(cmd_fn) cmd;
    atomic_int cmd_done;
    /* Accepted connections. */
    uint32_t out_cap; /* their output bound (0: the loop's) */
    int sndbuf;       /* their SO_SNDBUF (0: the kernel's) */
    /* Dials. */
    uint16_t dial_port;
    int dial_rc;
    bool keep_sessions;
    bool backoff_on_fail; /* a failed dial arms the redial timer, whose fire dials again */
    int dials_max;
    atomic_int a_connects, a_connect_fails, a_fires;
    int connect_res[FAILS_MAX];
    uint32_t delays[FAILS_MAX];
    uint64_t fail_ms[FAILS_MAX], fire_ms[FAILS_MAX];
    bool fire_container_ok;
    int send_in_handshake_rc;
    /* The client end's script, one step per tick once open. */
    struct step steps[STEPS_MAX];
    int n_steps;
    int next_step;
    int step_rc[STEPS_MAX];
    atomic_int a_steps;
    /* Backpressure. */
    int n_sent;      /* messages sent whole */
    int refused_msg; /* the message refused (-1: none) */
    int refused_rc;  /* what slb_stream_send said */
    size_t queued_at_refusal;
    int retry_rc; /* the refused message, sent again from on_drained */
    atomic_int a_retried;
    /* Snapshots. */
    struct snap snap_srv, snap_cli;
    int misc_rc;
    uint32_t seq[8];
    int n_seq;
};

static struct fx g;
static char g_msg[MSGS_MAX][MSG_CAP];
static size_t g_msg_len[MSGS_MAX];

/* A valid OPTIONS request, number n, whose body of body_len bytes holds a CRLFCRLF in its
 * middle (only Content-Length tells where the message ends). Returns its length. */
static size_t make_msg(char *buf, size_t cap, unsigned n, size_t body_len)
{
    int h = snprintf(buf, cap,
                     "OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
                     "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKstream%u\r\n"
                     "Max-Forwards: 70\r\n"
                     "To: <sip:bob@127.0.0.1>\r\n"
                     "From: <sip:alice@127.0.0.1>;tag=a%u\r\n"
                     "Call-ID: stream-%u@127.0.0.1\r\n"
                     "CSeq: %u OPTIONS\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     n, n, n, n + 1, body_len);
    cr_assert(h > 0 && (size_t)h + body_len <= cap, "message %u does not fit", n);
    for (size_t i = 0; i < body_len; i++)
        buf[(size_t)h + i] = (char)('a' + (i + n) % 26);
    if (body_len >= 8)
        memcpy(buf + h + body_len / 2 - 2, "\r\n\r\n", 4);
    return (size_t)h + body_len;
}

/* Messages 0..n-1 with bodies of body_len bytes into g_msg. */
static void make_msgs(unsigned n, size_t body_len)
{
    cr_assert_leq(n, MSGS_MAX);
    for (unsigned i = 0; i < n; i++)
        g_msg_len[i] = make_msg(g_msg[i], MSG_CAP, i, body_len + i);
}

static const char *cert(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, sizeof(bufs[0]), "%s/%s", SLB_TLS_TEST_CERTS, name);
    return b;
}

static struct slb_tls_ctx *server_ctx(void)
{
    struct slb_tls_server_opts o = {
        .cert_file = cert("server-ec.pem"),
        .key_file = cert("server-ec.key"),
    };
    char err[256] = "";
    struct slb_tls_ctx *ctx = slb_tls_server_ctx_new(&o, err, sizeof(err));
    cr_assert_not_null(ctx, "server context: %s", err);
    return ctx;
}

static struct slb_tls_ctx *client_ctx(const char *ca)
{
    struct slb_tls_client_opts o = {
        .ca_file = cert(ca),
        .verify_server = SLB_TLS_VERIFY_REQUIRE,
    };
    char err[256] = "";
    struct slb_tls_ctx *ctx = slb_tls_client_ctx_new(&o, err, sizeof(err));
    cr_assert_not_null(ctx, "client context: %s", err);
    return ctx;
}

/* ---- the streams' callbacks (loop thread) -------------------------------------------- */

static bool end_frame(struct slb_stream *s, const char *base, const struct slb_sip_frame *fr,
                      const struct slb_sip_msg *m)
{
    struct end *e = (struct end *)(void *)s;
    if (e->n_frames == e->refuse_at) {
        e->refuse_at = -1;
        if (e->hold_on_refuse)
            s->held = true;
        atomic_fetch_add(&e->a_refused, 1);
        return false;
    }
    int i = e->n_frames;
    if (i < FRAMES_MAX) {
        e->kinds[i] = (uint8_t)fr->kind;
        e->lens[i] = fr->frame_len;
        e->body_lens[i] = fr->kind == SLB_FRAME_MESSAGE ? m->body.len : 0;
        e->requests[i] = fr->kind == SLB_FRAME_MESSAGE && m->is_request;
    }
    e->n_frames++;
    atomic_fetch_add(&e->a_frames, 1);
    if (fr->kind == SLB_FRAME_FATAL && e->ignore_fatal)
        return true;
    if (fr->kind == SLB_FRAME_FATAL) {
        /* As every owner does: nothing more can be framed, the stream goes. */
        slb_stream_close(s, false);
        return false;
    }
    if (fr->kind == SLB_FRAME_MESSAGE) {
        if (e->rx_len + fr->frame_len <= RX_CAP) {
            memcpy(e->rx + e->rx_len, base, fr->frame_len);
            e->rx_len += fr->frame_len;
        } else {
            e->rx_overflow = true;
        }
    }
    return true;
}

static void end_tls_events(struct slb_stream *s, int ev)
{
    struct end *e = (struct end *)(void *)s;
    e->events |= (unsigned)ev;
    if (ev & SLB_TLS_EV_HANDSHAKE_DONE) {
        int n = atomic_load(&e->a_hs);
        if (n < HS_MAX)
            e->resumed[n] = slb_tls_resumed(&s->tls);
        slb_conn_set_timeout(s->conn, 0); /* the dial's bound covered the handshake only */
        atomic_fetch_add(&e->a_hs, 1);
    }
    if ((ev & SLB_TLS_EV_NEW_SESSION) && e == &g.cli_end && g.keep_sessions) {
        slb_redial_keep_session(&g.redial, s);
        atomic_fetch_add(&e->a_sessions, 1);
    }
    if (ev & SLB_TLS_EV_PEER_CLOSED)
        atomic_fetch_add(&e->a_peer_closed, 1);
}

static void end_tls_failed(struct slb_stream *s, int rc)
{
    struct end *e = (struct end *)(void *)s;
    e->tls_failed_rc = rc;
    e->tls_fail_reason = (int)slb_tls_fail_reason(&s->tls);
    atomic_fetch_add(&e->a_tls_failed, 1);
}

static const struct slb_stream_ops end_ops = {
    .frame = end_frame,
    .tls_events = end_tls_events,
    .tls_failed = end_tls_failed,
};

/* ---- io/'s callbacks (loop thread) ------------------------------------------------------ */

static int on_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    struct end *e = &g.srv_end;
    (void)loop;
    if (e->s.state != SLB_STREAM_FREE)
        return -EBUSY;
    if (g.sndbuf)
        (void)setsockopt(conn->fd, SOL_SOCKET, SO_SNDBUF, &g.sndbuf, sizeof(g.sndbuf));
    if (g.out_cap)
        slb_conn_set_out_limits(conn, g.out_cap, false);
    int rc = slb_stream_open(&g.env, &e->s, conn, g.sctx, NULL, e);
    if (rc == 0)
        atomic_fetch_add(&e->a_opened, 1);
    return rc;
}

static void dial(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(g.dial_port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct slb_conn_id id;
    g.dial_rc = slb_redial_connect(&g.srv.loop, (const struct sockaddr *)&sin, sizeof(sin),
                                   TAG_DIAL, 3000, &id);
}

static int on_connect(struct slb_loop *loop, struct slb_conn *conn, int res)
{
    int n = atomic_load(&g.a_connects);
    if (n < FAILS_MAX)
        g.connect_res[n] = res;
    atomic_fetch_add(&g.a_connects, 1);
    if (res < 0) {
        if (g.backoff_on_fail && n < FAILS_MAX) {
            g.fail_ms[n] = slb_loop_now_ms(loop);
            g.delays[n] = slb_redial_backoff(&g.redial, loop);
        }
        atomic_fetch_add(&g.a_connect_fails, 1);
        return 0;
    }
    struct end *e = &g.cli_end;
    if (e->s.state != SLB_STREAM_FREE)
        return -EBUSY;
    if (slb_stream_open(&g.env, &e->s, conn, g.cctx, "localhost", e) < 0)
        return -ENOMEM;
    atomic_fetch_add(&e->a_opened, 1);
    if (e->s.plain)
        return 0;
    /* Nothing may be written before the handshake: refused whole. */
    static const char early[] = "OPTIONS";
    struct iovec v = {(void *)early, sizeof(early) - 1};
    g.send_in_handshake_rc = slb_stream_send(&e->s, &v, 1, v.iov_len);
    slb_redial_offer_session(&g.redial, &e->s);
    if (slb_tls_start(&e->s.tls) < 0)
        slb_stream_close(&e->s, false);
    return 0;
}

static int on_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len)
{
    struct end *e = conn->owner;
    (void)loop;
    if (!e)
        return 0;
    atomic_fetch_add(&e->a_data_bytes, (long long)len);
    if (e->s.held)
        slb_stream_input_held(&e->s, data, len);
    else
        slb_stream_input(&e->s, data, len);
    atomic_fetch_add(&e->a_data, 1);
    return 0;
}

/* The message refused by a fill, sent again once io/ says there is room. */
static void retry_refused(struct end *e)
{
    if (g.refused_msg < 0 || atomic_load(&g.a_retried))
        return;
    unsigned i = (unsigned)g.refused_msg;
    struct iovec v = {g_msg[i], g_msg_len[i]};
    g.retry_rc = slb_stream_send(&e->s, &v, 1, g_msg_len[i]);
    atomic_fetch_add(&g.a_retried, 1);
}

static void on_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    struct end *e = conn->owner;
    (void)loop;
    if (!e)
        return;
    e->flush_rc = slb_stream_flush(&e->s);
    retry_refused(e);
    atomic_fetch_add(&e->a_drained, 1);
}

static void on_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    struct end *e = conn->owner;
    (void)loop;
    if (!e)
        return;
    e->state_at_close = e->s.state;
    e->close_reason = reason;
    conn->owner = NULL;
    slb_stream_release(&e->s);
    atomic_fetch_add(&e->a_closed, 1);
}

static void on_redial(struct slb_timer *t)
{
    struct slb_redial *r = slb_timer_entry(t, struct slb_redial, timer);
    int n = atomic_load(&g.a_fires);
    g.fire_container_ok = r == &g.redial;
    if (n < FAILS_MAX)
        g.fire_ms[n] = slb_loop_now_ms(&g.srv.loop);
    atomic_fetch_add(&g.a_fires, 1);
    if (g.backoff_on_fail && n + 1 < g.dials_max)
        dial();
}

/* The client end's next scripted send, once it is open. */
static void script_step(void)
{
    struct end *e = &g.cli_end;
    if (g.next_step >= g.n_steps || e->s.state != SLB_STREAM_OPEN)
        return;
    const struct step *st = &g.steps[g.next_step];
    struct iovec iov[4];
    size_t total = 0;
    for (int i = 0; i < st->n; i++) {
        iov[i].iov_base = g_msg[st->part[i].msg] + st->part[i].off;
        iov[i].iov_len = st->part[i].len;
        total += st->part[i].len;
    }
    g.step_rc[g.next_step++] = slb_stream_send(&e->s, iov, st->n, total);
    atomic_fetch_add(&g.a_steps, 1);
}

static void on_tick(struct slb_timer *t)
{
    cmd_fn fn = atomic_exchange(&g.cmd, NULL);
    if (fn) {
        fn();
        atomic_fetch_add(&g.cmd_done, 1);
    }
    script_step();
    slb_timer_arm(slb_loop_wheel(&g.srv.loop), t, 1);
}

static int fx_setup(struct h_srv *srv)
{
    int rc = slb_stream_env_init(&g.env, &end_ops, 8, MAX_MSG);
    if (rc < 0)
        return rc;
    g.env_ready = true;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int idx = slb_loop_listen(&srv->loop, (struct sockaddr *)&sin, sizeof(sin), 16, TAG_LISTEN);
    if (idx < 0)
        return idx;
    struct sockaddr_storage ss;
    socklen_t len;
    rc = slb_loop_listener_addr(&srv->loop, idx, &ss, &len);
    if (rc < 0)
        return rc;
    srv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    slb_redial_init(&g.redial, g.redial_min_ms, g.redial_max_ms, on_redial);
    slb_timer_init(&g.tick, on_tick);
    slb_timer_arm(slb_loop_wheel(&srv->loop), &g.tick, 1);
    return 0;
}

static void end_reset(struct end *e)
{
    memset(e, 0, sizeof(*e));
    e->refuse_at = -1;
}

/* Starts the loop with the fixture's callbacks (contexts NULL: plain), or skips the test
 * when the kernel refuses io_uring. */
static void fx_start(struct slb_tls_ctx *sctx, struct slb_tls_ctx *cctx)
{
    g.sctx = sctx;
    g.cctx = cctx;
    end_reset(&g.srv_end);
    end_reset(&g.cli_end);
    g.refused_msg = -1;
    if (!g.redial_min_ms)
        g.redial_min_ms = 10;
    if (!g.redial_max_ms)
        g.redial_max_ms = 100;
    g.srv.cbs = (struct slb_loop_cbs){
        .on_accept = on_accept,
        .on_connect = on_connect,
        .on_data = on_data,
        .on_drained = on_drained,
        .on_close = on_close,
    };
    g.srv.opts.stop_grace_ms = 200;
    g.srv.opts.linger_ms = 1000;
    g.srv.setup = fx_setup;
    g.srv.ctx = &g;
    int rc = h_srv_start(&g.srv);
    if (h_refused(rc))
        cr_skip_test("kernel refused io_uring setup: %s", strerror(-rc));
    cr_assert_eq(rc, 0, "loop start: %s", strerror(-rc));
}

/* Runs fn on the loop's thread and waits (bounded) until it ran. */
static void run_cmd(cmd_fn fn)
{
    int done = atomic_load(&g.cmd_done);
    atomic_store(&g.cmd, fn);
    cr_assert(h_wait_atomic(&g.cmd_done, done + 1, WAIT_MS), "the loop did not run a command");
}

static void cmd_teardown(void)
{
    slb_redial_deinit(&g.redial);
    slb_timer_cancel(&g.tick);
    slb_tls_thread_cleanup();
}

/* Stops the loop (its deinit closes what is left: on_close releases the streams), then
 * frees the environment and the contexts. */
static void fx_stop(void)
{
    run_cmd(cmd_teardown);
    h_srv_stop(&g.srv);
    if (g.env_ready)
        slb_stream_env_deinit(&g.env);
    g.env_ready = false;
    slb_tls_ctx_free(g.sctx);
    slb_tls_ctx_free(g.cctx);
    g.sctx = g.cctx = NULL;
}

static void take_snap(struct snap *sn, struct end *e)
{
    sn->n_frames = e->n_frames;
    sn->pending = e->s.in.pending != NULL;
    sn->pending_len = e->s.in.len;
    sn->state = e->s.state;
    sn->held = e->s.held;
    sn->session_kept = g.redial.session != NULL;
    sn->out_queued = e->s.conn ? slb_conn_out_queued(e->s.conn) : 0;
}

static void cmd_snap(void)
{
    take_snap(&g.snap_srv, &g.srv_end);
    take_snap(&g.snap_cli, &g.cli_end);
}

static void cmd_dial(void)
{
    dial();
}

static void suite_init(void)
{
    cr_assert_eq(slb_tls_init(), 0);
}

static void suite_fini(void)
{
    slb_tls_cleanup();
}

TestSuite(sip_stream, .init = suite_init, .fini = suite_fini);

/* ---- test-thread helpers --------------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void wait_for(atomic_int *v, int want, const char *what)
{
    cr_assert(h_wait_atomic(v, want, WAIT_MS), "timed out waiting for %s (%d of %d)", what,
              atomic_load(v), want);
}

/* A blocking loopback client (5 s timeouts), Nagle off so each write is its own segment,
 * with SO_RCVBUF set before connecting when rcvbuf > 0. */
static int client_socket(uint16_t port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "connect: %s",
                 strerror(errno));
    return fd;
}

/* Messages first..first+n-1 of g_msg, back to back, into buf; returns the length. */
static size_t concat(char *buf, size_t cap, unsigned first, unsigned n)
{
    size_t len = 0;
    for (unsigned i = first; i < first + n; i++) {
        cr_assert_leq(len + g_msg_len[i], cap);
        memcpy(buf + len, g_msg[i], g_msg_len[i]);
        len += g_msg_len[i];
    }
    return len;
}

/* The end took exactly messages first..first+n-1 as MESSAGE frames, whole, in order. */
static void assert_took_msgs(const struct end *e, unsigned first, unsigned n)
{
    static char want[RX_CAP];
    size_t len = concat(want, sizeof(want), first, n);
    cr_assert_not(e->rx_overflow);
    cr_assert_eq(e->rx_len, len, "message bytes: got %zu, want %zu", e->rx_len, len);
    cr_assert_arr_eq(e->rx, want, len, "message bytes differ");
}

/* The frame at index i is message m of g_msg. */
static void assert_frame_is_msg(const struct end *e, int i, unsigned m)
{
    cr_assert_eq(e->kinds[i], SLB_FRAME_MESSAGE, "frame %d kind %d", i, e->kinds[i]);
    cr_assert_eq(e->lens[i], g_msg_len[m], "frame %d length %u, want %zu", i, e->lens[i],
                 g_msg_len[m]);
    cr_assert(e->requests[i], "frame %d scanned as a request", i);
    cr_assert_gt(e->body_lens[i], 0, "frame %d: the scan has its body", i);
}

/* Both TLS ends handshaken. */
static void connect_tls_pair(void)
{
    g.dial_port = g.srv.port;
    run_cmd(cmd_dial);
    cr_assert_eq(g.dial_rc, 0, "slb_redial_connect: %s", strerror(-g.dial_rc));
    wait_for(&g.cli_end.a_hs, 1, "the client's handshake");
    wait_for(&g.srv_end.a_hs, 1, "the server's handshake");
}

/* ---- 1. framing ------------------------------------------------------------------------- */

Test(sip_stream, plain_message_dribbled_in_small_pieces_is_one_frame_and_crlfcrlf_a_ping,
     .timeout = 30)
{
    make_msgs(3, 120);
    fx_start(NULL, NULL);
    int fd = client_socket(g.srv.port, 0);
    wait_for(&g.srv_end.a_opened, 1, "the accept");
    /* Message 0 in 5-byte pieces, 1 ms apart: many reads, one frame. */
    for (size_t off = 0; off < g_msg_len[0]; off += 5) {
        size_t n = g_msg_len[0] - off < 5 ? g_msg_len[0] - off : 5;
        cr_assert(h_write_all(fd, g_msg[0] + off, n));
        sleep_ms(1);
    }
    cr_assert(h_write_all(fd, "\r\n", 2));
    sleep_ms(5);
    cr_assert(h_write_all(fd, "\r\n", 2));
    wait_for(&g.srv_end.a_frames, 2, "message 0 and the ping");
    /* Messages 1 and 2 and a ping in one write: three frames. */
    char both[2 * MSG_CAP + 4];
    size_t len = concat(both, sizeof(both), 1, 2);
    memcpy(both + len, "\r\n\r\n", 4);
    cr_assert(h_write_all(fd, both, len + 4));
    wait_for(&g.srv_end.a_frames, 5, "messages 1 and 2 and the second ping");
    int reads = atomic_load(&g.srv_end.a_data);
    sleep_ms(50); /* nothing more comes of it */
    close(fd);
    wait_for(&g.srv_end.a_closed, 1, "the close");
    fx_stop();

    struct end *e = &g.srv_end;
    cr_assert_gt(reads, 10, "message 0 came in many reads (%d)", reads);
    cr_assert_eq(e->n_frames, 5);
    assert_frame_is_msg(e, 0, 0);
    cr_assert_eq(e->kinds[1], SLB_FRAME_PING);
    cr_assert_eq(e->lens[1], 4);
    assert_frame_is_msg(e, 2, 1);
    assert_frame_is_msg(e, 3, 2);
    cr_assert_eq(e->kinds[4], SLB_FRAME_PING);
    assert_took_msgs(e, 0, 3);
    cr_assert_eq(e->state_at_close, SLB_STREAM_OPEN, "the peer closed, not the stream");
}

Test(sip_stream, tls_messages_split_across_sends_and_records_are_framed_once_each, .timeout = 30)
{
    make_msgs(4, 300);
    /* Step 0: messages 0 and 1 in one send. Then message 2 over five sends (five records),
     * a keepalive, and message 3 in two sends of which the first ends mid-header. */
    size_t l2 = g_msg_len[2];
    g.steps[0] = (struct step){2, {{0, 0, g_msg_len[0]}, {1, 0, g_msg_len[1]}}};
    g.steps[1] = (struct step){1, {{2, 0, 1}}};
    g.steps[2] = (struct step){1, {{2, 1, 9}}};
    g.steps[3] = (struct step){2, {{2, 10, 40}, {2, 50, 60}}};
    g.steps[4] = (struct step){1, {{2, 110, l2 - 150}}};
    g.steps[5] = (struct step){1, {{2, l2 - 40, 40}}};
    memcpy(g_msg[10], "\r\n\r\n", 4);
    g_msg_len[10] = 4;
    g.steps[6] = (struct step){1, {{10, 0, 4}}};
    g.steps[7] = (struct step){1, {{3, 0, 25}}};
    g.steps[8] = (struct step){1, {{3, 25, g_msg_len[3] - 25}}};
    g.n_steps = 9;
    fx_start(server_ctx(), client_ctx("ca.pem"));
    connect_tls_pair();
    wait_for(&g.a_steps, 9, "the client's sends");
    wait_for(&g.srv_end.a_frames, 5, "four messages and a ping");
    sleep_ms(50);
    fx_stop();

    cr_assert_eq(g.send_in_handshake_rc, -ENOBUFS, "a send before the handshake is refused");
    for (int i = 0; i < 9; i++)
        cr_assert_eq(g.step_rc[i], 0, "send %d: %d", i, g.step_rc[i]);
    struct end *e = &g.srv_end;
    cr_assert_eq(e->n_frames, 5, "frames: %d", e->n_frames);
    assert_frame_is_msg(e, 0, 0);
    assert_frame_is_msg(e, 1, 1);
    assert_frame_is_msg(e, 2, 2);
    cr_assert_eq(e->kinds[3], SLB_FRAME_PING);
    assert_frame_is_msg(e, 4, 3);
    assert_took_msgs(e, 0, 4);
    cr_assert_eq(atomic_load(&e->a_tls_failed), 0);
}

Test(sip_stream, unframable_input_is_one_fatal_frame_and_the_owner_closes, .timeout = 30)
{
    make_msgs(1, 50);
    fx_start(NULL, NULL);
    int fd = client_socket(g.srv.port, 0);
    wait_for(&g.srv_end.a_opened, 1, "the accept");
    /* A message, then a CR that no LF follows: RFC 3261 7.5 allows only CRLFs between
     * messages, so the stream cannot be framed past it. */
    char buf[MSG_CAP + 16];
    size_t len = concat(buf, sizeof(buf), 0, 1);
    memcpy(buf + len, "\rXYZ\r\n\r\n", 9);
    cr_assert(h_write_all(fd, buf, len + 9));
    wait_for(&g.srv_end.a_closed, 1, "the close");
    cr_assert(h_read_eof(fd), "the peer saw the close");
    close(fd);
    fx_stop();

    struct end *e = &g.srv_end;
    cr_assert_eq(e->n_frames, 2, "frames: %d", e->n_frames);
    assert_frame_is_msg(e, 0, 0);
    cr_assert_eq(e->kinds[1], SLB_FRAME_FATAL);
    cr_assert_eq(e->state_at_close, SLB_STREAM_CLOSING);
    assert_took_msgs(e, 0, 1);
}

/* An owner that says "go on" after a fatal frame: the stream ends anyway (a fatal frame
 * has no length, so going on would frame the same bytes forever), counted. */
Test(sip_stream, a_fatal_frame_ends_the_stream_whatever_the_owner_says, .timeout = 30)
{
    make_msgs(1, 50);
    fx_start(NULL, NULL);
    g.srv_end.ignore_fatal = true; /* set like refuse_at: before the client writes */
    int fd = client_socket(g.srv.port, 0);
    wait_for(&g.srv_end.a_opened, 1, "the accept");
    char buf[MSG_CAP + 16];
    size_t len = concat(buf, sizeof(buf), 0, 1);
    memcpy(buf + len, "\rXYZ\r\n\r\n", 9);
    cr_assert(h_write_all(fd, buf, len + 9));
    wait_for(&g.srv_end.a_closed, 1, "the close");
    cr_assert(h_read_eof(fd), "the peer saw the close");
    close(fd);
    fx_stop();
    struct end *e = &g.srv_end;
    cr_assert_eq(e->n_frames, 2, "frames: %d", e->n_frames);
    cr_assert_eq(e->kinds[1], SLB_FRAME_FATAL);
    cr_assert_eq(atomic_load(&g.env.c.closed_bad_input), 1);
}

/* ---- 2. stopping and holding ---------------------------------------------------------- */

static void cmd_resume_srv(void)
{
    g.srv_end.s.held = false;
    slb_stream_resume(&g.srv_end.s);
    take_snap(&g.snap_srv, &g.srv_end);
}

Test(sip_stream, refused_frame_and_what_follows_stay_pending_until_resume, .timeout = 30)
{
    make_msgs(3, 200);
    fx_start(NULL, NULL);
    g.srv_end.refuse_at = 1;
    int fd = client_socket(g.srv.port, 0);
    wait_for(&g.srv_end.a_opened, 1, "the accept");
    char all[3 * MSG_CAP];
    size_t len = concat(all, sizeof(all), 0, 3);
    cr_assert(h_write_all(fd, all, len));
    wait_for(&g.srv_end.a_refused, 1, "the refusal");
    /* Everything has arrived, and nothing more was framed. */
    for (int i = 0; i < WAIT_MS && atomic_load(&g.srv_end.a_data_bytes) < (long long)len; i++)
        sleep_ms(1);
    cr_assert_eq(atomic_load(&g.srv_end.a_data_bytes), (long long)len);
    sleep_ms(20);
    run_cmd(cmd_snap);
    cr_assert_eq(g.snap_srv.n_frames, 1);
    cr_assert(g.snap_srv.pending, "the rest is pending");
    cr_assert_eq(g.snap_srv.pending_len, g_msg_len[1] + g_msg_len[2]);
    cr_assert_eq(g.snap_srv.state, SLB_STREAM_OPEN);
    run_cmd(cmd_resume_srv);
    cr_assert_eq(g.snap_srv.n_frames, 3, "resume delivered the rest");
    cr_assert_not(g.snap_srv.pending, "nothing is left pending");
    close(fd);
    wait_for(&g.srv_end.a_closed, 1, "the close");
    fx_stop();

    struct end *e = &g.srv_end;
    cr_assert_eq(atomic_load(&e->a_refused), 1);
    assert_frame_is_msg(e, 0, 0);
    assert_frame_is_msg(e, 1, 1);
    assert_frame_is_msg(e, 2, 2);
    assert_took_msgs(e, 0, 3);
}

static void cmd_cli_send_msg2(void)
{
    struct iovec v = {g_msg[2], g_msg_len[2]};
    g.misc_rc = slb_stream_send(&g.cli_end.s, &v, 1, g_msg_len[2]);
}

/* Messages 0 and 1 arrive; the server end holds itself when it is about to take message 1;
 * message 2 arrives while it is held. plain: from a blocking client; else from the client
 * end in the loop. */
static void held_input_is_kept_and_delivered_after_resume(bool plain)
{
    make_msgs(3, 150);
    if (plain)
        fx_start(NULL, NULL);
    else
        fx_start(server_ctx(), client_ctx("ca.pem"));
    g.srv_end.refuse_at = 1;
    g.srv_end.hold_on_refuse = true;
    int fd = -1;
    if (plain) {
        fd = client_socket(g.srv.port, 0);
        wait_for(&g.srv_end.a_opened, 1, "the accept");
        char two[2 * MSG_CAP];
        size_t len = concat(two, sizeof(two), 0, 2);
        cr_assert(h_write_all(fd, two, len));
    } else {
        g.steps[0] = (struct step){2, {{0, 0, g_msg_len[0]}, {1, 0, g_msg_len[1]}}};
        g.n_steps = 1;
        connect_tls_pair();
    }
    wait_for(&g.srv_end.a_refused, 1, "the hold");
    run_cmd(cmd_snap);
    cr_assert(g.snap_srv.held);
    cr_assert_eq(g.snap_srv.n_frames, 1);
    cr_assert(g.snap_srv.pending);
    cr_assert_eq(g.snap_srv.pending_len, g_msg_len[1]);

    int reads = atomic_load(&g.srv_end.a_data);
    if (plain) {
        cr_assert(h_write_all(fd, g_msg[2], g_msg_len[2]));
    } else {
        run_cmd(cmd_cli_send_msg2);
        cr_assert_eq(g.misc_rc, 0);
    }
    wait_for(&g.srv_end.a_data, reads + 1, "input while held");
    sleep_ms(20);
    run_cmd(cmd_snap);
    cr_assert(g.snap_srv.held);
    cr_assert_eq(g.snap_srv.n_frames, 1, "nothing is framed while held");
    cr_assert_eq(g.snap_srv.pending_len, g_msg_len[1] + g_msg_len[2],
                 "the input that came while held is kept behind the rest: %u",
                 g.snap_srv.pending_len);
    run_cmd(cmd_resume_srv);
    cr_assert_eq(g.snap_srv.n_frames, 3, "resume delivered what was held");
    cr_assert_not(g.snap_srv.pending);
    if (fd >= 0)
        close(fd);
    fx_stop();

    struct end *e = &g.srv_end;
    assert_frame_is_msg(e, 0, 0);
    assert_frame_is_msg(e, 1, 1);
    assert_frame_is_msg(e, 2, 2);
    assert_took_msgs(e, 0, 3);
    cr_assert_eq(atomic_load(&e->a_tls_failed), 0);
}

Test(sip_stream, plain_held_input_is_kept_and_delivered_after_resume, .timeout = 30)
{
    held_input_is_kept_and_delivered_after_resume(true);
}

Test(sip_stream, tls_held_input_is_kept_and_delivered_after_resume, .timeout = 30)
{
    held_input_is_kept_and_delivered_after_resume(false);
}

/* ---- 3. whole-or-nothing output --------------------------------------------------------- */

/* Sends messages 0, 1, ... on e until one is refused; each in two pieces, which a write
 * that is not whole-or-nothing would cut between. */
static void fill(struct end *e)
{
    for (unsigned i = 0; i < MSGS_MAX; i++) {
        size_t half = g_msg_len[i] / 2;
        struct iovec v[2] = {{g_msg[i], half}, {g_msg[i] + half, g_msg_len[i] - half}};
        int rc = slb_stream_send(&e->s, v, 2, g_msg_len[i]);
        if (rc < 0) {
            g.refused_msg = (int)i;
            g.refused_rc = rc;
            g.queued_at_refusal = slb_conn_out_queued(e->s.conn);
            return;
        }
        g.n_sent++;
    }
}

static void cmd_fill_srv(void)
{
    fill(&g.srv_end);
}

Test(sip_stream, plain_send_is_whole_or_nothing_and_retried_after_the_peer_reads, .timeout = 30)
{
    make_msgs(MSGS_MAX, 1800);
    g.out_cap = 40000; /* low-water 10000: well above what the kernel buffers hold */
    g.sndbuf = 4096;
    fx_start(NULL, NULL);
    int fd = client_socket(g.srv.port, 4096);
    wait_for(&g.srv_end.a_opened, 1, "the accept");
    run_cmd(cmd_fill_srv);
    cr_assert_eq(g.refused_rc, -ENOBUFS, "the fill ended on -ENOBUFS: %d", g.refused_rc);
    cr_assert_geq(g.n_sent, 2);
    size_t sent = 0;
    for (int i = 0; i < g.n_sent; i++)
        sent += g_msg_len[i];
    cr_assert_eq(g.queued_at_refusal, sent, "only whole messages were queued (%zu of %zu)",
                 g.queued_at_refusal, sent);
    cr_assert_leq(g.queued_at_refusal, g.out_cap);
    /* The peer reads nothing yet: the queue stays above its low-water mark. */
    sleep_ms(150);
    cr_assert_eq(atomic_load(&g.srv_end.a_drained), 0, "drained before the peer read");
    cr_assert_eq(atomic_load(&g.a_retried), 0);

    /* The peer reads: on_drained, the refused message goes out whole. */
    static char want[MSGS_MAX * MSG_CAP], got[MSGS_MAX * MSG_CAP];
    size_t want_len = concat(want, sizeof(want), 0, (unsigned)g.n_sent + 1);
    size_t got_len = h_read_n(fd, got, want_len);
    cr_assert_eq(got_len, want_len, "the peer got %zu of %zu bytes", got_len, want_len);
    cr_assert_arr_eq(got, want, want_len, "the peer got whole messages in order");
    cr_assert_geq(atomic_load(&g.srv_end.a_drained), 1);
    cr_assert_eq(atomic_load(&g.a_retried), 1);
    /* And nothing after them: the refused send had written nothing. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char extra;
    cr_assert_lt(read(fd, &extra, 1), 0, "a byte more than the messages sent");
    close(fd);
    fx_stop();
    cr_assert_eq(g.retry_rc, 0, "the retried send: %d", g.retry_rc);
}

static void cmd_fill_srv_and_snap(void)
{
    fill(&g.srv_end);
    take_snap(&g.snap_srv, &g.srv_end);
}

Test(sip_stream, tls_send_is_whole_or_nothing_and_retried_on_drained, .timeout = 30)
{
    make_msgs(MSGS_MAX, 1500);
    g.out_cap = 12000;
    fx_start(server_ctx(), client_ctx("ca.pem"));
    connect_tls_pair();
    sleep_ms(50); /* the server's tickets have gone out */
    run_cmd(cmd_fill_srv_and_snap);
    cr_assert_eq(g.refused_rc, -ENOBUFS, "the fill ended on -ENOBUFS: %d", g.refused_rc);
    cr_assert_geq(g.n_sent, 2);
    cr_assert_leq(g.queued_at_refusal, g.out_cap);
    cr_assert_eq(g.snap_srv.state, SLB_STREAM_OPEN, "a refusal leaves the stream open");
    wait_for(&g.a_retried, 1, "on_drained's retry");
    wait_for(&g.cli_end.a_frames, g.n_sent + 1, "every message at the client end");
    sleep_ms(30);
    fx_stop();

    cr_assert_eq(g.retry_rc, 0, "the retried send: %d", g.retry_rc);
    cr_assert_geq(g.srv_end.flush_rc, 0);
    struct end *e = &g.cli_end;
    cr_assert_eq(e->n_frames, g.n_sent + 1);
    for (int i = 0; i <= g.n_sent; i++)
        assert_frame_is_msg(e, i, (unsigned)i);
    assert_took_msgs(e, 0, (unsigned)g.n_sent + 1);
    cr_assert_eq(atomic_load(&g.srv_end.a_tls_failed), 0);
    cr_assert_eq(atomic_load(&e->a_tls_failed), 0);
}

/* ---- 4. redial backoff ----------------------------------------------------------------- */

static void cmd_backoff_sequence(void)
{
    struct slb_loop *loop = &g.srv.loop;
    g.n_seq = 0;
    for (int i = 0; i < 5; i++)
        g.seq[g.n_seq++] = slb_redial_backoff(&g.redial, loop);
    slb_redial_ok(&g.redial);
    g.seq[g.n_seq++] = slb_redial_backoff(&g.redial, loop);
    g.seq[g.n_seq++] = slb_redial_backoff(&g.redial, loop);
    /* Deinit cancels the armed timer: it must never fire. */
    slb_redial_deinit(&g.redial);
}

Test(sip_stream, redial_backoff_doubles_to_its_bound_and_ok_starts_over, .timeout = 30)
{
    g.redial_min_ms = 15;
    g.redial_max_ms = 100;
    fx_start(NULL, NULL);
    run_cmd(cmd_backoff_sequence);
    sleep_ms(250);
    int fires = atomic_load(&g.a_fires);
    fx_stop();
    static const uint32_t want[] = {15, 30, 60, 100, 100, 15, 30};
    cr_assert_eq(g.n_seq, 7);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(g.seq[i], want[i], "delay %d: %u, want %u", i, g.seq[i], want[i]);
    cr_assert_eq(fires, 0, "a timer fired after slb_redial_deinit");
}

static void cmd_ok_then_backoff(void)
{
    slb_redial_ok(&g.redial);
    g.seq[0] = slb_redial_backoff(&g.redial, &g.srv.loop);
    g.n_seq = 1;
}

Test(sip_stream, failed_dials_wait_the_backoff_on_the_loop_timer, .timeout = 30)
{
    g.redial_min_ms = 20;
    g.redial_max_ms = 70;
    g.backoff_on_fail = true;
    g.dials_max = 5;
    fx_start(NULL, NULL);
    g.dial_port = h_closed_port();
    cr_assert_neq(g.dial_port, 0);
    run_cmd(cmd_dial);
    cr_assert_eq(g.dial_rc, 0, "slb_redial_connect: %s", strerror(-g.dial_rc));
    wait_for(&g.a_fires, 5, "five redial timers");
    sleep_ms(150); /* the fifth fire dials no more */
    int connects = atomic_load(&g.a_connects);
    run_cmd(cmd_ok_then_backoff);
    wait_for(&g.a_fires, 6, "the timer after slb_redial_ok");
    fx_stop();

    cr_assert_eq(connects, 5, "dials: %d", connects);
    cr_assert_eq(atomic_load(&g.a_connect_fails), 5);
    static const uint32_t want[] = {20, 40, 70, 70, 70};
    for (int i = 0; i < 5; i++) {
        cr_assert_lt(g.connect_res[i], 0, "dial %d failed", i);
        cr_assert_eq(g.delays[i], want[i], "delay %d: %u, want %u", i, g.delays[i], want[i]);
        uint64_t waited = g.fire_ms[i] - g.fail_ms[i];
        cr_assert_geq(waited, want[i], "fire %d after %llu ms, before its %u ms", i,
                      (unsigned long long)waited, want[i]);
        cr_assert_lt(waited, want[i] + 1000u, "fire %d after %llu ms", i,
                     (unsigned long long)waited);
    }
    cr_assert(g.fire_container_ok, "the timer is the redial's");
    cr_assert_eq(g.seq[0], 20, "after slb_redial_ok: %u", g.seq[0]);
    cr_assert_eq(atomic_load(&g.cli_end.a_opened), 0);
}

/* ---- 5. TLS session resumption ---------------------------------------------------------- */

static void cmd_close_cli(void)
{
    slb_stream_close(&g.cli_end.s, true);
}

Test(sip_stream, second_dial_resumes_the_session_kept_from_the_first, .timeout = 30)
{
    g.keep_sessions = true;
    fx_start(server_ctx(), client_ctx("ca.pem"));
    connect_tls_pair();
    /* TLS 1.3 tickets come after the handshake: the client end reads them. */
    wait_for(&g.cli_end.a_sessions, 1, "a session ticket at the client");
    run_cmd(cmd_snap);
    cr_assert(g.snap_cli.session_kept, "slb_redial_keep_session kept it");
    run_cmd(cmd_close_cli);
    wait_for(&g.cli_end.a_closed, 1, "the client's close");
    wait_for(&g.srv_end.a_closed, 1, "the server's close");
    run_cmd(cmd_dial);
    cr_assert_eq(g.dial_rc, 0);
    wait_for(&g.cli_end.a_hs, 2, "the second client handshake");
    wait_for(&g.srv_end.a_hs, 2, "the second server handshake");
    fx_stop();

    cr_assert_not(g.cli_end.resumed[0], "the first handshake is a full one");
    cr_assert(g.cli_end.resumed[1], "the client resumed");
    cr_assert(g.srv_end.resumed[1], "the server resumed");
    cr_assert_eq(atomic_load(&g.cli_end.a_tls_failed), 0);
}

/* ---- 6. TLS failure --------------------------------------------------------------------- */

Test(sip_stream, untrusted_server_certificate_fails_the_client_once_then_closes, .timeout = 30)
{
    fx_start(server_ctx(), client_ctx("other-ca.pem"));
    g.dial_port = g.srv.port;
    run_cmd(cmd_dial);
    cr_assert_eq(g.dial_rc, 0);
    wait_for(&g.cli_end.a_closed, 1, "the client's close");
    wait_for(&g.srv_end.a_closed, 1, "the server's close");
    sleep_ms(30);
    fx_stop();

    struct end *e = &g.cli_end;
    cr_assert_eq(atomic_load(&e->a_tls_failed), 1, "tls_failed: %d", atomic_load(&e->a_tls_failed));
    cr_assert_lt(e->tls_failed_rc, 0);
    cr_assert_eq(e->tls_fail_reason, SLB_TLS_FAIL_BAD_CERT, "reason %d", e->tls_fail_reason);
    cr_assert_eq(e->state_at_close, SLB_STREAM_CLOSING);
    cr_assert_eq(atomic_load(&e->a_hs), 0);
    cr_assert_eq(e->n_frames, 0);
    cr_assert_eq(atomic_load(&e->a_closed), 1);
}

Test(sip_stream, server_speaking_garbage_fails_the_client_once_then_closes, .timeout = 30)
{
    fx_start(NULL, client_ctx("ca.pem"));
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(lfd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t slen = sizeof(sin);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    g.dial_port = ntohs(sin.sin_port);
    run_cmd(cmd_dial);
    cr_assert_eq(g.dial_rc, 0);
    int fd = accept(lfd, NULL, NULL);
    cr_assert_geq(fd, 0, "accept: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char hello[512];
    cr_assert_gt(read(fd, hello, sizeof(hello)), 0, "a ClientHello");
    static const char junk[] = "SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    cr_assert(h_write_all(fd, junk, sizeof(junk) - 1));
    wait_for(&g.cli_end.a_closed, 1, "the client's close");
    /* The client end closed its connection: the peer reads (an alert, maybe) then EOF. */
    bool eof = false;
    for (int i = 0; i < 64 && !eof; i++) {
        ssize_t r = read(fd, hello, sizeof(hello));
        eof = r == 0 || (r < 0 && errno == ECONNRESET);
        if (r < 0 && !eof)
            break;
    }
    close(fd);
    close(lfd);
    fx_stop();

    struct end *e = &g.cli_end;
    cr_assert(eof, "the peer saw the connection end");
    cr_assert_eq(atomic_load(&e->a_tls_failed), 1);
    cr_assert_lt(e->tls_failed_rc, 0);
    cr_assert_neq(e->tls_fail_reason, SLB_TLS_FAIL_NONE);
    cr_assert_eq(e->state_at_close, SLB_STREAM_CLOSING);
    cr_assert_eq(atomic_load(&e->a_hs), 0);
    cr_assert_eq(e->n_frames, 0);
}

/* ---- 7. the peer's close_notify ---------------------------------------------------------- */

static void cmd_srv_close_notify(void)
{
    /* close_notify only: the server's connection stays open (no FIN from it). */
    g.misc_rc = slb_tls_close(&g.srv_end.s.tls);
}

Test(sip_stream, peer_close_notify_shuts_the_stream_down, .timeout = 30)
{
    fx_start(server_ctx(), client_ctx("ca.pem"));
    connect_tls_pair();
    run_cmd(cmd_srv_close_notify);
    cr_assert_eq(g.misc_rc, 0);
    wait_for(&g.cli_end.a_closed, 1, "the client's close");
    /* The client's shutdown (its close_notify and FIN) ends the server's side too. */
    wait_for(&g.srv_end.a_closed, 1, "the server's close");
    fx_stop();

    struct end *e = &g.cli_end;
    cr_assert_eq(atomic_load(&e->a_peer_closed), 1);
    cr_assert_eq(e->state_at_close, SLB_STREAM_CLOSING, "the stream shut down (state %d)",
                 e->state_at_close);
    cr_assert_eq(e->close_reason, 0);
    cr_assert_eq(atomic_load(&e->a_tls_failed), 0);
}

static void cmd_hold_srv(void)
{
    g.srv_end.s.held = true;
}

static void cmd_cli_close_notify(void)
{
    g.misc_rc = slb_tls_close(&g.cli_end.s.tls);
}

/* tls/ reports a close_notify once: one that arrives while the stream is held must still
 * shut it down after resume. */
Test(sip_stream, close_notify_that_arrives_while_held_shuts_down_after_resume, .timeout = 30)
{
    fx_start(server_ctx(), client_ctx("ca.pem"));
    connect_tls_pair();
    sleep_ms(30); /* tickets and the like are read */
    run_cmd(cmd_hold_srv);
    int reads = atomic_load(&g.srv_end.a_data);
    run_cmd(cmd_cli_close_notify);
    cr_assert_eq(g.misc_rc, 0);
    wait_for(&g.srv_end.a_data, reads + 1, "the close_notify at the held server");
    sleep_ms(20);
    run_cmd(cmd_resume_srv);
    wait_for(&g.srv_end.a_closed, 1, "the server's shutdown after resume");
    wait_for(&g.cli_end.a_closed, 1, "the client's close");
    fx_stop();

    struct end *e = &g.srv_end;
    cr_assert_eq(e->state_at_close, SLB_STREAM_CLOSING, "the stream shut down (state %d)",
                 e->state_at_close);
    cr_assert_eq(atomic_load(&e->a_tls_failed), 0);
}
