/* A sipslb worker: the relay itself (worker-priv.h lists the files it is made of). This
 * file holds its life cycle, io/'s callbacks and the refresh timer. Clients' TLS bytes
 * arrive through io/, go through a SIP stream (sip_stream.h: TLS, framing, pending input),
 * are handled by frame_dispatch.c and leave, edited as slices, on the chosen connection's
 * stream.
 *
 * Invariants: everything here runs on the worker's own thread (except the slb_worker_*
 * entry points worker.h marks); the per-message path makes no allocation, no lock and no
 * log line; a client is held (its receive paused) exactly while it is parked on a backend
 * link or its own output is backed up, and its unread bytes wait in its pending buffer.
 *
 * Every client is bounded: connections per worker (--max-conns) and per source, TLS
 * handshakes in progress per worker, pending input (one buffer), TLS stash, output queue
 * (--client-out-max), and time (handshake, message completion, stall, idle). */
#include "balancer/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "balancer/health.h"
#include "balancer/worker-priv.h"

/* Descriptor exhaustion is the operator's to fix (RLIMIT_NOFILE): said plainly, not
 * passed off as a backend failure. */
static void report_no_fds(struct slb_worker *w)
{
    uint64_t n = slb_loop_counters(&w->loop)->accept_no_fds;
    if (n == w->seen_no_fds)
        return;
    COUNT_N(w, fd_exhausted, n - w->seen_no_fds);
    w->seen_no_fds = n;
    slb_log_limited(&w->rl_fds, slb_loop_now_ms(&w->loop), SLB_LOG_ERROR,
                    "worker %u: out of file descriptors (EMFILE): clients cannot be accepted; "
                    "raise RLIMIT_NOFILE or lower --max-conns",
                    w->index);
}

/* The loop's own counters are plain fields of its thread: copied here for the stats file
 * and /metrics, so they lag by at most a refresh tick. */
static void publish_loop_counters(struct slb_worker *w)
{
    const struct slb_loop_counters *k = slb_loop_counters(&w->loop);
    atomic_store_explicit(&w->c.loop_sleeps, k->sleeps, memory_order_relaxed);
    atomic_store_explicit(&w->c.loop_spins, k->spins, memory_order_relaxed);
    atomic_store_explicit(&w->c.loop_spin_hits, k->spin_hits, memory_order_relaxed);
    atomic_store_explicit(&w->c.loop_send_sqes, k->sends, memory_order_relaxed);
}

/* An idle worker still announces the newest table it has seen, so old tables get freed;
 * it also takes a reloaded certificate, retries slot returns and reports EMFILE. */
static void on_refresh(struct slb_timer *t)
{
    struct slb_worker *w = slb_timer_entry(t, struct slb_worker, refresh);
    uint64_t now = slb_loop_now_ms(&w->loop);
    atomic_store_explicit(&w->heartbeat_ms, slb_clock_ms(), memory_order_relaxed);
    if (w->debug_stall_at_ms && now >= w->debug_stall_at_ms) {
        /* A test's hung worker (SLB_DEBUG_STALL_WORKER_MS): the watchdog must notice. */
        slb_log(SLB_LOG_WARN, "worker %u: stalling on purpose (SLB_DEBUG_STALL_WORKER_MS)",
                w->index);
        while (!atomic_load(&w->stop_requested))
            usleep(100000);
    }
    wake_stuck_parked(w, route_table(w));
    resend_expire(w, now);
    take_new_sctx(w);
    take_new_keys(w);
    if (!w->draining)
        drain_tick(w); /* starts it; then its own timer ticks */
    if (w->n_returns)
        retry_returns(w);
    report_no_fds(w);
    publish_loop_counters(w);
    slb_timer_arm(slb_loop_wheel(&w->loop), &w->refresh, REFRESH_MS);
}

/* ---- io/ callbacks ------------------------------------------------------------------------ */

static int on_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    return client_accept(slb_loop_user(loop), conn);
}

static int on_connect(struct slb_loop *loop, struct slb_conn *conn, int res)
{
    struct slb_worker *w = slb_loop_user(loop);
    return link_connected(w, &w->links[conn->tag - TAG_LINK], conn, res);
}

static int on_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct relay_conn *c = conn->owner;
    if (!c || c->s.state == SLB_STREAM_FREE || c->s.state == SLB_STREAM_CLOSING)
        return 0;
    if (c->kind == CONN_CLIENT)
        client_input(w, c, data, len);
    else
        slb_stream_input(&c->s, data, len);
    return 0;
}

