/* The health checker (health.h). Runs on its own thread with its own io_uring loop, so
 * probing never delays a worker. One persistent TLS connection per backend carries an
 * OPTIONS probe every --probe-interval; the connection is re-dialled when it fails. State
 * changes are logged once each and published as a new routing table. The verdict itself
 * (fall and rise counting, drained reports) is the pure state machine of health_state.h.
 *
 * Invariants: probe state is touched by the control thread only; workers only add to the
 * failure counters and their own drain clocks; the published state array is the only
 * thing workers read, through the router. */
#include "balancer/health.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "balancer/health_state.h"
#include "core/log.h"
#include "core/sip.h"
#include "io/conn.h"
#include "io/loop.h"
#include "io/timer.h"
#include "balancer/sip_stream.h"
#include "tls/tls.h"

#define TICK_MS 50u
/* io/ slots: a probe connection per backend, one more while a failed one closes, spares. */
#define HEALTH_CONNS (2u * SLB_MAX_BACKENDS + 8u)
/* A probe: two names of up to 320 bytes and three advertised addresses of up to 127. */
#define PROBE_BYTES 1536u

/* One backend's probing: its SIP stream, the probe in flight, the verdict. Owned by the
 * health checker. */
struct probe {
    struct slb_stream s; /* FREE: not connected */
    struct slb_health *h;
    unsigned backend;
    bool ready, waiting, connecting;
    bool verdict_given; /* a failure already judged; the coming on_close adds none */
    uint64_t sent_ns;   /* when the probe in flight left */
    uint32_t cseq;
    struct slb_timer next, timeout;
    struct slb_health_state st; /* the verdict */
    uint64_t last_failure_ms;
    const char *last_reason;
};

struct slb_health {
    struct slb_loop loop;
    const struct slb_config *cfg;
    struct slb_router *router;
    struct slb_tls_ctx *cctx;
    unsigned n_workers;
    struct probe probe[SLB_MAX_BACKENDS];
    struct slb_timer tick;
    atomic_int stop, running;
    atomic_int failed; /* slb_health_failed */
    /* Per process, random: with the CSeq it makes every probe's Call-ID new (RFC 3261
     * 8.1.1.4: a request outside a dialog gets a new one) and its branch unique even
     * across a restart (a backend must not take it for a retransmission). */
    uint32_t nonce;
    _Atomic uint8_t reported[SLB_MAX_BACKENDS]; /* for slb_health_report: REPORT_* */
    /* For the metrics (written here, read by the admin thread). */
    _Atomic uint64_t rtt_ns[SLB_MAX_BACKENDS];
    _Atomic uint64_t probes_ok[SLB_MAX_BACKENDS];
    _Atomic uint64_t fails[SLB_MAX_BACKENDS][SLB_PROBE_FAIL_KINDS];
    atomic_uint n_reported; /* slots in use, for slb_health_report */
    struct slb_health_signals signals;
    struct slb_drain_clock *drain;                /* one per worker */
    const struct slb_backends *backends;          /* in force (a reference) */
    struct slb_backend_attrs attrs;               /* theirs: presence, weights and drain flags */
    _Atomic(const struct slb_backends *) pending; /* from a reload, not yet applied */
    /* The probes' input: a whole response of the largest size the framer accepts, so a
     * probe answered with a long response (many Allow, Supported, Via lines) is read. */
    struct slb_stream_env env;
};

enum { REPORT_UP, REPORT_DOWN, REPORT_DRAINING, REPORT_DRAINED, REPORT_REMOVED };
static const char *const report_name[] = {"up", "down", "draining", "drained", "removed"};

static void publish(struct slb_health *h)
{
    uint8_t state[SLB_MAX_BACKENDS] = {0};
    for (unsigned i = 0; i < h->attrs.n; i++)
        state[i] = (uint8_t)slb_health_state_route(&h->probe[i].st, h->attrs.present[i],
                                                   h->attrs.drain[i]);
    int rc = slb_router_publish(h->router, h->backends, state);
    if (rc < 0)
        slb_log(SLB_LOG_ERROR, "cannot publish a routing table: %s", strerror(-rc));
}

