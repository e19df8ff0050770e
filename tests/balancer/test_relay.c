/* The relay worker (balancer/worker-priv.h lists its files) tested whole, one suite per
 * file: real sipslb workers and the health checker, started in this process as
 * balancer/main.c starts them, on loopback in front of one or two mock SIPS backends that
 * this process runs too, with plain blocking test clients on a tcp:// listener.
 *
 *   route_request   where a client's request goes: Maglev on the Call-ID, 483, 503 with
 *                   Retry-After, the pending-INVITE map for a CANCEL
 *   relay_response  a response goes back to the connection our Via names; forged, foreign
 *                   and stale ones are dropped
 *   toward_client   a backend's request reaches a phone by the flow token of its Path; 403
 *                   for a bad token, 430 for a gone flow
 *   worker_handoff  the same when the phone is on the other worker, and back
 *   backend_links   links lost with their backend, redialled, in use again
 *
 * A mock backend is an io/ loop on its own thread whose SIP streams (sip_stream.h) answer
 * every request with 200, INVITE with 100 then 200 (only 100 when its Call-ID starts with
 * "hold-"), ACK with nothing; it records every message it gets (health probes aside). The
 * test thread asks it to send a message through a command slot its 2 ms timer polls. The
 * counters asserted are the workers' own (slb_worker_add_counters). Every wait is bounded;
 * Criterion runs each test in a process of its own, and the fixture's fini stops every
 * thread a test started. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "balancer/config.h"
#include "balancer/health.h"
#include "balancer/router.h"
#include "balancer/sip_stream.h"
#include "balancer/token.h"
#include "balancer/worker.h"
#include "core/limit.h"
#include "core/log.h"
#include "core/sip.h"
#include "io/conn.h"
#include "io/loop.h"
#include "io/threads.h"
#include "io/timer.h"
#include "tls/tls.h"

#define CERTS         SLB_TLS_TEST_CERTS
#define WAIT_MS       5000 /* every wait's bound */
#define QUIET_MS      300  /* how long "nothing arrives" is watched */
#define MSG_CAP       8192u
#define RAW_MAX       2048u /* bytes of a recorded message kept */
#define RECS_MAX      256   /* messages one mock backend records */
#define MOCK_CONNS    64u
#define TICK_MS       2u
#define MAX_WORKERS   2u
#define MAX_BACKENDS  2u
#define RETRY_AFTER_S 7
#define ARGS_MAX      32
#define RESPONSE      (-1) /* "a response" where a request method is asked for */

/* ---- SIP text ------------------------------------------------------------------------ */

struct scanned {
    struct slb_sip_msg m;
    struct slb_sip_header h[SLB_SIP_MAX_HEADERS_DEFAULT];
};

static bool scan(const char *buf, size_t len, struct scanned *s)
{
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    return slb_sip_scan(buf, len, &lim, &s->m, s->h, SLB_SIP_MAX_HEADERS_DEFAULT) == 0;
}

static void copy_slice(struct slb_slice v, char *out, size_t cap)
{
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    if (n)
        memcpy(out, v.ptr, n);
    out[n] = '\0';
}

/* The first header of this id (SLB_HDR_*), or named so (any case) when id is
 * SLB_HDR_OTHER, copied into out ("" when absent). */
static const char *header(const struct slb_sip_msg *m, unsigned id, const char *name, char *out,
                          size_t cap)
{
    out[0] = '\0';
    for (uint32_t i = 0; i < m->header_count; i++) {
        const struct slb_sip_header *h = &m->headers[i];
        if (id != SLB_HDR_OTHER ? h->id == id : slb_slice_eq_nocase(h->name, name)) {
            copy_slice(h->value, out, cap);
            break;
        }
    }
    return out;
}

/* Appends to out[*n, cap), clamped. */
static void put(char *out, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void put(char *out, size_t cap, size_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(out + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (k > 0)
        *n += (size_t)k < cap - *n ? (size_t)k : cap - *n - 1;
}

/* A UAS's response to request m (RFC 3261 8.2.6): Via, From, Call-ID, CSeq copied, To with
 * a tag added, Record-Route copied but into a 100 (12.1.1). Returns its length. */
static size_t response_to(const char *base, const struct slb_sip_msg *m, int status,
                          const char *reason, char *out, size_t cap)
{
    size_t n = 0;
    put(out, cap, &n, "SIP/2.0 %d %s\r\n", status, reason);
    for (uint32_t i = 0; i < m->header_count; i++) {
        const struct slb_sip_header *h = &m->headers[i];
        if (h->id == SLB_HDR_TO && !m->to_tag.ptr && status > 100) {
            put(out, cap, &n, "To: %.*s;tag=uas%d\r\n", (int)h->value.len, h->value.ptr, status);
            continue;
        }
        if (h->id == SLB_HDR_VIA || h->id == SLB_HDR_FROM || h->id == SLB_HDR_CALL_ID ||
            h->id == SLB_HDR_CSEQ || h->id == SLB_HDR_TO ||
            (h->id == SLB_HDR_RECORD_ROUTE && status > 100))
            put(out, cap, &n, "%.*s", (int)h->line_len, base + h->line_off);
    }
    put(out, cap, &n, "Content-Length: 0\r\n\r\n");
    return n;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

/* A loopback port nobody listens on now (bound, then closed). */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = loopback(0);
    socklen_t len = sizeof(sin);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
                  getsockname(fd, (struct sockaddr *)&sin, &len) == 0,
              "no free loopback port: %s", strerror(errno));
    close(fd);
    return ntohs(sin.sin_port);
}

/* ---- the mock backend ---------------------------------------------------------------- */

/* One message a mock got. */
struct rec {
    bool request;
    uint8_t method;  /* enum slb_sip_method (requests) */
    uint16_t status; /* (responses) */
    uint64_t conn;   /* the mock's connection it came on (one of sipslb's links) */
    char call_id[96];
    char top_via[256];
    char path[256];
    size_t raw_len;
    char raw[RAW_MAX];
};

enum { CMD_IDLE, CMD_PENDING, CMD_DONE };

/* A mock SIPS backend. Owned by the fixture; the loop's thread writes everything but the
 * command slot's inputs; the test thread reads recs under mu, the atomics any time. */
struct mock {
    struct slb_loop loop;
    pthread_t thread;
    bool running;
    atomic_int state; /* 0 starting, 1 running, -1 failed (rc says why) */
    int rc;
    uint16_t port; /* 0 before the first start: any */
    struct slb_tls_ctx *ctx;
    struct slb_stream_env env;
    bool env_ready;
    struct slb_stream streams[MOCK_CONNS]; /* by io/ slot */
    struct slb_timer tick;
    char out[MSG_CAP];
    atomic_int bad_frames;
    pthread_mutex_t mu;
    struct rec recs[RECS_MAX];
    int n_recs;
    /* The command slot: the test thread fills it while CMD_IDLE, the tick sends it. */
    atomic_int cmd;
    uint64_t cmd_conn;
    size_t cmd_len;
    int cmd_rc;
    char cmd_buf[MSG_CAP];
};

static struct mock *mock_of(struct slb_stream *s)
{
    return (struct mock *)(void *)((char *)s->env - offsetof(struct mock, env));
}

static void mock_record(struct mock *mk, struct slb_stream *s, const char *base,
                        const struct slb_sip_msg *m)
{
    pthread_mutex_lock(&mk->mu);
    if (mk->n_recs < RECS_MAX) {
        struct rec *r = &mk->recs[mk->n_recs++];
        r->request = m->is_request;
        r->method = m->method_id;
        r->status = m->status;
        r->conn = s->id.v;
        copy_slice(m->call_id, r->call_id, sizeof(r->call_id));
        copy_slice(m->via_count ? m->vias[0].value : (struct slb_slice){NULL, 0}, r->top_via,
                   sizeof(r->top_via));
        header(m, SLB_HDR_PATH, NULL, r->path, sizeof(r->path));
        r->raw_len = m->msg_len < RAW_MAX ? m->msg_len : RAW_MAX;
        memcpy(r->raw, base, r->raw_len);
    }
    pthread_mutex_unlock(&mk->mu);
}

static void mock_reply(struct mock *mk, struct slb_stream *s, const char *base,
                       const struct slb_sip_msg *m, int status, const char *reason)
{
    size_t n = response_to(base, m, status, reason, mk->out, sizeof(mk->out));
    struct iovec iov = {mk->out, n};
    if (slb_stream_send(s, &iov, 1, n) < 0)
        slb_stream_close(s, false);
}

static bool starts(struct slb_slice v, const char *prefix)
{
    size_t n = strlen(prefix);
    return v.len >= n && !memcmp(v.ptr, prefix, n);
}

static bool mock_frame(struct slb_stream *s, const char *base, const struct slb_sip_frame *fr,
                       const struct slb_sip_msg *m)
{
    struct mock *mk = mock_of(s);
    if (fr->kind == SLB_FRAME_PING) {
        struct iovec iov = {"\r\n", 2};
        (void)slb_stream_send(s, &iov, 1, 2);
        return true;
    }
    if (fr->kind == SLB_FRAME_BAD || fr->kind == SLB_FRAME_FATAL) {
        atomic_fetch_add(&mk->bad_frames, 1);
        if (fr->kind == SLB_FRAME_FATAL)
            slb_stream_close(s, true);
        return fr->kind == SLB_FRAME_BAD;
    }
    if (fr->kind != SLB_FRAME_MESSAGE)
        return true;
    if (!starts(m->call_id, "slbprobe"))
        mock_record(mk, s, base, m);
    if (!m->is_request || m->method_id == SLB_METHOD_ACK)
        return true;
    if (m->method_id == SLB_METHOD_INVITE) {
        mock_reply(mk, s, base, m, 100, "Trying");
        if (starts(m->call_id, "hold-"))
            return true;
    }
    mock_reply(mk, s, base, m, 200, "OK");
    return true;
}

static const struct slb_stream_ops mock_ops = {.frame = mock_frame};

static int mock_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    struct mock *mk = slb_loop_user(loop);
    struct slb_stream *s = &mk->streams[slb_conn_id_slot(conn->id)];
    return slb_stream_open(&mk->env, s, conn, mk->ctx, NULL, s);
}