static void on_eof(struct slb_loop *loop, struct slb_conn *conn)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct relay_conn *c = conn->owner;
    if (!c || c->s.state == SLB_STREAM_FREE || c->s.state == SLB_STREAM_CLOSING)
        return;
    if (c->kind != CONN_CLIENT || !conn_open(c))
        conn_close(c, true);
    else
        client_eof(w, c);
}

/* The connection's output went down to its low-water mark, or chunks are back after it
 * was refused: retry what TLS holds, wake clients parked on a link, let a backed-up client
 * be read again, and read what TLS still holds for a link. */
static void on_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct relay_conn *c = conn->owner;
    if (!c || !conn_open(c))
        return;
    int ev = slb_stream_flush(&c->s);
    if (ev < 0 || (ev & SLB_TLS_EV_WANT_WRITE))
        return; /* failed (closing), or still full: another on_drained follows */
    if (c->kind == CONN_CLIENT) {
        client_drained(w, c);
        return;
    }
    if (c->link && c->link->parked_head)
        wake_parked(w, c->link);
    if (ev & SLB_TLS_EV_MORE)
        slb_stream_input(&c->s, NULL, 0);
}

/* --log-connections: one record per client connection (not per message), named so that
 * fail2ban-style tools can act on the peer. Before the stream is released (TLS version). */
static void log_close(struct slb_worker *w, const struct relay_conn *c, int reason)
{
    const char *why = reason == -ETIMEDOUT
                          ? (c->s.state == SLB_STREAM_HANDSHAKE ? "handshake timeout"
                             : c->out_blocked                   ? "stalled"
                             : c->partial_since_ms              ? "message timeout"
                                                                : "idle")
                      : reason < 0                         ? strerror(-reason)
                      : c->s.state == SLB_STREAM_HANDSHAKE ? "closed during the handshake"
                                                           : "closed";
    /* No version before a handshake completed (a port check, a scanner). */
    const char *tls = c->s.plain ? NULL : slb_tls_version_name(&c->s.tls);
    if (!tls || !*tls)
        tls = "none";
    uint64_t ms = slb_loop_now_ms(&w->loop) - c->opened_ms;
    char peer[INET6_ADDRSTRLEN + 8];
    snprintf(peer, sizeof(peer), "%s:%u", c->ip, c->port);
    const struct slb_log_field f[] = {SLB_LOG_STR("peer", peer),
                                      SLB_LOG_NUM("duration_ms", ms),
                                      SLB_LOG_NUM("messages", c->s.frames),
                                      SLB_LOG_STR("tls", tls),
                                      SLB_LOG_STR("reason", why),
                                      SLB_LOG_NUM("worker", w->index)};
    slb_log_event(SLB_LOG_INFO, "connection_closed", f, sizeof(f) / sizeof(f[0]),
                  "client %s closed after %llu ms, %llu messages, TLS %s: %s", peer,
                  (unsigned long long)ms, (unsigned long long)c->s.frames, tls, why);
}

static void on_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct relay_conn *c = conn->owner;
    if (!c)
        return;
    conn->owner = NULL;
    unpark(c);
    if (c->kind == CONN_CLIENT) {
        w->stash_bytes -= c->stash_seen;
        c->stash_seen = 0;
        if (reason == -ETIMEDOUT)
            count_timeout(w, c);
        if (w->cfg->log_connections)
            log_close(w, c, reason);
    }
    slb_stream_release(&c->s);
    if (c->kind == CONN_CLIENT) {
        client_gone(w, c);
        return;
    }
    struct link *l = c->link;
    c->link = NULL;
    if (!atomic_load(&w->stop_requested))
        COUNT(w, backend_lost); /* not the links we close ourselves on the way out */
    if (l && l->conn == c)
        link_lost(w, l, reason);
}

/* ---- life cycle ---------------------------------------------------------------------------- */