static void set_report(struct slb_health *h, unsigned b, uint8_t r)
{
    if (atomic_exchange(&h->reported[b], r) != r) {
        const struct slb_log_field f[] = {SLB_LOG_STR("backend", h->backends->spec[b].name),
                                          SLB_LOG_STR("state", report_name[r])};
        slb_log_event(SLB_LOG_INFO, "backend_state", f, 2, "backend %s is %s",
                      h->backends->spec[b].name, report_name[r]);
    }
}

const char *const slb_probe_fail_names[SLB_PROBE_FAIL_KINDS] = {"connect", "handshake", "reset",
                                                                "timeout", "status",    "other"};

/* The kind of a failure, from the reason verdict() is given (never on the message path). */
static enum slb_probe_fail fail_kind(const char *why)
{
    if (strstr(why, "connect"))
        return strstr(why, "connections failed") ? SLB_PROBE_FAIL_RESET : SLB_PROBE_FAIL_CONNECT;
    if (strstr(why, "TLS") || strstr(why, "handshake"))
        return SLB_PROBE_FAIL_HANDSHAKE;
    if (strstr(why, "lost"))
        return SLB_PROBE_FAIL_RESET;
    if (strstr(why, "probe timed out"))
        return SLB_PROBE_FAIL_TIMEOUT;
    if (strstr(why, "unwanted status"))
        return SLB_PROBE_FAIL_STATUS;
    return SLB_PROBE_FAIL_OTHER;
}

static void verdict(struct probe *p, bool ok, const char *why)
{
    struct slb_health *h = p->h;
    const struct slb_config *cfg = h->cfg;
    if (!h->attrs.present[p->backend])
        return;
    if (ok)
        atomic_fetch_add_explicit(&h->probes_ok[p->backend], 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&h->fails[p->backend][fail_kind(why)], 1, memory_order_relaxed);
    if (!ok)
        p->last_reason = why;
    switch (slb_health_state_result(&p->st, ok, (unsigned)cfg->fall, (unsigned)cfg->rise)) {
    case SLB_HEALTH_WENT_UP:
        publish(h);
        set_report(h, p->backend, h->attrs.drain[p->backend] ? REPORT_DRAINING : REPORT_UP);
        break;
    case SLB_HEALTH_WENT_DOWN: {
        publish(h);
        const struct slb_log_field f[] = {
            SLB_LOG_STR("backend", h->backends->spec[p->backend].name),
            SLB_LOG_NUM("checks", cfg->fall), SLB_LOG_STR("last", why)};
        slb_log_event(SLB_LOG_WARN, "backend_down", f, 3,
                      "backend %s failed %lld checks in a row (last: %s)",
                      h->backends->spec[p->backend].name, (long long)cfg->fall, why);
        set_report(h, p->backend, REPORT_DOWN);
        break;
    }
    case SLB_HEALTH_NONE:
        break;
    }
}

/* Forgets the probe's connection now (from a timer or a failed send, never from inside
 * its stream's callbacks): io/'s later callbacks for it find no owner. */
static void disconnect(struct probe *p)
{
    struct slb_conn *c = p->s.conn;
    if (c) {
        c->owner = NULL;
        if (p->s.state != SLB_STREAM_CLOSING)
            slb_conn_close(c, false);
    }
    slb_stream_release(&p->s);
    p->ready = false;
    p->waiting = false;
    slb_timer_cancel(&p->timeout);
}

/* A failure seen inside the stream's callbacks: judged now, the connection closed; its
 * on_close releases the stream. */
static void fail_inside(struct probe *p, const char *why)
{
    p->verdict_given = true;
    p->ready = false;
    p->waiting = false;
    slb_timer_cancel(&p->timeout);
    verdict(p, false, why);
    slb_stream_close(&p->s, false);
}