static int mock_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len)
{
    (void)loop;
    if (conn->owner)
        slb_stream_input(conn->owner, data, len);
    return 0;
}

static void mock_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    (void)loop;
    struct slb_stream *s = conn->owner;
    if (!s)
        return;
    int ev = slb_stream_flush(s);
    if (ev > 0 && (ev & SLB_TLS_EV_MORE) && !(ev & SLB_TLS_EV_WANT_WRITE))
        slb_stream_input(s, NULL, 0);
}

static void mock_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    (void)loop;
    (void)reason;
    struct slb_stream *s = conn->owner;
    if (!s)
        return;
    conn->owner = NULL;
    slb_stream_release(s);
}

/* The command slot, on the loop's thread. */
static void mock_tick(struct slb_timer *t)
{
    struct mock *mk = slb_timer_entry(t, struct mock, tick);
    if (atomic_load(&mk->cmd) == CMD_PENDING) {
        struct slb_conn *conn = slb_conn_get(&mk->loop, (struct slb_conn_id){mk->cmd_conn});
        struct slb_stream *s = conn ? conn->owner : NULL;
        struct iovec iov = {mk->cmd_buf, mk->cmd_len};
        mk->cmd_rc = s ? slb_stream_send(s, &iov, 1, mk->cmd_len) : -ENOTCONN;
        atomic_store(&mk->cmd, CMD_DONE);
    }
    slb_timer_arm(slb_loop_wheel(&mk->loop), t, TICK_MS);
}

static int mock_listen(struct mock *mk)
{
    struct sockaddr_in sin = loopback(mk->port);
    int idx = slb_loop_listen(&mk->loop, (struct sockaddr *)&sin, sizeof(sin), 64, 1);
    if (idx < 0)
        return idx;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int rc = slb_loop_listener_addr(&mk->loop, idx, &ss, &len);
    if (rc == 0)
        mk->port = ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port);
    return rc;
}

static void *mock_main(void *arg)
{
    struct mock *mk = arg;
    struct slb_loop_opts opts = {.max_conns = MOCK_CONNS, .stop_grace_ms = 1000};
    struct slb_loop_cbs cbs = {.on_accept = mock_accept,
                               .on_data = mock_data,
                               .on_drained = mock_drained,
                               .on_close = mock_close};
    mk->rc = slb_loop_init(&mk->loop, &opts, &cbs, mk);
    if (mk->rc == 0 && (mk->rc = mock_listen(mk)) < 0)
        slb_loop_deinit(&mk->loop);
    if (mk->rc < 0) {
        atomic_store(&mk->state, -1);
        slb_tls_thread_cleanup();
        return NULL;
    }
    slb_timer_init(&mk->tick, mock_tick);
    slb_timer_arm(slb_loop_wheel(&mk->loop), &mk->tick, TICK_MS);
    atomic_store(&mk->state, 1);
    slb_loop_run(&mk->loop);
    slb_timer_cancel(&mk->tick);
    slb_loop_deinit(&mk->loop);
    slb_tls_thread_cleanup();
    return NULL;
}

/* Starts mock mk: on any port the first time, on the same one after a stop. */
static void mock_start(struct mock *mk)
{
    if (!mk->ctx) {
        char err[256];
        struct slb_tls_server_opts so = {.cert_file = CERTS "/server-ec.pem",
                                         .key_file = CERTS "/server-ec.key"};
        mk->ctx = slb_tls_server_ctx_new(&so, err, sizeof(err));
        cr_assert(mk->ctx, "mock backend's TLS context: %s", err);
        cr_assert_eq(
            slb_stream_env_init(&mk->env, &mock_ops, MOCK_CONNS, SLB_SIP_MAX_MSG_BYTES_DEFAULT), 0);
        mk->env_ready = true;
        pthread_mutex_init(&mk->mu, NULL);
    }
    memset(mk->streams, 0, sizeof(mk->streams));
    atomic_store(&mk->state, 0);
    atomic_store(&mk->cmd, CMD_IDLE);
    cr_assert_eq(pthread_create(&mk->thread, NULL, mock_main, mk), 0);
    for (int i = 0; i < WAIT_MS && atomic_load(&mk->state) == 0; i++)
        sleep_ms(1);
    int state = atomic_load(&mk->state);
    if (state != 1) {
        if (state == 0)
            slb_loop_stop(&mk->loop); /* started late: told to stop at once */
        pthread_join(mk->thread, NULL);
        if (mk->rc == -ENOSYS || mk->rc == -EPERM || mk->rc == -EOPNOTSUPP)
            cr_skip_test("the kernel refused io_uring: %s", strerror(-mk->rc));
        cr_assert_fail("mock backend did not start: %s", strerror(-mk->rc));
    }
    mk->running = true;
}

