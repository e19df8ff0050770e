/* The worker's links to backends: --backend-conns persistent TLS connections per backend,
 * dialled at start, redialled after a backoff when they fail (a passive health signal to
 * the health checker), closed when a reload removes their backend and dialled at once when
 * a backend comes back up. Clients parked on a link retry when it is ready or gone.
 *
 * Thread: the worker's. */
#include <errno.h>
#include <string.h>

#include "balancer/health.h"
#include "balancer/worker-priv.h"

static void close_links(struct slb_worker *w, unsigned b);

/* A backend's address and names, from the newest table: a slot keeps its backend for the
 * process's life, so any table that lists the slot has the same names. */
static const struct slb_backend_spec *backend_spec(struct slb_worker *w, unsigned b)
{
    return &slb_router_peek(w->router)->backends->spec[b];
}

/* A new table: links for backends a reload added, closed links for those it removed, and a
 * backend that came back up gets its links dialled now rather than at the end of their
 * backoff. */
void links_reconcile(struct slb_worker *w, const struct slb_route_table *t)
{
    unsigned k = (unsigned)w->cfg->backend_conns;
    for (unsigned b = 0; b < t->n_backends; b++) {
        bool fresh = b >= w->n_known;
        if (t->state[b] == SLB_BACKEND_REMOVED) {
            if (!fresh && w->seen_state[b] != SLB_BACKEND_REMOVED)
                close_links(w, b);
        } else if (t->state[b] == SLB_BACKEND_DOWN) {
            /* Marked down with requests unanswered (it may hang without closing): they
             * go to the next backend now; a late answer from this one is dropped. */
            if (!fresh && w->seen_state[b] != SLB_BACKEND_DOWN)
                for (unsigned i = 0; i < k; i++)
                    resend_orphan_link(w, &w->links[b * k + i]);
        } else if (fresh || w->seen_state[b] == SLB_BACKEND_DOWN ||
                   w->seen_state[b] == SLB_BACKEND_REMOVED) {
            for (unsigned i = 0; i < k; i++) {
                struct link *l = &w->links[b * k + i];
                if (fresh || l->state == LINK_DOWN || l->state == LINK_REMOVED) {
                    slb_timer_cancel(&l->redial.timer);
                    l->state = LINK_DOWN;
                    slb_redial_ok(&l->redial);
                    link_dial(w, l);
                }
            }
        }
        w->seen_state[b] = t->state[b];
    }
    if (t->n_backends > w->n_known)
        w->n_known = t->n_backends;
    w->seen_gen = t->gen;
}

/* Clients parked on links that will not drain: the backend was marked down (it may hang
 * without closing its connections) or removed. They retry now, and re-route. Here, on the
 * timer, never from inside the handling of a message (that would re-enter it). */
void wake_stuck_parked(struct slb_worker *w, const struct slb_route_table *t)
{
    unsigned k = (unsigned)w->cfg->backend_conns;
    for (unsigned b = 0; b < w->n_known && b < t->n_backends; b++) {
        if (t->state[b] != SLB_BACKEND_DOWN && t->state[b] != SLB_BACKEND_REMOVED)
            continue;
        for (unsigned i = 0; i < k; i++)
            if (w->links[b * k + i].parked_head)
                wake_parked(w, &w->links[b * k + i]);
    }
}

struct link *pick_link(struct slb_worker *w, unsigned backend, uint64_t hash)
{
    /* A ready link (spread by the key hash), else one still connecting (the caller parks
     * on it until its handshake ends), else NULL. */
    unsigned k = (unsigned)w->cfg->backend_conns;
    struct link *first = &w->links[backend * k], *connecting = NULL;
    for (unsigned i = 0; i < k; i++) {
        struct link *l = &first[(hash + i) % k];
        if (l->state == LINK_READY)
            return l;
        if (l->state == LINK_CONNECTING && !connecting)
            connecting = l;
    }
    return connecting;
}

int backend_of_conn(const struct relay_conn *c)
{
    return c->kind == CONN_LINK ? (int)c->link->backend : c->backend_peer;
}

/* After a link failed: redial after a backoff, tell the health checker, and (wake) let
 * its parked clients retry now. link_dial passes wake = false: it runs inside the routing
 * of a message (route_table -> reconcile), which must not be re-entered; those clients are
 * woken when the link comes up, or by the refresh timer once the backend is down. */
/* Keeps w->links_up (read by the admin thread) in step with the link. */
static void count_link(struct slb_worker *w, struct link *l, bool up)
{
    if (l->counted_up == up)
        return;
    l->counted_up = up;
    _Atomic uint32_t *n = &w->links_up[l->backend];
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + (up ? 1u : -1u),
                          memory_order_relaxed);
}

static void schedule_redial(struct slb_worker *w, struct link *l, bool wake)
{
    count_link(w, l, false);
    resend_orphan_link(w, l); /* what it never answered goes elsewhere */
    l->conn = NULL;
    if (l->state == LINK_REMOVED) {
        if (wake)
            wake_parked(w, l);
        return; /* its backend was removed by a reload */
    }
    l->state = LINK_DOWN;
    if (atomic_load(&w->stop_requested))
        return; /* tearing down: no redial, no table change */
    slb_redial_backoff(&l->redial, &w->loop);
    /* A passive health signal: the control thread counts it and probes at once. */
    atomic_fetch_add_explicit(&w->signals->failures[l->backend], 1, memory_order_relaxed);
    if (wake)
        wake_parked(w, l);
}