struct slb_worker *slb_worker_new(const struct slb_shared *sh, unsigned index,
                                  struct slb_tls_ctx *server_ctx, struct slb_tls_ctx *client_ctx)
{
    struct slb_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    const struct slb_config *cfg = sh->cfg;
    w->sh = sh;
    w->self = sh->self;
    w->cfg = cfg;
    w->index = index;
    w->sctx = server_ctx;
    w->cctx = client_ctx;
    w->n_links = SLB_MAX_BACKENDS * (uint32_t)cfg->backend_conns;
    w->n_known = cfg->n_backends;
    w->n_conns = (uint32_t)cfg->max_conns + w->n_links + CONN_SPARES;
    w->conns = calloc(w->n_conns, sizeof(*w->conns));
    w->links = calloc(w->n_links, sizeof(*w->links));
    w->router = sh->router;
    w->signals = slb_health_signals(sh->health);
    w->drain_clock = slb_health_drain_clock(sh->health, index);
    slb_timer_init(&w->refresh, on_refresh);
    resend_init(w);
    slb_pending_invites_init(&w->pending, &sh->pending_key);
    /* A pending buffer for every client and every link at once. */
    int erc = slb_stream_env_init(&w->env, &relay_stream_ops, (uint32_t)cfg->max_conns + w->n_links,
                                  (size_t)cfg->max_message_size);
    w->env.ws_origin = cfg->ws_origin;
    w->reply_cap = (size_t)cfg->max_message_size + REPLY_ROOM;
    w->reply = malloc(w->reply_cap);
    w->resend_buf = malloc((size_t)cfg->max_message_size);
    w->returns_cap = cfg->n_workers * SLB_OUTBOX_SLOTS;
    w->returns = calloc(w->returns_cap, sizeof(*w->returns));
    int orc = slb_outbox_init(&w->outbox, (size_t)cfg->max_message_size);
    int rrc = slb_rate_table_init(&w->rates, (uint32_t)cfg->limit_request_rate, RATE_SLOTS);
    int prc = proxy_hdr_init(w);
    if (!w->conns || !w->links || erc < 0 || !w->reply || !w->resend_buf || !w->returns ||
        rrc < 0 || orc < 0 || prc < 0) {
        slb_worker_free(w);
        return NULL;
    }
    w->rl_tls = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 5);
    w->rl_input = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 5);
    w->rl_backend = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 5);
    w->rl_limit = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 20);
    w->rl_fds = (struct slb_ratelimit)SLB_RATELIMIT_INIT(10000, 1);
    w->rl_auth = (struct slb_ratelimit)SLB_RATELIMIT_INIT(10000, 1); /* apart: it must not
                                                                      * hide TLS failures */
    links_init(w);
    return w;
}

void slb_worker_free(struct slb_worker *w)
{
    if (!w)
        return;
    for (uint32_t i = 0; w->links && i < w->n_links; i++)
        slb_redial_deinit(&w->links[i].redial);
    resend_deinit(w);
    free(w->resend_buf);
    free(w->conns);
    free(w->links);
    slb_stream_env_deinit(&w->env);
    free(w->reply);
    free(w->proxy_bufs);
    free(w->returns);
    slb_rate_table_deinit(&w->rates);
    slb_outbox_deinit(&w->outbox);
    free(atomic_exchange(&w->new_keys, NULL));
    free(w);
}

/* A failure that stops this worker: logged, flagged for the main thread (which stops the
 * others and exits 1). */
static void publish_listener(struct slb_worker *w, int index);

static void *fail(struct slb_worker *w)
{
    atomic_store(&w->failed, 1);
    return (void *)1;
}