static void mock_stop(struct mock *mk)
{
    if (!mk->running)
        return;
    slb_loop_stop(&mk->loop);
    pthread_join(mk->thread, NULL);
    mk->running = false;
}

static void mock_free(struct mock *mk)
{
    mock_stop(mk);
    if (mk->env_ready) {
        slb_stream_env_deinit(&mk->env);
        pthread_mutex_destroy(&mk->mu);
    }
    slb_tls_ctx_free(mk->ctx);
    mk->ctx = NULL;
    mk->env_ready = false;
}

/* Has the mock send msg on its connection conn. Returns slb_stream_send's result. */
static int mock_send(struct mock *mk, uint64_t conn, const char *msg, size_t len)
{
    cr_assert(len <= sizeof(mk->cmd_buf) && atomic_load(&mk->cmd) == CMD_IDLE);
    memcpy(mk->cmd_buf, msg, len);
    mk->cmd_len = len;
    mk->cmd_conn = conn;
    atomic_store(&mk->cmd, CMD_PENDING);
    for (int i = 0; i < WAIT_MS && atomic_load(&mk->cmd) != CMD_DONE; i++)
        sleep_ms(1);
    cr_assert_eq(atomic_load(&mk->cmd), CMD_DONE, "the mock backend did not run its command");
    atomic_store(&mk->cmd, CMD_IDLE);
    return mk->cmd_rc;
}

/* Messages with this Call-ID mk recorded: requests of this method (0: any), or responses
 * (RESPONSE). The first is copied into out (may be NULL). */
static int mock_count(struct mock *mk, const char *call_id, int method, struct rec *out)
{
    int n = 0;
    pthread_mutex_lock(&mk->mu);
    for (int i = 0; i < mk->n_recs; i++) {
        const struct rec *r = &mk->recs[i];
        bool kind =
            method == RESPONSE ? !r->request : r->request && (!method || r->method == method);
        if (!kind || strcmp(r->call_id, call_id))
            continue;
        if (n++ == 0 && out)
            *out = *r;
    }
    pthread_mutex_unlock(&mk->mu);
    return n;
}

/* Waits (bounded) until mk recorded such a message; copies it into out. */
static bool mock_wait(struct mock *mk, const char *call_id, int method, struct rec *out)
{
    for (int i = 0; i < WAIT_MS / 2; i++) {
        if (mock_count(mk, call_id, method, out) > 0)
            return true;
        sleep_ms(2);
    }
    return false;
}

/* ---- sipslb in this process ---------------------------------------------------------- */

struct lb_opts {
    unsigned workers;
    unsigned backend_conns;
    bool backends_file; /* the backends listed in a file (reloadable), not by --backend */
};

/* sipslb's parts, as main.c holds them. Owned by the fixture; the test thread only. */
struct lb {
    char arg[ARGS_MAX][256]; /* the configuration keeps pointers into these */
    char *argv[ARGS_MAX];
    int argc;
    char file[64]; /* --backends-file, "" when none */
    struct slb_config cfg;
    unsigned n;
    uint16_t port;
    struct slb_tls_ctx *sctx[MAX_WORKERS], *cctx[MAX_WORKERS + 1];
    const struct slb_backends *in_force;
    struct slb_router router;
    bool router_ready, limits_ready, control_started, workers_started;
    struct slb_health *health;
    struct slb_limit_table limits;
    struct slb_shared sh;
    struct slb_worker *w[MAX_WORKERS];
    void *wargs[MAX_WORKERS];
    struct slb_threads workers, control;
};

static struct {
    struct mock mock[MAX_BACKENDS];
    unsigned n_mocks;
    struct lb lb;
    unsigned seq; /* makes branches unique */
} g;

/* One more flag for slb_config_load. */
static void arg(struct lb *lb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void arg(struct lb *lb, const char *fmt, ...)
{
    cr_assert(lb->argc < ARGS_MAX);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lb->arg[lb->argc], sizeof(lb->arg[0]), fmt, ap);
    va_end(ap);
    lb->argv[lb->argc] = lb->arg[lb->argc];
    lb->argc++;
}

/* The --backends-file: every mock, drain (may be -1) flagged ;drain. */
static void write_backends_file(const char *path, int drain)
{
    FILE *f = fopen(path, "w");
    cr_assert(f, "%s: %s", path, strerror(errno));
    for (unsigned i = 0; i < g.n_mocks; i++)
        fprintf(f, "sips:127.0.0.1:%u%s\n", g.mock[i].port, (int)i == drain ? ";drain" : "");
    cr_assert_eq(fclose(f), 0);
}

static void lb_args(struct lb *lb, const struct lb_opts *o)
{
    arg(lb, "sipslb");
    arg(lb, "--listen=tcp://127.0.0.1:%u", lb->port);
    /* What our Via, Record-Route and Path name (given: the only listener is tcp://). */
    arg(lb, "--advertise=127.0.0.1:%u", lb->port);
    arg(lb, "--cert=%s", CERTS "/server-ec.pem");
    arg(lb, "--key=%s", CERTS "/server-ec.key");
    if (o->backends_file) {
        int fd = mkstemp(strcpy(lb->file, "/tmp/test_relay-XXXXXX"));
        cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
        close(fd);
        write_backends_file(lb->file, -1);
        arg(lb, "--backends-file=%s", lb->file);
    }
    for (unsigned i = 0; i < g.n_mocks && !o->backends_file; i++)
        arg(lb, "--backend=sips:127.0.0.1:%u", g.mock[i].port);
    arg(lb, "--backend-verify=none");
    arg(lb, "--backend-conns=%u", o->backend_conns);
    arg(lb, "--workers=%u", o->workers);
    arg(lb, "--max-conns=64");
    arg(lb, "--max-message-size=16384");
    arg(lb, "--retry-after=%d", RETRY_AFTER_S);
    arg(lb, "--probe-interval=200ms");
    arg(lb, "--probe-timeout=200ms");
    arg(lb, "--fall=2");
    arg(lb, "--rise=1");
    arg(lb, "--limit-conn-rate=0");
    arg(lb, "--log-level=error");
}

static void lb_contexts(struct lb *lb)
{
    const struct slb_config *cfg = &lb->cfg;
    struct slb_tls_server_opts so = {
        .cert_files = cfg->cert.v, .key_files = cfg->key.v, .n_certs = cfg->cert.n};
    struct slb_tls_client_opts co = {.verify_server = SLB_TLS_VERIFY_NONE};
    char err[512];
    for (unsigned i = 0; i <= lb->n; i++) {
        if (i < lb->n) {
            lb->sctx[i] = slb_tls_server_ctx_new(&so, err, sizeof(err));
            cr_assert(lb->sctx[i], "%s", err);
        }
        lb->cctx[i] = slb_tls_client_ctx_new(&co, err, sizeof(err));
        cr_assert(lb->cctx[i], "%s", err);
    }
}

/* What main does between the contexts and the threads: backends, router, health checker,
 * per-source limits, the shared part, the workers. */
