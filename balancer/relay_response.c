/* Any response: our top Via names the connection its request came from (RFC 3261 16.7: a
 * response whose top Via is not ours is not for us). That connection may be a client's,
 * one of our links, or a backend's connection to us, on this worker or another. When it
 * is gone, a client's answer to a backend's request goes back on one of our links to that
 * backend; anything else is dropped and counted.
 *
 * Thread: the worker's. */
#include <string.h>

#include "balancer/worker-priv.h"

/* A response relayed: by class, and per backend when one of our links brought it. */
/* A final response from a backend: the time since its request left, from our Via. */
static void count_latency(struct slb_worker *w, unsigned b, const struct slb_sip_msg *m)
{
    uint64_t sent;
    if (!slb_proxy_response_sent(m, &w->self, &sent))
        return;
    uint64_t us = (slb_loop_now_us(&w->loop) - sent) & SLB_SENT_MASK;
    unsigned k = 0;
    while (k < SLB_LATENCY_BUCKETS && us > slb_latency_bounds_us[k])
        k++;
    COUNT(w, per_backend[b].latency_buckets[k]);
    COUNT_N(w, per_backend[b].latency_sum_us, us);
    COUNT(w, per_backend[b].latency_count);
}

static void count_response(struct slb_worker *w, const struct relay_conn *from,
                           const struct slb_sip_msg *m)
{
    unsigned status = m->status;
    if (from->kind == CONN_LINK) {
        COUNT(w, per_backend[from->link->backend].responses);
        if (status >= 200)
            count_latency(w, from->link->backend, m);
    }
    switch (status / 100) {
    case 1:
        COUNT(w, responses_1xx);
        break;
    case 2:
        COUNT(w, responses_2xx);
        break;
    case 3:
        COUNT(w, responses_3xx);
        break;
    case 4:
        COUNT(w, responses_4xx);
        break;
    case 5:
        COUNT(w, responses_5xx);
        break;
    default:
        COUNT(w, responses_6xx);
    }
}

/* The backend a response must go back to when the connection it came from is gone: the
 * backend whose host:port is the sent-by of the Via below ours. */
static struct relay_conn *backend_for_via(struct slb_worker *w, const struct slb_sip_msg *m)
{
    if (m->via_count < 2)
        return NULL;
    struct slb_sip_via v;
    if (slb_sip_via_parse(m->vias[1].value, &v) < 0)
        return NULL;
    const struct slb_route_table *t = route_table(w);
    for (unsigned b = 0; b < t->n_backends; b++) {
        const struct slb_backend_spec *s = &t->backends->spec[b];
        if (t->state[b] == SLB_BACKEND_REMOVED || v.port != s->port ||
            v.host.len != strlen(s->host) || memcmp(v.host.ptr, s->host, v.host.len))
            continue;
        struct link *l = pick_link(w, b, 0);
        return l && l->state == LINK_READY ? l->conn : NULL;
    }
    return NULL;
}

/* The INVITE is answered: its pending entry stays only for the ACK and retransmissions. */
static void invite_answered(struct slb_worker *w, const struct slb_sip_msg *m)
{
    struct slb_sip_via cv;
    if (slb_sip_via_parse(m->vias[1].value, &cv) < 0)
        return;
    uint64_t key = slb_pending_invite_key(&w->pending, cv.branch, m->call_id);
    slb_pending_invite_answered(&w->pending, key, slb_loop_now_ms(&w->loop));
}

void relay_response(struct slb_worker *w, struct relay_conn *from, const struct in_msg *im)
{
    const struct slb_sip_msg *m = im->m;
    COUNT(w, responses_in);
    uint64_t id;
    uint32_t tx;
    bool to_backend_side;
    if (!slb_proxy_response_target(m, &w->self, &id, &tx, &to_backend_side)) {
        COUNT(w, drop_response_not_ours);
        return;
    }
    /* A response crosses from one side to the other: a client answers a backend's request,
     * a backend a client's. A client's response naming another client's connection (or a
     * backend's naming a backend's) is forged, whatever its MAC. */
    bool from_client = from->kind == CONN_CLIENT && from->backend_peer < 0;
    if (from_client == !to_backend_side) {
        COUNT(w, drop_response_forged);
        return;
    }
    /* Its request is answered: no longer a copy to re-send (or re-sent already). */
    int backend = from_client ? -1 : backend_of_conn(from);
    if (backend >= 0 && (unsigned)backend < w->n_known &&
        !resend_response(w, (unsigned)backend, m, id, tx))
        return;
    struct slb_sip_edit *e = &w->edit;
    slb_sip_edit_init(e, im->base, m->msg_len);
    if (slb_sip_edit_pop_via(e, m) < 0)
        return;
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    int n = slb_sip_edit_iov(e, iov, (int)SLB_SIP_EDIT_MAX_IOV);
    size_t len = slb_sip_edit_len(e);
    unsigned dst_worker = slb_conn_id_loop((struct slb_conn_id){id});
    if (m->status >= 200 && m->cseq_method_id == SLB_METHOD_INVITE && m->via_count > 1 &&
        dst_worker == w->index)
        invite_answered(w, m);
    if (dst_worker != w->index && dst_worker < w->cfg->n_workers &&
        hand_over(w, dst_worker, id, iov, n, len) == 0) {
        COUNT(w, responses_forwarded);
        count_response(w, from, m);
        return;
    }
    struct slb_conn *conn =
        dst_worker == w->index ? slb_conn_get(&w->loop, (struct slb_conn_id){id}) : NULL;
    struct relay_conn *to = conn ? conn->owner : NULL;
    if (!to || !conn_open(to))
        to = from_client ? backend_for_via(w, m) : NULL;
    if (!to) {
        COUNT(w, drop_response_stale_client);
        return;
    }
    /* A client that does not read its responses loses them rather than stalling the
     * connection that others share. */
    if (send_to(w, to, iov, n, len) < 0) {
        COUNT(w, drop_response_client_full);
        return;
    }
    COUNT(w, responses_forwarded);
    if (from_client)
        COUNT(w, responses_to_backends);
    else if (m->status >= 200)
        final_delivered(to);
    count_response(w, from, m);
}
