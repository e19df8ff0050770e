/* Admission of clients: --max-conns per worker, per-source connection, connection-rate
 * and handshake-rate limits and bans (core/limit), backends' own addresses exempt (and
 * marked: only an authenticated backend may send toward phones), the handshakes in
 * progress bounded by --max-handshakes (the oldest goes), and a client's end.
 *
 * Thread: the worker's. */
#include <errno.h>
#include <string.h>

#include "balancer/worker-priv.h"

void peer_address(struct relay_conn *c, const struct slb_conn *conn)
{
    slb_sockaddr_text((const struct sockaddr *)&conn->peer, c->ip, sizeof(c->ip), &c->port);
    c->ip_len = (uint8_t)strlen(c->ip);
}

/* The backend whose address a connection comes from (the allow-list for requests toward
 * clients), or -1. */
static int16_t backend_by_address(struct slb_worker *w, const struct sockaddr_storage *ss)
{
    const struct slb_route_table *t = route_table(w);
    for (unsigned b = 0; b < t->n_backends; b++) {
        const struct sockaddr_storage *a = &t->backends->spec[b].addr.sa;
        if (t->state[b] == SLB_BACKEND_REMOVED || a->ss_family != ss->ss_family)
            continue;
        if (ss->ss_family == AF_INET &&
            ((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr ==
                ((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr)
            return (int16_t)b;
        if (ss->ss_family == AF_INET6 &&
            !memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
                    &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr, 16))
            return (int16_t)b;
    }
    return -1;
}

static void hs_unlink(struct slb_worker *w, struct relay_conn *c)
{
    if (!c->in_hs_list)
        return;
    if (c->hs_prev)
        c->hs_prev->hs_next = c->hs_next;
    else
        w->hs_head = c->hs_next;
    if (c->hs_next)
        c->hs_next->hs_prev = c->hs_prev;
    else
        w->hs_tail = c->hs_prev;
    c->hs_prev = c->hs_next = NULL;
    c->in_hs_list = false;
    w->n_handshaking--;
}

/* A new TLS client joins the handshakes in progress; at --max-handshakes the oldest one
 * goes. A real handshake takes milliseconds, so whoever is evicted has been sitting on
 * its slot (silent or trickling connections) while newcomers keep getting in. */
static void hs_link(struct slb_worker *w, struct relay_conn *c)
{
    if (w->n_handshaking >= (uint32_t)w->cfg->max_handshakes && w->hs_head) {
        struct relay_conn *old = w->hs_head;
        COUNT(w, handshakes_evicted);
        hs_unlink(w, old);
        conn_close(old, false);
    }
    c->hs_next = NULL;
    c->hs_prev = w->hs_tail;
    if (w->hs_tail)
        w->hs_tail->hs_next = c;
    else
        w->hs_head = c;
    w->hs_tail = c;
    c->in_hs_list = true;
    w->n_handshaking++;
}

void limit_log(struct slb_worker *w, const struct relay_conn *c, const char *what, bool banned_now)
{
    /* One line per source per LIMIT_LOG_MS (and a process-wide rate bound), naming the
     * address so that fail2ban and the like can act on it. */
    uint64_t now = slb_loop_now_ms(&w->loop);
    if (banned_now) {
        COUNT(w, bans);
        slb_log_limited(&w->rl_limit, now, SLB_LOG_WARN, "limit: source %s banned for %llu ms (%s)",
                        c->ip, (unsigned long long)w->cfg->ban_time_ms, what);
        return;
    }
    if (slb_limit_should_log(w->sh->limits, c->src, now, LIMIT_LOG_MS))
        slb_log_limited(&w->rl_limit, now, SLB_LOG_WARN, "limit: source %s refused: %s", c->ip,
                        what);
}

static void count_refusal(struct slb_worker *w, enum slb_limit_verdict v)
{
    switch (v) {
    case SLB_LIMIT_CONNS:
        COUNT(w, limit_conns_refused);
        break;
    case SLB_LIMIT_CONN_RATE:
        COUNT(w, limit_conn_rate_refused);
        break;
    case SLB_LIMIT_HANDSHAKE_RATE:
        COUNT(w, limit_handshake_rate_refused);
        break;
    case SLB_LIMIT_BANNED:
        COUNT(w, banned_refused);
        break;
    case SLB_LIMIT_OK:
        break;
    }
}

/* Against its source's limits and bans (the peer's address, or the one a PROXY header
 * gave): 0, or -ECONNREFUSED (counted and logged). */
int admit_source(struct slb_worker *w, struct relay_conn *c, const struct sockaddr_storage *ss)
{
    c->backend_peer = backend_by_address(w, ss);
    c->exempt = c->backend_peer >= 0 || slb_cidr_match(w->cfg->allow, w->cfg->n_allow, ss);
    c->src = slb_limit_key(&w->sh->limits->key, ss);
    if (c->exempt)
        return 0;
    bool banned_now;
    enum slb_limit_verdict v =
        slb_limit_admit(w->sh->limits, c->src, slb_loop_now_ms(&w->loop), &banned_now);
    if (v != SLB_LIMIT_OK) {
        count_refusal(w, v);
        limit_log(w, c, slb_limit_verdict_name(v), banned_now);
        return -ECONNREFUSED;
    }
    c->src_counted = true;
    return 0;
}

/* Within --max-conns and its source's limits, or refused (closed at once; no on_close
 * follows). A connection that must first say who its client is (PROXY header) is judged
 * by its source once it has. */
static int admit(struct slb_worker *w, struct relay_conn *c, const struct slb_conn *conn)
{
    if (w->n_clients >= (uint32_t)w->cfg->max_conns) {
        COUNT(w, refused_max_conns);
        return -ECONNREFUSED;
    }
    if (proxy_hdr_expected(w, conn)) {
        c->proxy_wait = true;
        c->backend_peer = -1;
        c->exempt = true; /* until its header names the source */
    } else if (admit_source(w, c, &conn->peer) < 0) {
        return -ECONNREFUSED;
    }
    w->n_clients++;
    atomic_store_explicit(&w->clients_open, w->n_clients, memory_order_relaxed);
    COUNT(w, client_accepted);
    return 0;
}

int client_accept(struct slb_worker *w, struct slb_conn *conn)
{
    struct relay_conn *c = conn_at(w, conn);
    memset(c, 0, offsetof(struct relay_conn, ip));
    peer_address(c, conn);
    if (admit(w, c, conn) < 0)
        return -ECONNREFUSED;
    slb_conn_set_out_limits(conn, (uint32_t)w->cfg->client_out_max, false);
    bool plain = (conn->tag & TAG_PLAIN_LISTENER) != 0;
    unsigned listener = (conn->tag >> TAG_LISTENER_SHIFT) & TAG_LISTENER_MASK;
    /* A tcp:// listener (lab interop, legacy clients): no TLS, open at once, and never a
     * backend (nothing authenticates it). */
    if (slb_stream_open(&w->env, &c->s, conn, plain ? NULL : w->sctx, NULL, c) < 0) {
        if (c->src_counted)
            slb_limit_release(w->sh->limits, c->src);
        w->n_clients--;
        atomic_store_explicit(&w->clients_open, w->n_clients, memory_order_relaxed);
        UNCOUNT(w, client_accepted);
        return -ENOMEM;
    }
    c->kind = CONN_CLIENT;
    if (conn->tag & TAG_WS_LISTENER) {
        slb_stream_ws(&c->s); /* its HTTP Upgrade first, within the handshake timeout */
        if (!plain)
            slb_tls_conn_no_client_cert(&c->s.tls);
    }
    c->opened_ms = slb_loop_now_ms(&w->loop);
    c->listener = (uint8_t)(listener < SLB_MAX_LISTEN ? listener : 0);
    COUNT(w, listeners[c->listener].accepted);
    COUNT_N(w, listeners[c->listener].open, 1u);
    uint32_t timeout_ms = (uint32_t)(c->proxy_wait ? w->cfg->proxy_protocol_timeout_ms
                                     : plain       ? w->cfg->idle_timeout_ms
                                                   : w->cfg->handshake_timeout_ms);
    slb_conn_set_timeout(conn, timeout_ms);
    if (plain) {
        c->backend_peer = -1;
        return 0;
    }
    c->ctx = w->sctx;
    w->sctx_sessions++;
    slb_tls_conn_set_stash_max(&c->s.tls, CLIENT_STASH_MAX);
    hs_link(w, c);
    return 0;
}

bool handshake_allowed(struct slb_worker *w, struct relay_conn *c)
{
    /* A client's first handshake bytes: counted against its source's handshake rate. */
    c->hs_counted = true;
    if (c->exempt)
        return true;
    bool banned_now;
    enum slb_limit_verdict v =
        slb_limit_handshake(w->sh->limits, c->src, slb_loop_now_ms(&w->loop), &banned_now);
    if (v == SLB_LIMIT_OK)
        return true;
    count_refusal(w, v);
    limit_log(w, c, slb_limit_verdict_name(v), banned_now);
    conn_close(c, false);
    return false;
}

void client_handshake_done(struct slb_worker *w, struct relay_conn *c)
{
    COUNT(w, handshakes_ok);
    COUNT(w, listeners[c->listener].handshakes_ok);
    const char *v = slb_tls_version_name(&c->s.tls);
    unsigned k = !strcmp(v, "TLSv1.2") ? 0 : !strcmp(v, "TLSv1.3") ? 1 : 2;
    COUNT_N(w, listeners[c->listener].tls_open[k], 1u);
    c->tls_counted = (uint8_t)(1 + k);
    hs_unlink(w, c);
    /* Requests toward clients are taken only from authenticated backends: our own links,
     * or a connection from a backend's address whose certificate verified. */
    if (c->backend_peer >= 0 && !slb_tls_peer_verified(&c->s.tls)) {
        c->backend_peer = -1;
        c->unauth_backend = true;
        COUNT(w, backend_unauthenticated);
        slb_log_limited(&w->rl_auth, slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                        "worker %u: %s:%u comes from a backend's address without a verified "
                        "client certificate: treated as a client",
                        w->index, c->ip, c->port);
    }
    if (!c->s.ws) /* a WebSocket one: once its Upgrade came (client_ws_open) */
        slb_conn_set_timeout(c->s.conn, (uint32_t)w->cfg->idle_timeout_ms);
}

void client_ws_open(struct slb_worker *w, struct relay_conn *c)
{
    slb_conn_set_timeout(c->s.conn, (uint32_t)w->cfg->idle_timeout_ms);
}

void client_gone(struct slb_worker *w, struct relay_conn *c)
{
    COUNT_N(w, listeners[c->listener].open, (uint32_t)-1);
    if (c->tls_counted)
        COUNT_N(w, listeners[c->listener].tls_open[c->tls_counted - 1], (uint32_t)-1);
    c->tls_counted = 0;
    hs_unlink(w, c);
    proxy_hdr_release(w, c);
    if (c->src_counted)
        slb_limit_release(w->sh->limits, c->src);
    c->src_counted = false;
    w->n_clients--;
    atomic_store_explicit(&w->clients_open, w->n_clients, memory_order_relaxed);
    if (c->ctx)
        release_sctx(w, c->ctx);
    c->ctx = NULL;
    COUNT(w, client_closed);
}