static void lb_build(struct lb *lb)
{
    const struct slb_config *cfg = &lb->cfg;
    lb->in_force = slb_backends_new(cfg);
    cr_assert(lb->in_force);
    cr_assert_eq(slb_router_init(&lb->router, cfg, lb->in_force, lb->n), 0);
    lb->router_ready = true;
    lb->health = slb_health_new(cfg, &lb->router, lb->in_force, lb->cctx[lb->n], lb->n);
    cr_assert(lb->health);
    struct slb_limit_conf lc = {.conns = (uint32_t)cfg->limit_conns,
                                .ban_after = (uint32_t)cfg->ban_after,
                                .ban_ms = (uint32_t)cfg->ban_time_ms};
    struct slb_siphash_key key;
    cr_assert_eq(getrandom(&key, sizeof(key), 0), (ssize_t)sizeof(key));
    cr_assert_eq(slb_limit_table_init(&lb->limits, &lc, &key, 1024), 0);
    lb->limits_ready = true;
    struct slb_shared *sh = &lb->sh;
    sh->cfg = cfg;
    sh->router = &lb->router;
    sh->health = lb->health;
    sh->workers = lb->w;
    sh->limits = &lb->limits;
    snprintf(sh->self.via_sent_by, sizeof(sh->self.via_sent_by), "%s", cfg->advertise_hostport);
    sh->self.via_sent_by_len = strlen(sh->self.via_sent_by);
    snprintf(sh->self.tcp_sent_by, sizeof(sh->self.tcp_sent_by), "%s", cfg->advertise_tcp);
    sh->self.tcp_sent_by_len = strlen(sh->self.tcp_sent_by);
    cr_assert_eq(getrandom(&sh->pending_key, sizeof(sh->pending_key), 0),
                 (ssize_t)sizeof(sh->pending_key));
    struct slb_siphash_key mac_key;
    uint32_t boot;
    cr_assert_eq(getrandom(&mac_key, sizeof(mac_key), 0), (ssize_t)sizeof(mac_key));
    cr_assert_eq(getrandom(&boot, sizeof(boot), 0), (ssize_t)sizeof(boot));
    slb_proxy_self_set_keys(&sh->self, &mac_key, 1, boot);
    for (unsigned i = 0; i < lb->n; i++) {
        lb->w[i] = slb_worker_new(sh, i, lb->sctx[i], lb->cctx[i]);
        cr_assert(lb->w[i]);
        lb->sctx[i] = NULL; /* the worker's now */
        lb->wargs[i] = lb->w[i];
    }
}

static struct slb_worker_counters counters(void)
{
    struct slb_worker_counters sum = {0};
    for (unsigned i = 0; i < g.lb.n; i++)
        slb_worker_add_counters(g.lb.w[i], &sum);
    return sum;
}

/* Waits (bounded) until a counter reaches want; returns its value then. */
static uint64_t wait_counter(size_t off, uint64_t want)
{
    uint64_t v = 0;
    for (int i = 0; i <= WAIT_MS / 5; i++) {
        struct slb_worker_counters c = counters();
        memcpy(&v, (const char *)&c + off, sizeof(v));
        if (v >= want)
            break;
        sleep_ms(5);
    }
    return v;
}

#define WAIT_COUNTER(name, want) wait_counter(offsetof(struct slb_worker_counters, name), (want))
#define COUNTER(name)            (counters().name)

/* Starts sipslb; 0, or -EADDRINUSE when a worker could not listen (the port was taken). */
static int lb_try(const struct lb_opts *o)
{
    struct lb *lb = &g.lb;
    memset(lb, 0, sizeof(*lb));
    lb->n = o->workers;
    lb->port = free_port();
    lb_args(lb, o);
    cr_assert_eq(slb_config_load(&lb->cfg, lb->argc, lb->argv), 0, "sipslb's flags");
    slb_log_level_max = (enum slb_log_level)lb->cfg.log_level;
    lb_contexts(lb);
    lb_build(lb);
    void *harg[1] = {lb->health};
    cr_assert_eq(slb_threads_start(&lb->control, 1, false, slb_health_main, harg), 0);
    lb->control_started = true;
    int rc = slb_threads_start(&lb->workers, lb->n, false, slb_worker_main, lb->wargs);
    lb->workers_started = true;
    cr_assert_eq(rc, 0, "worker threads: %s", strerror(rc < 0 ? -rc : rc));
    /* Ready once every worker has all its links to every backend. */
    uint64_t links = (uint64_t)lb->n * g.n_mocks * o->backend_conns;
    for (int i = 0; i <= WAIT_MS / 5; i++) {
        for (unsigned k = 0; k < lb->n; k++)
            if (slb_worker_failed(lb->w[k]))
                return -EADDRINUSE;
        if (COUNTER(backend_handshakes_ok) >= links)
            return 0;
        sleep_ms(5);
    }
    cr_assert_fail("sipslb's links to the backends did not come up");
    return -ETIMEDOUT;
}

/* Stops and frees whatever lb_try started, in main's order. */
static void lb_stop(void)
{
    struct lb *lb = &g.lb;
    if (lb->workers_started) {
        for (unsigned i = 0; i < lb->n; i++)
            slb_worker_stop(lb->w[i]);
        slb_threads_join(&lb->workers, NULL);
    }
    if (lb->control_started) {
        slb_health_stop(lb->health);
        slb_threads_join(&lb->control, NULL);
    }
    for (unsigned i = 0; i < lb->n; i++) {
        if (lb->w[i]) {
            slb_tls_ctx_free(slb_worker_server_ctx_leftover(lb->w[i]));
            slb_tls_ctx_free(slb_worker_server_ctx(lb->w[i]));
            slb_worker_free(lb->w[i]);
        }
        slb_tls_ctx_free(lb->sctx[i]);
    }
    for (unsigned i = 0; i <= lb->n && i <= MAX_WORKERS; i++)
        slb_tls_ctx_free(lb->cctx[i]);
    slb_health_free(lb->health);
    if (lb->router_ready)
        slb_router_deinit(&lb->router);
    if (lb->in_force)
        slb_backends_unref(lb->in_force);
    if (lb->limits_ready)
        slb_limit_table_deinit(&lb->limits);
    if (lb->file[0])
        unlink(lb->file);
    memset(lb, 0, sizeof(*lb));
}

static void lb_start(struct lb_opts o)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        if (lb_try(&o) == 0)
            return;
        lb_stop(); /* another process took the port meanwhile: a new one */
    }
    cr_assert_fail("sipslb's workers could not listen");
}

/* Starts n mock backends, then sipslb in front of them. */
static void start(unsigned backends, struct lb_opts o)
{
    g.n_mocks = backends;
    for (unsigned i = 0; i < backends; i++)
        mock_start(&g.mock[i]);
    lb_start(o);
}

/* Whether the health checker reports mock i's backend in this state. */
static bool health_is(unsigned i, const char *state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert(f);
    slb_health_report(g.lb.health, g.lb.in_force, f);
    fclose(f);
    char line[128];
    snprintf(line, sizeof(line), "backend.127.0.0.1:%u %s\n", g.mock[i].port, state);
    bool found = buf && strstr(buf, line);
    free(buf);
    return found;
}

static bool wait_health(unsigned i, const char *state)
{
    for (int k = 0; k < WAIT_MS / 10; k++) {
        if (health_is(i, state))
            return true;
        sleep_ms(10);
    }
    return false;
}

/* Which mock got requests with this Call-ID (of this method, 0: any): its index, or -1
 * when none did. Two backends for one Call-ID fail the test. */