void *slb_worker_main(void *arg)
{
    struct slb_worker *w = arg;
    const struct slb_config *cfg = w->cfg;
    uint32_t out_cap = (uint32_t)(2 * cfg->max_message_size + 4 * SLB_TLS_RECORD_PLAIN_MAX);
    struct slb_loop_opts opts = {
        .max_conns = w->n_conns,
        .loop_id = (uint8_t)w->index,
        /* Deep enough to ride out a client's short stall at tens of thousands of calls/s
         * (a full queue drops responses rather than stalling a shared backend link);
         * chunks are taken from the loop's pool only while in use. */
        .out_cap_bytes = out_cap > (1u << 20) ? out_cap : (1u << 20),
        /* Enough for every link slot to queue two of the largest messages, whatever the
         * clients that stopped reading hold: backends are never starved of output. */
        .out_reserve_chunks =
            w->n_links * (uint32_t)((2 * (cfg->max_message_size + REPLY_ROOM)) / OUT_CHUNK_BYTES),
        .accept_rcvbuf_bytes = CLIENT_RCVBUF,
        .keepalive_idle_s = (uint32_t)(cfg->tcp_keepalive_ms / 1000),
        .spin_us = (uint32_t)cfg->spin_us,
    };
    struct slb_loop_cbs cbs = {
        .on_accept = on_accept,
        .on_connect = on_connect,
        .on_data = on_data,
        .on_drained = on_drained,
        .on_close = on_close,
        .on_msg = on_handoff,
        .on_msg_failed = on_handoff_failed,
        .on_eof = on_eof,
    };
    int rc = slb_loop_init(&w->loop, &opts, &cbs, w);
    if (rc < 0) {
        slb_log(SLB_LOG_ERROR, "worker %u: io_uring set-up failed: %s", w->index, strerror(-rc));
        return fail(w);
    }
    void *result = NULL;
    for (unsigned i = 0; i < cfg->n_listen; i++) {
        const struct slb_addr *a = &cfg->listen_addrs[i];
        uint32_t tag = (a->plain ? TAG_PLAIN_LISTENER : TAG_CLIENT) |
                       (a->ws ? TAG_WS_LISTENER : 0) | (i << TAG_LISTENER_SHIFT);
        /* The sockets an older process handed over first (their accept queues with them);
         * a socket of our own only where none came. */
        bool adopted = false;
        for (unsigned k = 0; k < w->n_adopt; k++) {
            if (w->adopt_listen[k] != i || w->adopt_fd[k] < 0)
                continue;
            rc = slb_loop_listen_fd(&w->loop, w->adopt_fd[k], tag);
            if (rc < 0) {
                slb_log(SLB_LOG_ERROR, "worker %u: cannot take over a listener of %s: %s", w->index,
                        a->text, strerror(-rc));
                close(w->adopt_fd[k]);
            } else {
                adopted = true;
                publish_listener(w, rc);
            }
            w->adopt_fd[k] = -1;
        }
        if (adopted)
            continue;
        rc =
            slb_loop_listen(&w->loop, (const struct sockaddr *)&a->sa, a->len, LISTEN_BACKLOG, tag);
        if (rc < 0) {
            slb_log(SLB_LOG_ERROR, "worker %u: cannot listen on %s: %s", w->index, a->text,
                    strerror(-rc));
            result = fail(w);
            goto out;
        }
        publish_listener(w, rc);
    }
    links_start(w);
    const char *stall = getenv("SLB_DEBUG_STALL_WORKER_MS");
    if (stall && w->index == 0)
        w->debug_stall_at_ms = slb_loop_now_ms(&w->loop) + strtoull(stall, NULL, 10);
    atomic_store_explicit(&w->heartbeat_ms, slb_clock_ms(), memory_order_relaxed);
    slb_timer_arm(slb_loop_wheel(&w->loop), &w->refresh, REFRESH_MS);
    atomic_store(&w->running, 1);
    if (!atomic_load(&w->stop_requested)) {
        rc = slb_loop_run(&w->loop);
        publish_loop_counters(w); /* the last refresh tick's worth too */
        drain_count_cut(w);
        if (rc < 0) {
            slb_log(SLB_LOG_ERROR, "worker %u: loop failed: %s", w->index, strerror(-rc));
            result = fail(w);
        }
    }
out:
    atomic_store(&w->stop_requested, 1); /* no redials during teardown */
    links_stop(w);
    slb_timer_cancel(&w->refresh);
    slb_timer_cancel(&w->resend_timer);
    if (w->draining)
        slb_timer_cancel(&w->drain_timer);
    slb_loop_deinit(&w->loop);
    slb_tls_thread_cleanup();
    return result;
}

static void publish_listener(struct slb_worker *w, int index)
{
    int fd = slb_loop_listener_fd(&w->loop, index);
    if (fd >= 0 && w->n_pub < SLB_LOOP_LISTENERS_MAX)
        w->pub_fd[w->n_pub++] = fd;
}

int slb_worker_adopt_listener(struct slb_worker *w, int fd, unsigned listen_index)
{
    if (w->n_adopt == SLB_LOOP_LISTENERS_MAX)
        return -ENOSPC;
    w->adopt_fd[w->n_adopt] = fd;
    w->adopt_listen[w->n_adopt++] = (uint8_t)listen_index;
    return 0;
}

unsigned slb_worker_listener_fds(const struct slb_worker *w, int *fds, unsigned max)
{
    if (!atomic_load(&w->running))
        return 0;
    unsigned n = w->n_pub < max ? w->n_pub : max;
    memcpy(fds, w->pub_fd, n * sizeof(int));
    return n;
}

void slb_worker_stop(struct slb_worker *w)
{
    atomic_store(&w->stop_requested, 1);
    if (atomic_load(&w->running))
        slb_loop_stop(&w->loop);
}