static void send_probe(struct probe *p)
{
    const struct slb_config *cfg = p->h->cfg;
    const struct slb_backend_spec *b = &p->h->backends->spec[p->backend];
    char msg[PROBE_BYTES];
    int n = snprintf(msg, sizeof(msg),
                     "OPTIONS sips:%s SIP/2.0\r\n"
                     "Via: SIP/2.0/TLS %s;branch=z9hG4bKslbprobe%08x.%u.%u\r\n"
                     "Max-Forwards: 0\r\n"
                     "From: <sips:sipslb@%s>;tag=slbprobe%u.%08x.%u\r\n"
                     "To: <sips:%s>\r\n"
                     "Call-ID: slbprobe-%u-%08x-%08x-%u@%s\r\n"
                     "CSeq: %u OPTIONS\r\n"
                     "User-Agent: sipslb health check\r\n"
                     "Content-Length: 0\r\n\r\n",
                     b->name, cfg->advertise_hostport, p->h->nonce, p->backend, p->cseq,
                     cfg->advertise_hostport, p->backend, p->h->nonce, p->cseq, b->name, p->backend,
                     b->token, p->h->nonce, p->cseq, cfg->advertise_hostport, p->cseq);
    if (n < 0 || (size_t)n >= sizeof(msg)) {
        /* Names too long for a probe (a configuration matter): say so, count it failed. */
        disconnect(p);
        verdict(p, false, "probe too long for the backend's name");
        return;
    }
    struct iovec iov = {msg, (size_t)n};
    if (slb_stream_send(&p->s, &iov, 1, (size_t)n) < 0) {
        disconnect(p);
        verdict(p, false, "probe not sent");
        return;
    }
    p->waiting = true;
    p->sent_ns = slb_clock_ns();
    slb_timer_arm(slb_loop_wheel(&p->h->loop), &p->timeout, p->h->cfg->probe_timeout_ms);
}

static void dial(struct probe *p)
{
    if (p->s.state != SLB_STREAM_FREE || p->connecting)
        return;
    const struct slb_backend_spec *b = &p->h->backends->spec[p->backend];
    struct slb_conn_id id;
    p->connecting = true;
    int rc = slb_redial_connect(&p->h->loop, (const struct sockaddr *)&b->addr.sa, b->addr.len,
                                p->backend, (uint32_t)p->h->cfg->probe_timeout_ms, &id);
    if (rc < 0) {
        p->connecting = false;
        verdict(p, false, "cannot start a connect");
    }
}

/* Every --probe-interval: probe if connected and idle, else (re)connect. */
static void on_next(struct slb_timer *t);

static void start_probe(struct slb_health *h, unsigned b)
{
    if (b >= atomic_load(&h->n_reported))
        atomic_store(&h->n_reported, b + 1);
    dial(&h->probe[b]);
    slb_timer_arm(slb_loop_wheel(&h->loop), &h->probe[b].next, h->cfg->probe_interval_ms);
}

static void on_next(struct slb_timer *t)
{
    struct probe *p = (struct probe *)((char *)t - offsetof(struct probe, next));
    if (!p->h->attrs.present[p->backend])
        return; /* removed: no more probes */
    slb_timer_arm(slb_loop_wheel(&p->h->loop), &p->next, p->h->cfg->probe_interval_ms);
    if (p->ready && !p->waiting) {
        p->cseq++;
        send_probe(p);
    } else if (!p->waiting) {
        dial(p);
    }
}

static void on_timeout(struct slb_timer *t)
{
    struct probe *p = (struct probe *)((char *)t - offsetof(struct probe, timeout));
    disconnect(p);
    verdict(p, false, "probe timed out");
}

static int on_connect(struct slb_loop *loop, struct slb_conn *conn, int res)
{
    struct slb_health *h = slb_loop_user(loop);
    struct probe *p = &h->probe[conn->tag];
    p->connecting = false;
    if (res < 0) {
        verdict(p, false, res == -ETIMEDOUT ? "connect timed out" : "connect failed");
        return 0;
    }
    if (slb_stream_open(&h->env, &p->s, conn, h->cctx, h->backends->spec[p->backend].host, p) < 0)
        return -ENOMEM;
    p->verdict_given = false;
    int ev = slb_tls_start(&p->s.tls);
    if (ev < 0)
        fail_inside(p, "TLS failed");
    return 0;
}

