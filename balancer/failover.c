/* Requests a backend never answered are not lost: every request forwarded on a link is
 * copied into the link's re-send store (resend.h) until the first response of its
 * transaction comes back. When the link fails (reset, close, TLS error) or its backend is
 * marked down, each copy still unanswered goes, once, to the next choice for its Call-ID
 * (the Maglev table's next backend, the same in every worker and every process), or, when
 * there is none, the client gets 503 with Retry-After at once instead of waiting for its
 * transaction timers. A copy that is itself a re-send is answered 503 if it fails again.
 *
 * The re-sending runs from a timer armed at once, never inside the handling of the message
 * or the close that found the failure: it edits, scans and sends, which must not re-enter.
 *
 * Thread: the worker's. */
#include <errno.h>
#include <string.h>

#include "balancer/maglev.h"
#include "balancer/worker-priv.h"

/* A copy older than this is forgotten: the client's transaction (Timer B or F, 64*T1) is
 * over, so re-sending it could only do harm. */
#define RESEND_MAX_AGE_MS 32000u

/* The link's store, set up the first time it is dialled (its memory stays for the life of
 * the process: a link slot keeps its backend). */
void resend_link_init(struct slb_worker *w, struct link *l)
{
    if (l->rs_ready || w->cfg->resend_max_requests <= 0)
        return;
    l->rs_ready = true;
    if (slb_resend_init(&l->rs, (uint32_t)w->cfg->resend_max_requests,
                        (size_t)w->cfg->resend_max_bytes) < 0)
        slb_log(SLB_LOG_WARN, "worker %u: no memory for the re-send copies of a link to %s",
                w->index, slb_router_peek(w->router)->backends->spec[l->backend].name);
}

void resend_keep(struct slb_worker *w, struct link *l, const struct relay_conn *c,
                 const struct in_msg *im, uint32_t tx, bool resent)
{
    if (!l->rs.max_entries)
        return;
    const struct slb_sip_msg *m = im->m;
    uint64_t key = slb_resend_key(c->s.id.v, tx, m->method_id == SLB_METHOD_CANCEL);
    int rc = slb_resend_keep(&l->rs, key, c->s.id.v, im->base, m->msg_len,
                             slb_loop_now_ms(&w->loop), resent);
    if (rc == -ENOSPC || rc == -ENOBUFS)
        COUNT(w, resend_store_full);
}

bool resend_response(struct slb_worker *w, unsigned backend, const struct slb_sip_msg *m,
                     uint64_t conn_id, uint32_t tx)
{
    /* Looked for on every link to that backend: a backend should answer on the connection
     * the request came by (RFC 3261 18.2.2), but one that does not must still free it, or
     * a later failure would re-send what was answered. */
    uint64_t key = slb_resend_key(conn_id, tx, m->cseq_method_id == SLB_METHOD_CANCEL);
    unsigned k = (unsigned)w->cfg->backend_conns;
    for (unsigned i = 0; i < k; i++) {
        struct link *l = &w->links[backend * k + i];
        if (!l->rs.used)
            continue;
        enum slb_resend_state st = slb_resend_answered(&l->rs, key);
        if (st == SLB_RESEND_MOVED) {
            /* Re-sent to another backend while this one was down: that one answers. */
            COUNT(w, resend_late_dropped);
            return false;
        }
        if (st != SLB_RESEND_FREE)
            return true;
    }
    return true;
}

void resend_orphan_link(struct slb_worker *w, struct link *l)
{
    if (!l->rs.used || atomic_load(&w->stop_requested))
        return;
    if (slb_resend_orphan_all(&l->rs) && !slb_timer_armed(&w->resend_timer))
        slb_timer_arm(slb_loop_wheel(&w->loop), &w->resend_timer, 0);
}

void resend_expire(struct slb_worker *w, uint64_t now_ms)
{
    uint32_t n = (uint32_t)(w->n_known * (uint64_t)w->cfg->backend_conns);
    for (uint32_t i = 0; i < n && i < w->n_links; i++)
        if (w->links[i].rs.used)
            COUNT_N(w, resend_expired,
                    slb_resend_expire(&w->links[i].rs, now_ms, RESEND_MAX_AGE_MS));
}

/* Where a copy from link l goes when its backend is still up (only this link failed, or
 * it has not been marked down yet): to the same backend over another ready link when it
 * must stay there (an in-dialog request our Route pins to it, a CANCEL of an INVITE it
 * has); else a BYE or ACK of such a dialog goes to the next choice (the other backend can
 * only end the dialog, which is what a BYE asks), any other request of it gets 503 (the
 * client may retry, where a 481 from another backend would end its dialog); anything else
 * goes to the next choice for its Call-ID. When the backend is down or removed everything
 * goes to the next choice, as new requests do. Returns the link, or NULL for 503. */