static int backend_of(const char *call_id, int method)
{
    int found = -1;
    for (unsigned i = 0; i < g.n_mocks; i++)
        if (mock_count(&g.mock[i], call_id, method, NULL) > 0) {
            cr_assert_eq(found, -1, "%s reached both backends", call_id);
            found = (int)i;
        }
    return found;
}

/* The client connection a flow token or one of our branches names (0: not ours). */
static uint64_t flow_of_path(const char *path)
{
    const char *p = strstr(path, ";flow=");
    uint64_t conn = 0;
    unsigned flags = 0;
    if (!p || strlen(p + 6) < SLB_FLOW_TOKEN_LEN)
        return 0;
    struct slb_slice tok = {p + 6, SLB_FLOW_TOKEN_LEN};
    if (!slb_flow_token_parse(tok, &g.lb.sh.self.mac_key, &conn, NULL, &flags))
        return 0;
    cr_assert(flags & SLB_FLOW_PLAIN, "a tcp:// client's flow is marked plain: %s", path);
    return conn;
}

static uint64_t conn_of_via(const char *via)
{
    struct slb_sip_via v;
    uint64_t conn;
    uint32_t tx;
    if (slb_sip_via_parse((struct slb_slice){via, strlen(via)}, &v) < 0 ||
        !slb_branch_parse(v.branch, &g.lb.sh.self.branch_key, &conn, &tx, NULL))
        return 0;
    return conn;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(slb_tls_init(), 0);
}

static void teardown(void)
{
    lb_stop();
    for (unsigned i = 0; i < MAX_BACKENDS; i++)
        mock_free(&g.mock[i]);
    slb_tls_cleanup();
}

/* ---- test clients: blocking plain TCP on the tcp:// listener -------------------------- */

struct client {
    int fd;
    uint16_t port; /* its own: the sent-by of its Via */
    size_t len;
    char buf[4 * MSG_CAP];
};

static void cl_open(struct client *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(c->fd >= 0);
    struct sockaddr_in sin = loopback(g.lb.port);
    cr_assert_eq(connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "connect to sipslb: %s",
                 strerror(errno));
    socklen_t len = sizeof(sin);
    cr_assert_eq(getsockname(c->fd, (struct sockaddr *)&sin, &len), 0);
    c->port = ntohs(sin.sin_port);
    c->len = 0;
}

static void cl_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Resets the connection (SO_LINGER 0): sipslb sees it gone at once, not half-closed. */
static void cl_reset(struct client *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    cl_close(c);
}

static void cl_send(struct client *c, const char *msg, size_t len)
{
    for (size_t done = 0; done < len;) {
        ssize_t w = send(c->fd, msg + done, len - done, MSG_NOSIGNAL);
        cr_assert(w > 0, "send to sipslb: %s", strerror(errno));
        done += (size_t)w;
    }
}

/* The next message from sipslb (CRLF keepalives skipped) into out, NUL-terminated: its
 * length; 0 when none came within timeout_ms; -1 when the connection closed. */