static void on_response(struct probe *p, const struct slb_sip_msg *m)
{
    if (m->is_request || !p->waiting || m->status < 200)
        return; /* a provisional response or a stray message: keep waiting */
    p->waiting = false;
    slb_timer_cancel(&p->timeout);
    atomic_store_explicit(&p->h->rtt_ns[p->backend], slb_clock_ns() - p->sent_ns,
                          memory_order_relaxed);
    const struct slb_config *cfg = p->h->cfg;
    unsigned cls = m->status / 100;
    bool ok = cls <= 6 && cfg->alive_class[cls] && !(cfg->alive_not_503 && m->status == 503);
    verdict(p, ok, ok ? "answered" : "answered with an unwanted status");
}

static bool probe_frame(struct slb_stream *s, const char *base, const struct slb_sip_frame *fr,
                        const struct slb_sip_msg *m)
{
    struct probe *p = (struct probe *)(void *)s;
    (void)base;
    if (fr->kind == SLB_FRAME_FATAL) {
        fail_inside(p, "unparsable response");
        return false;
    }
    if (fr->kind == SLB_FRAME_MESSAGE)
        on_response(p, m);
    return true;
}

static void probe_tls_events(struct slb_stream *s, int ev)
{
    struct probe *p = (struct probe *)(void *)s;
    if (!(ev & SLB_TLS_EV_HANDSHAKE_DONE))
        return;
    p->ready = true;
    slb_conn_set_timeout(s->conn, 0);
    p->cseq++;
    send_probe(p);
}

static void probe_tls_failed(struct slb_stream *s, int rc)
{
    struct probe *p = (struct probe *)(void *)s;
    (void)rc;
    p->verdict_given = true;
    p->ready = false;
    p->waiting = false;
    slb_timer_cancel(&p->timeout);
    verdict(p, false, "TLS failed");
}

static const struct slb_stream_ops probe_ops = {
    .frame = probe_frame,
    .tls_events = probe_tls_events,
    .tls_failed = probe_tls_failed,
};

static int on_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len)
{
    struct probe *p = conn->owner;
    (void)loop;
    if (p)
        slb_stream_input(&p->s, data, len);
    return 0;
}

static void on_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    struct probe *p = conn->owner;
    (void)loop;
    if (p)
        (void)slb_stream_flush(&p->s); /* a failure reaches probe_tls_failed */
}

static void on_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    struct probe *p = conn->owner;
    (void)loop;
    if (!p)
        return;
    bool judge = !p->verdict_given && (p->waiting || reason < 0);
    conn->owner = NULL;
    p->s.state = SLB_STREAM_CLOSING; /* the connection is gone: nothing more to close */
    p->s.conn = NULL;
    disconnect(p);
    p->verdict_given = false;
    if (judge)
        verdict(p, false, reason == -ETIMEDOUT ? "handshake timed out" : "connection lost");
}

static void start_probe(struct slb_health *h, unsigned b);

/* A reload: backends added or removed, new weights and drain flags; logged, applied,
 * published. */
static void apply_backends(struct slb_health *h, const struct slb_backends *nb, uint64_t now)
{
    const struct slb_backend_attrs *a = &nb->attrs;
    struct slb_backend_attrs old = h->attrs;
    slb_backends_unref(h->backends);
    h->backends = nb;
    h->attrs = *a;
    for (unsigned b = 0; b < a->n; b++) {
        const char *name = h->backends->spec[b].name;
        struct probe *p = &h->probe[b];
        bool was = b < old.n && old.present[b];
        if (!a->present[b]) {
            if (was) {
                disconnect(p);
                slb_timer_cancel(&p->next);
                set_report(h, b, REPORT_REMOVED);
            }
            continue;
        }
        if (!was) {
            /* New, or back after a removal: up until its probes say otherwise. */
            slb_health_state_added(&p->st);
            slb_log(SLB_LOG_INFO, "backend %s added", name);
            for (unsigned w = 0; w < h->n_workers; w++)
                atomic_store(&h->drain[w].last_ms[b], now);
            set_report(h, b, a->drain[b] ? REPORT_DRAINING : REPORT_UP);
            start_probe(h, b);
            continue;
        }
        if (a->weight[b] != old.weight[b])
            slb_log(SLB_LOG_INFO, "backend %s: weight %u -> %u", name, old.weight[b], a->weight[b]);
        if (a->drain[b] != old.drain[b]) {
            slb_health_state_drain_changed(&p->st);
            /* Idle time counts from now: dialogs placed just before may still be live. */
            for (unsigned w = 0; w < h->n_workers; w++)
                atomic_store(&h->drain[w].last_ms[b], now);
            if (p->st.alive)
                set_report(h, b, a->drain[b] ? REPORT_DRAINING : REPORT_UP);
        }
    }
    publish(h);
}