uint64_t slb_worker_heartbeat_ms(const struct slb_worker *w)
{
    return atomic_load_explicit(&w->heartbeat_ms, memory_order_relaxed);
}

bool slb_worker_running(const struct slb_worker *w)
{
    return atomic_load(&w->running) != 0;
}

bool slb_worker_failed(const struct slb_worker *w)
{
    return atomic_load(&w->failed) != 0;
}

const char *const slb_worker_counter_names[] = {
#define SLB_X_NAME(name) #name,
    SLB_WORKER_COUNTERS(SLB_X_NAME)
#undef SLB_X_NAME
};

void slb_worker_add_counters(const struct slb_worker *w, struct slb_worker_counters *sum)
{
#define SLB_X_ADD(name) sum->name += atomic_load_explicit(&w->c.name, memory_order_relaxed);
    SLB_WORKER_COUNTERS(SLB_X_ADD)
#undef SLB_X_ADD
    /* What the streams counted, under the names the stats file has always used. */
    const struct slb_stream_counters *sc = &w->env.c;
    sum->pending_pool_empty += atomic_load_explicit(&sc->pending_pool_empty, memory_order_relaxed);
    sum->closed_bad_input += atomic_load_explicit(&sc->closed_bad_input, memory_order_relaxed);
    sum->closed_input_flood += atomic_load_explicit(&sc->closed_input_flood, memory_order_relaxed);
    sum->closed_cut_write += atomic_load_explicit(&sc->closed_cut_write, memory_order_relaxed);
    sum->ws_upgrades += atomic_load_explicit(&sc->ws_upgrades, memory_order_relaxed);
    sum->ws_refused += atomic_load_explicit(&sc->ws_refused, memory_order_relaxed);
    sum->ws_protocol_errors += atomic_load_explicit(&sc->ws_protocol_errors, memory_order_relaxed);
    sum->ws_peer_closes += atomic_load_explicit(&sc->ws_peer_closes, memory_order_relaxed);
    sum->ws_pings += atomic_load_explicit(&sc->ws_pings, memory_order_relaxed);
}

void slb_worker_add_backend_stats(const struct slb_worker *w, unsigned b,
                                  struct slb_worker_backend_stats *sum)
{
    if (b >= SLB_MAX_BACKENDS)
        return;
    sum->requests += atomic_load_explicit(&w->c.per_backend[b].requests, memory_order_relaxed);
    sum->responses += atomic_load_explicit(&w->c.per_backend[b].responses, memory_order_relaxed);
    sum->links_up += atomic_load_explicit(&w->links_up[b], memory_order_relaxed);
    for (unsigned k = 0; k <= SLB_LATENCY_BUCKETS; k++)
        sum->latency_buckets[k] +=
            atomic_load_explicit(&w->c.per_backend[b].latency_buckets[k], memory_order_relaxed);
    sum->latency_sum_us +=
        atomic_load_explicit(&w->c.per_backend[b].latency_sum_us, memory_order_relaxed);
    sum->latency_count +=
        atomic_load_explicit(&w->c.per_backend[b].latency_count, memory_order_relaxed);
}

const uint32_t slb_latency_bounds_us[SLB_LATENCY_BUCKETS] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 5000000};

const char *const slb_tls_versions_seen[SLB_TLS_VERSIONS_SEEN] = {"1.2", "1.3", "other"};

void slb_worker_add_listener_stats(const struct slb_worker *w, unsigned l,
                                   struct slb_listener_stats *sum)
{
    if (l >= SLB_MAX_LISTEN)
        return;
    const struct slb_listener_stats_live *s = &w->c.listeners[l];
    sum->accepted += atomic_load_explicit(&s->accepted, memory_order_relaxed);
    sum->handshakes_ok += atomic_load_explicit(&s->handshakes_ok, memory_order_relaxed);
    sum->handshakes_failed += atomic_load_explicit(&s->handshakes_failed, memory_order_relaxed);
    sum->open += atomic_load_explicit(&s->open, memory_order_relaxed);
    for (unsigned v = 0; v < SLB_TLS_VERSIONS_SEEN; v++)
        sum->tls_open[v] += atomic_load_explicit(&s->tls_open[v], memory_order_relaxed);
}

uint32_t slb_worker_clients_open(const struct slb_worker *w)
{
    return atomic_load_explicit(&w->clients_open, memory_order_relaxed);
}

struct slb_loop *slb_worker_loop(struct slb_worker *w)
{
    return &w->loop;
}