static int cl_recv(struct client *c, char *out, size_t cap, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    for (;;) {
        struct scanned s;
        struct slb_sip_frame fr = {0};
        slb_sip_frame(c->buf, c->len, &lim, &s.m, s.h, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
        cr_assert(fr.kind != SLB_FRAME_FATAL, "sipslb sent what is not SIP: %.100s", c->buf);
        if (fr.kind != SLB_FRAME_NEED_MORE) {
            size_t n = fr.frame_len;
            bool msg = fr.kind == SLB_FRAME_MESSAGE || fr.kind == SLB_FRAME_BAD;
            if (msg) {
                cr_assert(n < cap);
                memcpy(out, c->buf, n);
                out[n] = '\0';
            }
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            if (msg)
                return (int)n;
            continue;
        }
        uint64_t now = now_ms();
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
            return 0;
        ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
}

/* Reads the next message and asserts it is a response with this status for this Call-ID;
 * it stays in out (MSG_CAP bytes; may be NULL). */
static void cl_expect(struct client *c, int status, const char *call_id, char *out)
{
    char tmp[MSG_CAP];
    char *m = out ? out : tmp;
    int n = cl_recv(c, m, MSG_CAP, WAIT_MS);
    cr_assert(n > 0, "%s: no %d (%s)", call_id, status, n ? "connection closed" : "timeout");
    struct scanned s;
    cr_assert(scan(m, (size_t)n, &s), "unreadable: %.200s", m);
    char cid[128];
    copy_slice(s.m.call_id, cid, sizeof(cid));
    cr_assert(!s.m.is_request && s.m.status == status && !strcmp(cid, call_id),
              "waited for %d to %s, got: %.300s", status, call_id, m);
}

/* Asserts that nothing reaches the client for QUIET_MS. */
static void cl_quiet(struct client *c)
{
    char m[MSG_CAP];
    int n = cl_recv(c, m, sizeof(m), QUIET_MS);
    cr_assert_eq(n, 0, "expected nothing, got: %.300s", n > 0 ? m : "a close");
}

/* Sends a request of client c: METHOD sip:svc@example.com, its own Via with branch,
 * CSeq cseq METHOD, extra header lines (or ""). */
static void cl_request(struct client *c, const char *method, const char *call_id,
                       const char *branch, unsigned cseq, int max_forwards, const char *extra)
{
    char m[MSG_CAP];
    int n = snprintf(m, sizeof(m),
                     "%s sip:svc@example.com SIP/2.0\r\n"
                     "Via: SIP/2.0/TCP 127.0.0.1:%u;branch=%s;rport\r\n"
                     "Max-Forwards: %d\r\n"
                     "From: <sip:alice@example.com>;tag=alice1\r\n"
                     "To: <sip:svc@example.com>\r\n"
                     "Call-ID: %s\r\n"
                     "CSeq: %u %s\r\n"
                     "%s"
                     "Content-Length: 0\r\n\r\n",
                     method, c->port, branch, max_forwards, call_id, cseq, method, extra);
    cl_send(c, m, (size_t)n);
}

/* The same with a branch of its own. */
static void cl_simple(struct client *c, const char *method, const char *call_id)
{
    char branch[32];
    snprintf(branch, sizeof(branch), "z9hG4bKt%u", ++g.seq);
    cl_request(c, method, call_id, branch, 1, 70, "");
}

/* Client c registers under call_id through sipslb; returns the mock's record of the
 * REGISTER (its Path, its connection). */
static struct rec cl_register(struct client *c, const char *call_id)
{
    char contact[128];
    snprintf(contact, sizeof(contact),
             "Contact: <sip:alice@127.0.0.1:%u;transport=tcp>\r\nExpires: 300\r\n", c->port);
    char branch[32];
    snprintf(branch, sizeof(branch), "z9hG4bKr%u", ++g.seq);
    cl_request(c, "REGISTER", call_id, branch, 1, 70, contact);
    cl_expect(c, 200, call_id, NULL);
    struct rec r;
    int b = backend_of(call_id, SLB_METHOD_REGISTER);
    cr_assert(b >= 0 && mock_count(&g.mock[b], call_id, SLB_METHOD_REGISTER, &r) == 1);
    return r;
}

/* The client answers request req (len bytes) with this status. */
static void cl_answer(struct client *c, const char *req, size_t len, int status, const char *reason)
{
    struct scanned s;
    cr_assert(scan(req, len, &s));
    char m[MSG_CAP];
    size_t n = response_to(req, &s.m, status, reason, m, sizeof(m));
    cl_send(c, m, n);
}

/* A request from mock backend b toward a phone, routed by route (a Path value). */
static size_t backend_request(char *out, size_t cap, unsigned b, const char *call_id,
                              const char *route, uint16_t phone_port)
{
    size_t n = 0;
    put(out, cap, &n,
        "MESSAGE sip:alice@127.0.0.1:%u;transport=tcp SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:%u;branch=z9hG4bKm%u\r\n"
        "Route: %s\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:registrar@example.com>;tag=reg1\r\n"
        "To: <sip:alice@example.com>\r\n"
        "Call-ID: %s\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Length: 0\r\n\r\n",
        phone_port, g.mock[b].port, ++g.seq, route, call_id);
    return n;
}

/* ---- route_request.c: where a client's request goes ----------------------------------- */

TestSuite(route_request, .init = setup, .fini = teardown, .timeout = 60);

Test(route_request, call_ids_spread_over_both_backends_and_each_stays_on_one)
{
    start(2, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client c;
    cl_open(&c);
    enum { CALLS = 24, REPEAT = 3 };
    char cid[32];
    for (int i = 0; i < CALLS; i++)
        for (int k = 0; k < REPEAT; k++) {
            snprintf(cid, sizeof(cid), "spread-%d", i);
            cl_simple(&c, "OPTIONS", cid);
            cl_expect(&c, 200, cid, NULL);
        }
    int per[MAX_BACKENDS] = {0};
    for (int i = 0; i < CALLS; i++) {
        snprintf(cid, sizeof(cid), "spread-%d", i);
        int b = backend_of(cid, 0);
        cr_assert(b >= 0, "%s reached no backend", cid);
        cr_assert_eq(mock_count(&g.mock[b], cid, 0, NULL), REPEAT,
                     "%s: every request on the same backend", cid);
        per[b]++;
    }
    cr_assert(per[0] > 0 && per[1] > 0, "Maglev used one backend only: %d / %d", per[0], per[1]);
    cr_assert_eq(WAIT_COUNTER(requests_forwarded, CALLS * REPEAT), CALLS * REPEAT);
    cr_assert_eq(COUNTER(requests_in), CALLS * REPEAT);
    cl_close(&c);
}

Test(route_request, max_forwards_zero_is_answered_483_and_not_forwarded)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client c;
    cl_open(&c);
    cl_request(&c, "OPTIONS", "hops-0", "z9hG4bKhops0", 1, 0, "");
    cl_expect(&c, 483, "hops-0", NULL);
    cl_request(&c, "OPTIONS", "hops-1", "z9hG4bKhops1", 1, 1, "");
    cl_expect(&c, 200, "hops-1", NULL);
    cr_assert_eq(backend_of("hops-0", 0), -1, "a Max-Forwards: 0 request was forwarded");
    cr_assert_eq(WAIT_COUNTER(replied_483, 1), 1);
    cr_assert_eq(COUNTER(requests_forwarded), 1);
    cl_close(&c);
}

Test(route_request, no_backend_up_is_answered_503_with_retry_after)
{
    start(2, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client c;
    cl_open(&c);
    cl_simple(&c, "OPTIONS", "before");
    cl_expect(&c, 200, "before", NULL);
    mock_stop(&g.mock[0]);
    mock_stop(&g.mock[1]);
    cr_assert(wait_health(0, "down") && wait_health(1, "down"), "backends not marked down");
    char m[MSG_CAP];
    cl_simple(&c, "OPTIONS", "nobody");
    cl_expect(&c, 503, "nobody", m);
    struct scanned s;
    char ra[32];
    cr_assert(scan(m, strlen(m), &s));
    cr_assert_eq(atoi(header(&s.m, SLB_HDR_OTHER, "Retry-After", ra, sizeof(ra))), RETRY_AFTER_S,
                 "Retry-After of --retry-after: %s", m);
    cr_assert_geq(WAIT_COUNTER(replied_503, 1), 1);
    cl_close(&c);
}

Test(route_request, cancel_follows_its_invite_to_a_backend_drained_since)
{
    start(2, (struct lb_opts){.workers = 1, .backend_conns = 1, .backends_file = true});
    struct client c;
    cl_open(&c);
    /* An INVITE left ringing (its Call-ID says hold) on the backend Maglev picks. */
    cl_request(&c, "INVITE", "hold-cancel", "z9hG4bKinv1", 1, 70, "");
    cl_expect(&c, 100, "hold-cancel", NULL);
    int p = backend_of("hold-cancel", SLB_METHOD_INVITE);
    cr_assert(p >= 0);
    /* Then that backend drains: new requests of the Call-ID go to the other one now. */
    write_backends_file(g.lb.file, p);
    struct slb_backends *fresh;
    char err[600];
    cr_assert_eq(slb_config_reload_backends(&g.lb.cfg, g.lb.in_force, &fresh, err, sizeof(err)), 0,
                 "%s", err);
    slb_health_reload(g.lb.health, slb_backends_ref(fresh));
    slb_backends_unref(g.lb.in_force);
    g.lb.in_force = fresh;
    cr_assert(wait_health((unsigned)p, "draining"));
    bool moved = false;
    for (int i = 0; i < 50 && !moved; i++) {
        cl_simple(&c, "OPTIONS", "hold-cancel");
        cl_expect(&c, 200, "hold-cancel", NULL);
        moved = mock_count(&g.mock[1 - p], "hold-cancel", SLB_METHOD_OPTIONS, NULL) > 0;
    }
    cr_assert(moved, "the drained backend still takes the Call-ID");
    /* RFC 3261 9.1: the CANCEL (same branch) goes where its INVITE went. */
    cl_request(&c, "CANCEL", "hold-cancel", "z9hG4bKinv1", 1, 70, "");
    cl_expect(&c, 200, "hold-cancel", NULL);
    cr_assert_eq(mock_count(&g.mock[p], "hold-cancel", SLB_METHOD_CANCEL, NULL), 1);
    cr_assert_eq(mock_count(&g.mock[1 - p], "hold-cancel", SLB_METHOD_CANCEL, NULL), 0);
    cr_assert_eq(WAIT_COUNTER(pending_routed, 1), 1);
    cl_close(&c);
}

/* ---- relay_response.c: a response goes back where our Via says ------------------------ */

TestSuite(relay_response, .init = setup, .fini = teardown, .timeout = 60);

Test(relay_response, each_response_returns_to_the_client_whose_request_it_answers)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client a, b;
    cl_open(&a);
    cl_open(&b);
    enum { EACH = 8 };
    char cid[32];
    /* Both clients' requests interleaved on the one link before either reads. */
    for (int i = 0; i < EACH; i++) {
        snprintf(cid, sizeof(cid), "a-%d", i);
        cl_simple(&a, i == EACH - 1 ? "BYE" : "OPTIONS", cid);
        snprintf(cid, sizeof(cid), "b-%d", i);
        cl_simple(&b, "OPTIONS", cid);
    }
    cl_simple(&b, "INVITE", "b-invite");
    for (int i = 0; i < EACH; i++) {
        snprintf(cid, sizeof(cid), "a-%d", i);
        cl_expect(&a, 200, cid, NULL);
        snprintf(cid, sizeof(cid), "b-%d", i);
        cl_expect(&b, 200, cid, NULL);
    }
    cl_expect(&b, 100, "b-invite", NULL);
    cl_expect(&b, 200, "b-invite", NULL);
    cl_quiet(&a);
    cr_assert_eq(WAIT_COUNTER(responses_forwarded, 2 * EACH + 2), 2 * EACH + 2);
    cr_assert_eq(COUNTER(responses_1xx), 1);
    cr_assert_eq(COUNTER(responses_2xx), 2 * EACH + 1);
    cl_close(&a);
    cl_close(&b);
}

Test(relay_response, client_response_naming_another_client_is_dropped_as_forged)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client a, b;
    cl_open(&a);
    cl_open(&b);
    cl_simple(&a, "OPTIONS", "victim");
    cl_expect(&a, 200, "victim", NULL);
    /* The backend saw our Via naming a's connection; b replays it as a response. */
    struct rec r;
    cr_assert_eq(mock_count(&g.mock[0], "victim", SLB_METHOD_OPTIONS, &r), 1);
    cr_assert_neq(conn_of_via(r.top_via), 0, "our Via on top: %s", r.top_via);
    char m[MSG_CAP];
    int n = snprintf(m, sizeof(m),
                     "SIP/2.0 200 OK\r\nVia: %s\r\n"
                     "From: <sip:alice@example.com>;tag=alice1\r\n"
                     "To: <sip:svc@example.com>;tag=x\r\nCall-ID: victim\r\n"
                     "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                     r.top_via);
    cl_send(&b, m, (size_t)n);
    cr_assert_eq(WAIT_COUNTER(drop_response_forged, 1), 1);
    cl_quiet(&a);
    cr_assert_eq(mock_count(&g.mock[0], "victim", RESPONSE, NULL), 0);
    cr_assert_eq(COUNTER(responses_forwarded), 1);
    cl_close(&a);
    cl_close(&b);
}

Test(relay_response, response_whose_via_mac_fails_is_dropped_as_not_ours)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client a, b;
    cl_open(&a);
    cl_open(&b);
    cl_simple(&a, "OPTIONS", "target");
    cl_expect(&a, 200, "target", NULL);
    struct rec r;
    cr_assert_eq(mock_count(&g.mock[0], "target", SLB_METHOD_OPTIONS, &r), 1);
    /* The branch's last MAC digit changed: the Via is not ours any more. */
    char *branch = strstr(r.top_via, SLB_BRANCH_PREFIX);
    cr_assert(branch);
    char *last = branch + SLB_BRANCH_LEN - 1;
    *last = *last == '0' ? '1' : '0';
    cr_assert_eq(conn_of_via(r.top_via), 0);
    char m[MSG_CAP];
    int n = snprintf(m, sizeof(m),
                     "SIP/2.0 200 OK\r\nVia: %s\r\n"
                     "From: <sip:alice@example.com>;tag=alice1\r\n"
                     "To: <sip:svc@example.com>;tag=x\r\nCall-ID: target\r\n"
                     "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                     r.top_via);
    cl_send(&b, m, (size_t)n);
    cr_assert_eq(WAIT_COUNTER(drop_response_not_ours, 1), 1);
    cl_quiet(&a);
    cr_assert_eq(COUNTER(drop_response_forged), 0);
    cl_close(&a);
    cl_close(&b);
}

Test(relay_response, final_response_for_a_closed_client_is_dropped_as_stale)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client a;
    cl_open(&a);
    cl_simple(&a, "INVITE", "hold-stale");
    cl_expect(&a, 100, "hold-stale", NULL);
    cl_reset(&a);
    cr_assert_eq(WAIT_COUNTER(client_closed, 1), 1);
    /* The backend answers late, on the link the INVITE came on. */
    struct rec r;
    cr_assert_eq(mock_count(&g.mock[0], "hold-stale", SLB_METHOD_INVITE, &r), 1);
    struct scanned s;
    cr_assert(scan(r.raw, r.raw_len, &s));
    char m[MSG_CAP];
    size_t n = response_to(r.raw, &s.m, 200, "OK", m, sizeof(m));
    cr_assert_eq(mock_send(&g.mock[0], r.conn, m, n), 0);
    cr_assert_eq(WAIT_COUNTER(drop_response_stale_client, 1), 1);
    cr_assert_eq(COUNTER(responses_forwarded), 1); /* the 100 only */
}

/* ---- toward_client.c: a backend's request reaches a phone ------------------------------ */

TestSuite(toward_client, .init = setup, .fini = teardown, .timeout = 60);

Test(toward_client, path_flow_token_leads_a_backend_request_to_the_registered_client)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client c;
    cl_open(&c);
    struct rec reg = cl_register(&c, "reg-path");
    /* RFC 3327: our Path, loose-routing, with a flow token under our MAC. */
    cr_assert(!strncmp(reg.path, "<sips:127.0.0.1:", 16) && strstr(reg.path, ";lr"), "Path: %s",
              reg.path);
    uint64_t flow = flow_of_path(reg.path);
    cr_assert_neq(flow, 0, "no valid flow token in %s", reg.path);
    cr_assert_eq(slb_conn_id_loop((struct slb_conn_id){flow}), 0, "the flow names worker 0");
    char m[MSG_CAP];
    size_t n = backend_request(m, sizeof(m), 0, "to-phone", reg.path, c.port);
    cr_assert_eq(mock_send(&g.mock[0], reg.conn, m, n), 0);
    char got[MSG_CAP];
    int k = cl_recv(&c, got, sizeof(got), WAIT_MS);
    cr_assert(k > 0, "the request did not reach the client");
    struct scanned s;
    char route[256], cid[64];
    cr_assert(scan(got, (size_t)k, &s) && s.m.is_request && s.m.method_id == SLB_METHOD_MESSAGE,
              "%.300s", got);
    copy_slice(s.m.call_id, cid, sizeof(cid));
    cr_assert_str_eq(cid, "to-phone");
    cr_assert(!strstr(header(&s.m, SLB_HDR_ROUTE, NULL, route, sizeof(route)), "flow="),
              "our Route must be gone: %.300s", got);
    cr_assert_eq(s.m.via_count, 2, "our Via on top of the backend's: %.300s", got);
    /* The phone answers; the answer goes back to the backend. */
    cl_answer(&c, got, (size_t)k, 200, "OK");
    struct rec resp;
    cr_assert(mock_wait(&g.mock[0], "to-phone", RESPONSE, &resp), "no answer at the backend");
    cr_assert_eq(resp.status, 200);
    cr_assert_eq(WAIT_COUNTER(requests_to_clients_forwarded, 1), 1);
    cr_assert_eq(WAIT_COUNTER(responses_to_backends, 1), 1);
    cl_close(&c);
}