void slb_health_reload(struct slb_health *h, const struct slb_backends *b)
{
    slb_backends_unref(atomic_exchange(&h->pending, b));
}

/* Every TICK_MS: reloads, failures the workers saw, drained backends, table reclamation. */
static void on_tick(struct slb_timer *t)
{
    struct slb_health *h = (struct slb_health *)((char *)t - offsetof(struct slb_health, tick));
    uint64_t now = slb_loop_now_ms(&h->loop);
    slb_timer_arm(slb_loop_wheel(&h->loop), &h->tick, TICK_MS);
    const struct slb_backends *a = atomic_exchange(&h->pending, NULL);
    if (a)
        apply_backends(h, a, now);
    for (unsigned b = 0; b < h->attrs.n; b++) {
        struct probe *p = &h->probe[b];
        if (!h->attrs.present[b])
            continue;
        uint64_t f = atomic_load_explicit(&h->signals.failures[b], memory_order_relaxed);
        if (slb_health_state_passive(&p->st, f)) {
            /* Workers lost connections to it: one failure, and probe right away. */
            verdict(p, false, "workers' connections failed");
            if (!p->waiting)
                dial(p);
        }
        if (slb_health_state_awaits_drain(&p->st, h->attrs.drain[b])) {
            /* Read the workers' clocks only for a backend a report waits on. */
            uint64_t last = 0;
            for (unsigned w = 0; w < h->n_workers; w++) {
                uint64_t l = atomic_load_explicit(&h->drain[w].last_ms[b], memory_order_relaxed);
                last = l > last ? l : last;
            }
            if (slb_health_state_drained(&p->st, h->attrs.drain[b], last, now,
                                         h->cfg->drain_idle_ms))
                set_report(h, b, REPORT_DRAINED);
        }
    }
    slb_router_reclaim(h->router);
}

struct slb_health *slb_health_new(const struct slb_config *cfg, struct slb_router *router,
                                  const struct slb_backends *backends,
                                  struct slb_tls_ctx *client_ctx, unsigned n_workers)
{
    struct slb_health *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->drain = calloc(n_workers, sizeof(*h->drain));
    if (!h->drain) {
        free(h);
        return NULL;
    }
    if (slb_stream_env_init(&h->env, &probe_ops, SLB_MAX_BACKENDS, SLB_SIP_MAX_MSG_BYTES_DEFAULT) <
        0) {
        slb_stream_env_deinit(&h->env);
        free(h->drain);
        free(h);
        return NULL;
    }
    h->cfg = cfg;
    h->router = router;
    h->cctx = client_ctx;
    h->n_workers = n_workers;
    if (getrandom(&h->nonce, sizeof(h->nonce), 0) != sizeof(h->nonce))
        h->nonce = (uint32_t)slb_clock_ns();
    uint64_t now = slb_clock_ms();
    for (unsigned b = 0; b < SLB_MAX_BACKENDS; b++) {
        struct probe *p = &h->probe[b];
        p->h = h;
        p->backend = b;
        slb_health_state_init(&p->st); /* alive until probes say otherwise: routes at once */
        slb_timer_init(&p->next, on_next);
        slb_timer_init(&p->timeout, on_timeout);
        h->reported[b] =
            b < backends->attrs.n && backends->attrs.drain[b] ? REPORT_DRAINING : REPORT_UP;
        for (unsigned w = 0; w < n_workers; w++)
            atomic_store(&h->drain[w].last_ms[b], now);
    }
    slb_timer_init(&h->tick, on_tick);
    h->backends = slb_backends_ref(backends);
    h->attrs = backends->attrs;
    atomic_store(&h->n_reported, h->attrs.n);
    return h;
}

