/* A client's request: checked (rate, hops, RFC 3261 16.3), routed to a backend (our Route
 * for in-dialog requests, the pending-INVITE map for CANCEL and non-2xx ACK, else Maglev
 * on the Call-ID), edited (Via, Record-Route, Path, our Route popped) and forwarded on one
 * of the backend's links, or parked on a link that has no room yet.
 *
 * Thread: the worker's. */
#include <errno.h>

#include "balancer/maglev.h"
#include "balancer/worker-priv.h"

/* The backend slot whose Record-Route token this is, among those still configured. */
int backend_by_token(const struct slb_route_table *t, uint32_t token)
{
    for (unsigned i = 0; i < t->n_backends; i++)
        if (t->state[i] != SLB_BACKEND_REMOVED && t->backends->spec[i].token == token)
            return (int)i;
    return -1;
}

/* --limit-request-rate: true when the request was answered (503) or the client closed. */
static bool over_request_rate(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im,
                              bool ack)
{
    uint64_t now = slb_loop_now_ms(&w->loop);
    if (c->exempt || slb_rate_allow(&w->rates, c->src, now))
        return false;
    bool banned_now = slb_limit_offence(w->sh->limits, c->src, now);
    limit_log(w, c, "sending requests too fast", banned_now);
    if (banned_now) {
        conn_close(c, true);
        return true;
    }
    if (!ack) {
        COUNT(w, limit_request_rate_503);
        reply_busy(w, c, im, "Service Unavailable - Rate Limited", (unsigned)w->cfg->retry_after_s);
    }
    return true;
}

/* Whether the request may go on; when not, it was answered (or an ACK dropped). */
static bool admissible(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im,
                       enum step *step)
{
    const struct slb_sip_msg *m = im->m;
    bool ack = m->method_id == SLB_METHOD_ACK;
    *step = STEP_NEXT;
    if (w->rates.rate && over_request_rate(w, c, im, ack)) {
        *step = conn_open(c) ? STEP_NEXT : STEP_STOP;
        return false;
    }
    /* RFC 3261 16.3 step 2 (Max-Forwards 0); also a request already carrying as many Via
     * values as we keep, whose responses could not come back through us. An ACK gets no
     * response. */
    if (m->max_forwards == 0 || m->via_count >= SLB_SIP_MAX_VIAS) {
        if (!ack)
            reply(w, c, im, 483, "Too Many Hops", NULL);
        else
            COUNT(w, drop_ack_unroutable);
        return false;
    }
    return ack || !reject_request(w, c, im);
}

/* Where the request goes: the backend our Route names while it is up or draining (its
 * dialog stays there), else where its INVITE went (CANCEL, non-2xx ACK), else Maglev.
 * Returns the backend or SLB_MAGLEV_NONE; *pkey is the pending-INVITE key (0: none);
 * *pinned says the request must reach that very backend (its dialog or its INVITE is
 * there). */
static uint16_t choose_backend(struct slb_worker *w, const struct in_msg *im,
                               const struct slb_route_table *t, uint64_t h, uint64_t now,
                               uint64_t *pkey, bool *pinned)
{
    const struct slb_sip_msg *m = im->m;
    *pkey = 0;
    *pinned = true;
    if (im->route.has_backend) {
        int idx = backend_by_token(t, im->route.backend);
        if (idx >= 0 && t->state[idx] != SLB_BACKEND_DOWN) {
            COUNT(w, sticky_routed);
            if (t->state[idx] == SLB_BACKEND_DRAINING)
                atomic_store_explicit(&w->drain_clock->last_ms[idx], now, memory_order_relaxed);
            return (uint16_t)idx;
        }
        COUNT(w, sticky_fallback);
    }
    bool invite = m->method_id == SLB_METHOD_INVITE;
    if (invite || m->method_id == SLB_METHOD_ACK || m->method_id == SLB_METHOD_CANCEL)
        *pkey = slb_pending_invite_key(&w->pending, m->top_via.branch, m->call_id);
    if (!invite && *pkey) {
        int pb = slb_pending_invite_find(&w->pending, *pkey, now);
        if (pb >= 0 && (unsigned)pb < t->n_backends && t->state[pb] != SLB_BACKEND_DOWN &&
            t->state[pb] != SLB_BACKEND_REMOVED) {
            COUNT(w, pending_routed);
            return (uint16_t)pb;
        }
    }
    *pinned = false;
    return slb_maglev_lookup(&t->maglev, h);
}

/* The request as it leaves for backend b: our Via, our Route gone, Record-Route for a
 * dialog, Path for a REGISTER; *tx is our branch's transaction hash. Returns 0 or a
 * negative errno (too large). */