Test(toward_client, flow_token_with_a_bad_mac_is_answered_403)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client c;
    cl_open(&c);
    struct rec reg = cl_register(&c, "reg-bad");
    char *tok = strstr(reg.path, ";flow=");
    cr_assert(tok);
    char *mac_digit = tok + 6 + SLB_FLOW_TOKEN_LEN - 1;
    *mac_digit = *mac_digit == '0' ? '1' : '0';
    char m[MSG_CAP];
    size_t n = backend_request(m, sizeof(m), 0, "bad-token", reg.path, c.port);
    cr_assert_eq(mock_send(&g.mock[0], reg.conn, m, n), 0);
    struct rec resp;
    cr_assert(mock_wait(&g.mock[0], "bad-token", RESPONSE, &resp));
    cr_assert_eq(resp.status, 403);
    cr_assert_eq(WAIT_COUNTER(flow_bad_mac, 1), 1);
    cl_quiet(&c);
    cr_assert_eq(COUNTER(requests_to_clients_forwarded), 0);
    cl_close(&c);
}

Test(toward_client, flow_of_a_client_gone_is_answered_430)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 1});
    struct client c;
    cl_open(&c);
    struct rec reg = cl_register(&c, "reg-gone");
    cl_close(&c);
    cr_assert_eq(WAIT_COUNTER(client_closed, 1), 1);
    char m[MSG_CAP];
    size_t n = backend_request(m, sizeof(m), 0, "gone", reg.path, c.port);
    cr_assert_eq(mock_send(&g.mock[0], reg.conn, m, n), 0);
    struct rec resp;
    cr_assert(mock_wait(&g.mock[0], "gone", RESPONSE, &resp));
    cr_assert_eq(resp.status, 430, "RFC 5626 5.3: Flow Failed");
    cr_assert_eq(WAIT_COUNTER(flow_failed, 1), 1);
}