static struct link *next_link(struct slb_worker *w, const struct in_msg *im,
                              const struct slb_route_table *t, uint64_t h, const struct link *l,
                              uint64_t *pkey, uint16_t *pb_out)
{
    const struct slb_sip_msg *m = im->m;
    unsigned failed = l->backend;
    *pkey = 0;
    if (m->method_id == SLB_METHOD_INVITE || m->method_id == SLB_METHOD_CANCEL)
        *pkey = slb_pending_invite_key(&w->pending, m->top_via.branch, m->call_id);
    int pinned = -1; /* the backend this request must reach, if any */
    if (m->method_id == SLB_METHOD_CANCEL && *pkey)
        pinned = slb_pending_invite_find(&w->pending, *pkey, slb_loop_now_ms(&w->loop));
    else if (im->route.has_backend)
        pinned = backend_by_token(t, im->route.backend);
    bool failed_up = failed < t->n_backends && t->state[failed] != SLB_BACKEND_DOWN &&
                     t->state[failed] != SLB_BACKEND_REMOVED;
    uint16_t b;
    if (pinned >= 0 && (unsigned)pinned != failed && (unsigned)pinned < t->n_backends &&
        t->state[pinned] != SLB_BACKEND_DOWN && t->state[pinned] != SLB_BACKEND_REMOVED) {
        b = (uint16_t)pinned; /* a CANCEL whose INVITE was re-sent elsewhere first */
    } else if ((unsigned)pinned == failed && failed_up) {
        struct link *same = pick_link(w, failed, h);
        if (same && same->state == LINK_READY) {
            *pb_out = (uint16_t)failed;
            return same;
        }
        if (m->method_id != SLB_METHOD_BYE && m->method_id != SLB_METHOD_ACK)
            return NULL;
        b = slb_maglev_lookup_except(&t->maglev, h, (uint16_t)failed);
    } else {
        b = slb_maglev_lookup_except(&t->maglev, h, (uint16_t)failed);
    }
    if (b == SLB_MAGLEV_NONE)
        return NULL;
    struct link *to = pick_link(w, b, h);
    *pb_out = b;
    return to && to->state == LINK_READY ? to : NULL;
}

/* One orphan of link l: re-sent, answered 503, or dropped when its client is gone. */
static void resend_one(struct slb_worker *w, struct link *l, uint32_t i)
{
    const struct slb_resend_entry *x = &l->rs.e[i];
    struct slb_conn *conn = slb_conn_get(&w->loop, (struct slb_conn_id){x->client});
    struct relay_conn *c = conn ? conn->owner : NULL;
    if (!c || c->kind != CONN_CLIENT || !conn_open(c)) {
        COUNT(w, resend_client_gone); /* nobody is left to answer */
        return;
    }
    uint32_t len = slb_resend_copy_out(&l->rs, i, w->resend_buf);
    bool resent = x->resent;
    struct slb_sip_msg *m = &w->resend_msg;
    if (slb_sip_scan(w->resend_buf, len, &w->env.lim, m, w->resend_hdrs,
                     SLB_SIP_MAX_HEADERS_DEFAULT) < 0 ||
        m->msg_len != len)
        return; /* the same bytes scanned when they came in: cannot happen */
    struct in_msg im = {.base = w->resend_buf, .m = m};
    slb_proxy_route_info(m, &w->self, &im.route);
    im.strict = !im.route.ours && slb_proxy_strict_routed(m, &w->self, &im.route);
    const struct slb_route_table *t = route_table(w);
    uint64_t h = slb_route_hash(m->call_id), pkey = 0;
    uint16_t b = SLB_MAGLEV_NONE;
    struct link *to = resent ? NULL : next_link(w, &im, t, h, l, &pkey, &b);
    if (to) {
        uint32_t tx;
        if (edit_client_request(w, c, &im, &t->backends->spec[b], &tx) == 0) {
            struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
            int n = slb_sip_edit_iov(&w->edit, iov, (int)SLB_SIP_EDIT_MAX_IOV);
            if (send_to(w, to->conn, iov, n, slb_sip_edit_len(&w->edit)) == 0) {
                if (m->method_id == SLB_METHOD_INVITE && pkey)
                    slb_pending_invite_put(&w->pending, pkey, b, slb_loop_now_ms(&w->loop));
                resend_keep(w, to, c, &im, tx, true);
                COUNT(w, requests_resent);
                COUNT(w, per_backend[b].requests);
                return;
            }
        }
    }
    COUNT(w, resend_answered_503);
    reply_busy(w, c, &im, "Service Unavailable", (unsigned)w->cfg->retry_after_s);
    final_delivered(c); /* our 503 is its final answer */
}

static void on_resend(struct slb_timer *tm)
{
    struct slb_worker *w = slb_timer_entry(tm, struct slb_worker, resend_timer);
    uint32_t n = (uint32_t)(w->n_known * (uint64_t)w->cfg->backend_conns);
    for (uint32_t k = 0; k < n && k < w->n_links; k++) {
        struct link *l = &w->links[k];
        /* One walk in age order. Each settled orphan keeps its key (MOVED): late answers
         * from this backend, even over a new connection, are dropped. Nothing frees an
         * entry during resend_one, so the cursor stays valid. */
        for (uint32_t i = slb_resend_next_orphan(&l->rs, SLB_RESEND_NONE); i != SLB_RESEND_NONE;
             i = slb_resend_next_orphan(&l->rs, i)) {
            const struct slb_route_table *t = route_table(w);
            if (l->state == LINK_READY && t->state[l->backend] != SLB_BACKEND_DOWN &&
                t->state[l->backend] != SLB_BACKEND_REMOVED) {
                slb_resend_unorphan(&l->rs, i); /* marked down, then up again: still there */
                continue;
            }
            resend_one(w, l, i);
            slb_resend_settle(&l->rs, i, true);
        }
    }
}

void resend_init(struct slb_worker *w)
{
    slb_timer_init(&w->resend_timer, on_resend);
}

void resend_deinit(struct slb_worker *w)
{
    for (uint32_t i = 0; w->links && i < w->n_links; i++)
        if (w->links[i].rs_ready)
            slb_resend_deinit(&w->links[i].rs);
}