int edit_client_request(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im,
                        const struct slb_backend_spec *b, uint32_t *tx)
{
    const struct slb_sip_msg *m = im->m;
    struct slb_sip_edit *e = &w->edit;
    unsigned flow_flags = c->s.ws ? SLB_FLOW_WS : c->s.plain ? SLB_FLOW_PLAIN : 0;
    slb_sip_edit_init(e, im->base, m->msg_len);
    int rc = slb_proxy_request_edits(
        e, m, &w->self, c->ip, c->ip_len, c->port, c->s.id.v, false,
        /* an ACK gets no response: no send time (0: none) */
        m->method_id == SLB_METHOD_ACK ? 0 : slb_loop_now_us(&w->loop) | 1u, tx);
    if (rc == 0 && im->route.ours)
        rc = drop_our_route(e, im);
    if (rc == 0 && slb_proxy_dialog_forming(m))
        rc = slb_proxy_record_route(e, m, &w->self, b->token, c->s.id.v, flow_flags, false);
    if (rc == 0 && m->method_id == SLB_METHOD_REGISTER && !w->cfg->no_path)
        rc = slb_proxy_path(e, m, &w->self, c->s.id.v, flow_flags);
    return rc;
}

/* The client waits for room on l; its request is routed again when it is woken. */
static enum step wait_on(struct slb_worker *w, struct relay_conn *c, struct link *l)
{
    park(w, c, l);
    UNCOUNT(w, requests_in); /* counted again when it is retried */
    return STEP_STOP;
}

int drop_our_route(struct slb_sip_edit *e, const struct in_msg *im)
{
    /* RFC 3261 16.4: our own Route value goes; after a strict router, the last Route
     * becomes the Request-URI instead. */
    if (im->strict) {
        int rc = slb_sip_edit_strict_route(e, im->m);
        return rc == -ENOENT ? 0 : rc;
    }
    return slb_sip_edit_pop_list_values(e, im->m, SLB_HDR_ROUTE, im->route.count);
}

enum step route_client_request(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im)
{
    const struct slb_sip_msg *m = im->m;
    COUNT(w, requests_in);
    enum step step;
    if (!admissible(w, c, im, &step))
        return step;
    bool ack = m->method_id == SLB_METHOD_ACK;
    const struct slb_route_table *t = route_table(w);
    uint64_t now = slb_loop_now_ms(&w->loop), pkey;
    uint64_t h = slb_route_hash(m->call_id);
    bool pinned;
    uint16_t b = choose_backend(w, im, t, h, now, &pkey, &pinned);
    struct link *l = b == SLB_MAGLEV_NONE ? NULL : pick_link(w, b, h);
    bool may_move = !pinned || m->method_id == SLB_METHOD_BYE || ack;
    if (!l && b != SLB_MAGLEV_NONE && may_move) {
        /* Its backend has no link up and none being dialled (they just failed; the health
         * checker has not marked it down yet): the next choice, as failover.c re-sends.
         * Not for a request its dialog or INVITE pins there (but a BYE or ACK: another
         * backend can only end the dialog, which is what they ask): it gets 503, which
         * lets the client try again, where another backend's 481 would end the dialog. */
        b = slb_maglev_lookup_except(&t->maglev, h, b);
        l = b == SLB_MAGLEV_NONE ? NULL : pick_link(w, b, h);
        if (l)
            COUNT(w, routed_around_link_down);
    }
    if (!l) {
        if (ack)
            COUNT(w, drop_ack_unroutable);
        else
            reply_busy(w, c, im, "Service Unavailable", (unsigned)w->cfg->retry_after_s);
        return STEP_NEXT;
    }
    if (l->state != LINK_READY)
        return wait_on(w, c, l);
    uint32_t tx;
    if (edit_client_request(w, c, im, &t->backends->spec[b], &tx) < 0) {
        reply(w, c, im, 513, "Message Too Large", NULL);
        return STEP_NEXT;
    }
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    int n = slb_sip_edit_iov(&w->edit, iov, (int)SLB_SIP_EDIT_MAX_IOV);
    int rc = send_to(w, l->conn, iov, n, slb_sip_edit_len(&w->edit));
    if (rc == -ENOBUFS)
        return wait_on(w, c, l);
    if (rc < 0)
        return STEP_NEXT;
    if (m->method_id == SLB_METHOD_INVITE && pkey)
        slb_pending_invite_put(&w->pending, pkey, b, now);
    if (!ack) {
        c->awaiting++;
        resend_keep(w, l, c, im, tx, false); /* ACK has no response to wait for */
    }
    COUNT(w, requests_forwarded);
    COUNT(w, per_backend[b].requests);
    return STEP_NEXT;
}