/* ---- worker_handoff.c: the phone is on the other worker -------------------------------- */

TestSuite(worker_handoff, .init = setup, .fini = teardown, .timeout = 60);

#define PHONES_MAX 32

/* Registers phones until each worker has one (the kernel spreads connections over the
 * workers' listeners): cl[on[w]] is on worker w, reg[on[w]] its REGISTER as the backend
 * got it (on worker w's link). */
static void phones_on_both_workers(struct client cl[], struct rec reg[], int on[2])
{
    on[0] = on[1] = -1;
    for (int i = 0; i < PHONES_MAX && (on[0] < 0 || on[1] < 0); i++) {
        char cid[32];
        snprintf(cid, sizeof(cid), "reg-%d", i);
        cl_open(&cl[i]);
        reg[i] = cl_register(&cl[i], cid);
        uint64_t flow = flow_of_path(reg[i].path);
        cr_assert_neq(flow, 0, "%s", reg[i].path);
        unsigned w = slb_conn_id_loop((struct slb_conn_id){flow});
        cr_assert(w < 2);
        cr_assert_eq(slb_conn_id_loop((struct slb_conn_id){conn_of_via(reg[i].top_via)}), w,
                     "the REGISTER left on its client's worker");
        if (on[w] < 0)
            on[w] = i;
    }
    cr_assert(on[0] >= 0 && on[1] >= 0, "%d connections, all on one worker", PHONES_MAX);
}

Test(worker_handoff, request_toward_a_phone_on_the_other_worker_is_handed_over_and_answered)
{
    start(1, (struct lb_opts){.workers = 2, .backend_conns = 1});
    static struct client cl[PHONES_MAX];
    struct rec reg[PHONES_MAX];
    int on[2];
    phones_on_both_workers(cl, reg, on);
    cr_assert_eq(COUNTER(handoffs_sent), 0);
    /* Toward the phone on worker 0, on worker 1's link. */
    struct client *phone = &cl[on[0]];
    char m[MSG_CAP];
    size_t n = backend_request(m, sizeof(m), 0, "across", reg[on[0]].path, phone->port);
    cr_assert_eq(mock_send(&g.mock[0], reg[on[1]].conn, m, n), 0);
    char got[MSG_CAP];
    int k = cl_recv(phone, got, sizeof(got), WAIT_MS);
    cr_assert(k > 0 && strstr(got, "Call-ID: across"), "not delivered: %.300s", k > 0 ? got : "");
    /* Its answer crosses back: worker 0 hands it to worker 1, whose link it names. */
    cl_answer(phone, got, (size_t)k, 200, "OK");
    struct rec resp;
    cr_assert(mock_wait(&g.mock[0], "across", RESPONSE, &resp));
    cr_assert_eq(resp.status, 200);
    cr_assert_eq(resp.conn, reg[on[1]].conn, "the answer came back on the request's link");
    cr_assert_eq(WAIT_COUNTER(handoffs_delivered, 2), 2);
    cr_assert_eq(COUNTER(handoffs_sent), 2);
    cr_assert_eq(COUNTER(handoffs_lost), 0);
    for (int i = 0; i < PHONES_MAX; i++)
        if (cl[i].fd > 0)
            cl_close(&cl[i]);
}

Test(worker_handoff, flow_gone_on_the_other_worker_is_answered_430_through_the_hand_over)
{
    start(1, (struct lb_opts){.workers = 2, .backend_conns = 1});
    static struct client cl[PHONES_MAX];
    struct rec reg[PHONES_MAX];
    int on[2];
    phones_on_both_workers(cl, reg, on);
    uint64_t closed = COUNTER(client_closed);
    cl_close(&cl[on[0]]);
    cr_assert_eq(WAIT_COUNTER(client_closed, closed + 1), closed + 1);
    char m[MSG_CAP];
    size_t n = backend_request(m, sizeof(m), 0, "across-gone", reg[on[0]].path, 5060);
    cr_assert_eq(mock_send(&g.mock[0], reg[on[1]].conn, m, n), 0);
    struct rec resp;
    cr_assert(mock_wait(&g.mock[0], "across-gone", RESPONSE, &resp));
    cr_assert_eq(resp.status, 430);
    cr_assert_eq(resp.conn, reg[on[1]].conn);
    cr_assert_eq(WAIT_COUNTER(handoffs_lost, 1), 1, "worker 0 found the flow gone");
    cr_assert_eq(COUNTER(flow_failed), 1);
    cr_assert_eq(WAIT_COUNTER(handoffs_delivered, 1), 1, "the 430 went back to worker 1");
    cr_assert_eq(COUNTER(handoffs_sent), 2);
    for (int i = 0; i < PHONES_MAX; i++)
        if (cl[i].fd > 0)
            cl_close(&cl[i]);
}

/* ---- backend_links.c: links lost, redialled, back ---------------------------------------- */

TestSuite(backend_links, .init = setup, .fini = teardown, .timeout = 60);

Test(backend_links, links_of_a_stopped_backend_are_redialled_and_carry_requests_again)
{
    start(1, (struct lb_opts){.workers = 1, .backend_conns = 2});
    cr_assert_eq(COUNTER(backend_connects), 2);
    struct client c;
    cl_open(&c);
    cl_simple(&c, "OPTIONS", "links-1");
    cl_expect(&c, 200, "links-1", NULL);
    /* The backend goes: both links are lost, redials are refused, it is marked down. */
    mock_stop(&g.mock[0]);
    cr_assert_eq(WAIT_COUNTER(backend_lost, 2), 2);
    cr_assert(wait_health(0, "down"));
    cr_assert_geq(WAIT_COUNTER(backend_connect_failed, 1), 1);
    cl_simple(&c, "OPTIONS", "links-2");
    cl_expect(&c, 503, "links-2", NULL);
    /* Back on the same port: the links are dialled again and carry requests. */
    mock_start(&g.mock[0]);
    cr_assert(wait_health(0, "up"));
    cr_assert_geq(WAIT_COUNTER(backend_handshakes_ok, 4), 4);
    cr_assert_geq(COUNTER(backend_connects), 4);
    cl_simple(&c, "OPTIONS", "links-3");
    cl_expect(&c, 200, "links-3", NULL);
    cr_assert_eq(backend_of("links-3", SLB_METHOD_OPTIONS), 0);
    cr_assert_eq(atomic_load(&g.mock[0].bad_frames), 0);
    cl_close(&c);
}