void slb_health_free(struct slb_health *h)
{
    if (h) {
        slb_backends_unref(atomic_load(&h->pending));
        slb_backends_unref(h->backends);
        slb_stream_env_deinit(&h->env);
        free(h->drain);
        free(h);
    }
}

void *slb_health_main(void *arg)
{
    struct slb_health *h = arg;
    struct slb_loop_opts opts = {.max_conns = HEALTH_CONNS, .loop_id = SLB_HEALTH_LOOP_ID};
    struct slb_loop_cbs cbs = {.on_connect = on_connect,
                               .on_data = on_data,
                               .on_drained = on_drained,
                               .on_close = on_close};
    int rc = slb_loop_init(&h->loop, &opts, &cbs, h);
    if (rc < 0) {
        slb_log(SLB_LOG_ERROR, "health checker: io_uring set-up failed: %s", strerror(-rc));
        atomic_store(&h->failed, 1);
        return (void *)1;
    }
    for (unsigned b = 0; b < h->attrs.n; b++)
        start_probe(h, b);
    slb_timer_arm(slb_loop_wheel(&h->loop), &h->tick, TICK_MS);
    atomic_store(&h->running, 1);
    if (!atomic_load(&h->stop))
        slb_loop_run(&h->loop);
    for (unsigned b = 0; b < SLB_MAX_BACKENDS; b++) {
        slb_timer_cancel(&h->probe[b].next);
        slb_timer_cancel(&h->probe[b].timeout);
    }
    slb_timer_cancel(&h->tick);
    slb_loop_deinit(&h->loop);
    for (unsigned b = 0; b < SLB_MAX_BACKENDS; b++)
        slb_stream_release(&h->probe[b].s);
    slb_tls_thread_cleanup();
    return NULL;
}

void slb_health_stop(struct slb_health *h)
{
    atomic_store(&h->stop, 1);
    if (atomic_load(&h->running))
        slb_loop_stop(&h->loop);
}

void slb_health_backend(struct slb_health *h, unsigned b, struct slb_health_backend *out)
{
    *out = (struct slb_health_backend){0};
    if (b >= SLB_MAX_BACKENDS)
        return;
    out->state = report_name[atomic_load(&h->reported[b])];
    out->probe_rtt_s = (double)atomic_load_explicit(&h->rtt_ns[b], memory_order_relaxed) / 1e9;
    out->probes_ok = atomic_load_explicit(&h->probes_ok[b], memory_order_relaxed);
    for (unsigned k = 0; k < SLB_PROBE_FAIL_KINDS; k++)
        out->fails[k] = atomic_load_explicit(&h->fails[b][k], memory_order_relaxed);
}

bool slb_health_first_round_done(struct slb_health *h, const struct slb_backends *b)
{
    for (unsigned i = 0; i < b->attrs.n; i++) {
        if (!b->attrs.present[i])
            continue;
        uint64_t results = atomic_load_explicit(&h->probes_ok[i], memory_order_relaxed);
        for (unsigned k = 0; k < SLB_PROBE_FAIL_KINDS; k++)
            results += atomic_load_explicit(&h->fails[i][k], memory_order_relaxed);
        if (!results)
            return false;
    }
    return true;
}

bool slb_health_failed(struct slb_health *h)
{
    return atomic_load(&h->failed) != 0;
}

struct slb_health_signals *slb_health_signals(struct slb_health *h)
{
    return &h->signals;
}

struct slb_drain_clock *slb_health_drain_clock(struct slb_health *h, unsigned worker)
{
    return &h->drain[worker];
}

void slb_health_report(struct slb_health *h, const struct slb_backends *names, FILE *out)
{
    unsigned n = atomic_load(&h->n_reported);
    if (n > names->attrs.n)
        n = names->attrs.n; /* cannot happen: names are never older than the checker's */
    for (unsigned b = 0; b < n; b++)
        fprintf(out, "backend.%s %s\n", names->spec[b].name,
                report_name[atomic_load(&h->reported[b])]);
}