void link_dial(struct slb_worker *w, struct link *l)
{
    const struct slb_backend_spec *b = backend_spec(w, l->backend);
    struct slb_conn_id id;
    resend_link_init(w, l);
    uint32_t tag = TAG_LINK + (uint32_t)(l - w->links);
    l->state = LINK_CONNECTING;
    int rc = slb_redial_connect(&w->loop, (const struct sockaddr *)&b->addr.sa, b->addr.len, tag,
                                (uint32_t)w->cfg->handshake_timeout_ms, &id);
    if (rc == -EMFILE || rc == -ENFILE) {
        /* Our limit, not the backend's failure: said so, and no health signal. */
        COUNT(w, fd_exhausted);
        slb_log_limited(&w->rl_fds, slb_loop_now_ms(&w->loop), SLB_LOG_ERROR,
                        "worker %u: out of file descriptors (%s) dialling backend %s; raise "
                        "RLIMIT_NOFILE or lower --max-conns",
                        w->index, strerror(-rc), b->name);
        l->state = LINK_DOWN;
        slb_redial_after(&l->redial, &w->loop, REDIAL_MS_MAX / 10);
        return;
    }
    if (rc < 0) {
        schedule_redial(w, l, false);
        return;
    }
    struct slb_conn *conn = slb_conn_get(&w->loop, id);
    if (conn)
        slb_conn_set_out_limits(conn, 0, true); /* links may use the reserved chunks */
}

int link_connected(struct slb_worker *w, struct link *l, struct slb_conn *conn, int res)
{
    if (res < 0) {
        COUNT(w, backend_connect_failed);
        const char *name = backend_spec(w, l->backend)->name, *err = strerror(-res);
        const struct slb_log_field f[] = {SLB_LOG_NUM("worker", w->index),
                                          SLB_LOG_STR("backend", name), SLB_LOG_STR("error", err)};
        slb_log_limited_event(&w->rl_backend, slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                              "backend_connect_failed", f, 3,
                              "worker %u: cannot connect to backend %s: %s", w->index, name, err);
        schedule_redial(w, l, true);
        return 0;
    }
    const struct slb_backend_spec *b = backend_spec(w, l->backend);
    struct relay_conn *c = conn_at(w, conn);
    memset(c, 0, offsetof(struct relay_conn, ip));
    peer_address(c, conn);
    if (slb_stream_open(&w->env, &c->s, conn, w->cctx, b->host, c) < 0) {
        schedule_redial(w, l, true);
        return -ENOMEM; /* io/ closes the connection */
    }
    slb_conn_set_timeout(conn, (uint32_t)w->cfg->handshake_timeout_ms);
    c->kind = CONN_LINK;
    c->backend_peer = -1;
    c->link = l;
    l->conn = c;
    COUNT(w, backend_connects);
    slb_redial_offer_session(&l->redial, &c->s);
    int ev = slb_tls_start(&c->s.tls);
    if (ev < 0) {
        relay_stream_ops.tls_failed(&c->s, ev);
        conn_close(c, true);
    }
    return 0;
}

void link_ready(struct slb_worker *w, struct relay_conn *c)
{
    COUNT(w, backend_handshakes_ok);
    slb_conn_set_timeout(c->s.conn, 0);
    struct link *l = c->link;
    l->state = LINK_READY;
    count_link(w, l, true);
    slb_redial_ok(&l->redial);
    wake_parked(w, l);
}

void link_lost(struct slb_worker *w, struct link *l, int reason)
{
    if (!atomic_load(&w->stop_requested)) {
        const char *name = backend_spec(w, l->backend)->name;
        const char *why = reason ? strerror(-reason) : "closed by peer";
        const struct slb_log_field f[] = {SLB_LOG_NUM("worker", w->index),
                                          SLB_LOG_STR("backend", name), SLB_LOG_STR("reason", why)};
        slb_log_limited_event(
            &w->rl_backend, slb_loop_now_ms(&w->loop), SLB_LOG_WARN, "backend_link_lost", f, 3,
            "worker %u: connection to backend %s closed: %s", w->index, name, why);
    }
    schedule_redial(w, l, true);
}

/* A reload removed backend b: its links close (after what is queued) and stay closed;
 * clients waiting on them re-route. */
static void close_links(struct slb_worker *w, unsigned b)
{
    unsigned k = (unsigned)w->cfg->backend_conns;
    for (unsigned i = 0; i < k; i++) {
        struct link *l = &w->links[b * k + i];
        slb_timer_cancel(&l->redial.timer);
        l->state = LINK_REMOVED;
        if (l->conn && l->conn->s.conn)
            slb_stream_shutdown(&l->conn->s);
        /* Clients parked on it are woken by the refresh timer (wake_stuck_parked): this
         * runs inside the routing of a message, which must not be re-entered. */
    }
}

static void on_redial(struct slb_timer *t)
{
    struct link *l = slb_timer_entry(t, struct link, redial.timer);
    link_dial(l->w, l);
}

void links_init(struct slb_worker *w)
{
    for (uint32_t i = 0; i < w->n_links; i++) {
        w->links[i].w = w;
        w->links[i].backend = (uint16_t)(i / (uint32_t)w->cfg->backend_conns);
        slb_redial_init(&w->links[i].redial, REDIAL_MS_MIN, REDIAL_MS_MAX, on_redial);
    }
}

void links_start(struct slb_worker *w)
{
    for (uint32_t i = 0; i < w->cfg->n_backends * (uint32_t)w->cfg->backend_conns; i++)
        link_dial(w, &w->links[i]);
}

void links_stop(struct slb_worker *w)
{
    for (uint32_t i = 0; i < w->n_links; i++)
        slb_timer_cancel(&w->links[i].redial.timer);
}
