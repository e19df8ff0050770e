/* Requests from backends toward phones (RFC 5626 flow tokens, RFC 3327 Path): the token in
 * our Route names the client connection, on this worker or another (the hand-over). A
 * token whose MAC fails gets 403; a flow that is gone, 430 Flow Failed; a client that
 * cannot take the request now, 503 with Retry-After (one slow phone must not stall the
 * backend's connection).
 *
 * Thread: the worker's. */
#include "balancer/worker-priv.h"

/* The client connection the flow token names on this worker, if it can take a request:
 * one that shut its write side can answer nothing (responses still reach it). */
static struct relay_conn *local_client(struct slb_worker *w, uint64_t flow)
{
    struct slb_conn *conn = slb_conn_get(&w->loop, (struct slb_conn_id){flow});
    struct relay_conn *c = conn ? conn->owner : NULL;
    if (!c || c->kind != CONN_CLIENT || !conn_open(c) || c->eof)
        return NULL;
    return c;
}

/* The request as it leaves for the phone: our Via, our Route gone, and for a dialog a
 * Record-Route naming the backend it came from. */
static int edit_toward(struct slb_worker *w, struct relay_conn *from, const struct in_msg *im)
{
    const struct slb_sip_msg *m = im->m;
    struct slb_sip_edit *e = &w->edit;
    slb_sip_edit_init(e, im->base, m->msg_len);
    int rc = slb_proxy_request_edits(e, m, &w->self, from->ip, from->ip_len, from->port,
                                     from->s.id.v, true, 0, NULL);
    if (rc == 0)
        rc = drop_our_route(e, im);
    int b = backend_of_conn(from);
    if (rc == 0 && slb_proxy_dialog_forming(m) && b >= 0)
        rc = slb_proxy_record_route(e, m, &w->self, route_table(w)->backends->spec[b].token,
                                    im->route.flow, im->route.flow_flags, true);
    return rc;
}

enum step toward_client(struct slb_worker *w, struct relay_conn *from, const struct in_msg *im)
{
    const struct slb_sip_msg *m = im->m;
    const struct slb_route_info *ri = &im->route;
    COUNT(w, requests_to_clients);
    if (!ri->flow_ok) {
        COUNT(w, flow_bad_mac);
        reply(w, from, im, 403, "Forbidden - Bad Flow Token", NULL);
        return STEP_NEXT;
    }
    if (m->max_forwards == 0 || m->via_count >= SLB_SIP_MAX_VIAS) {
        reply(w, from, im, 483, "Too Many Hops", NULL);
        return STEP_NEXT;
    }
    if (m->method_id != SLB_METHOD_ACK && reject_request(w, from, im))
        return STEP_NEXT;
    unsigned dst_worker = slb_conn_id_loop((struct slb_conn_id){ri->flow});
    struct relay_conn *c =
        dst_worker == w->index && !ri->flow_elsewhere ? local_client(w, ri->flow) : NULL;
    if (ri->flow_elsewhere || (dst_worker == w->index && !c) || dst_worker >= w->cfg->n_workers) {
        /* RFC 5626 5.3: the flow is gone (or another process's: a sipslb before a restart,
         * or another instance sharing --secret-file). */
        COUNT(w, flow_failed);
        reply(w, from, im, 430, "Flow Failed", NULL);
        return STEP_NEXT;
    }
    if (edit_toward(w, from, im) < 0) {
        reply(w, from, im, 513, "Message Too Large", NULL);
        return STEP_NEXT;
    }
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    int n = slb_sip_edit_iov(&w->edit, iov, (int)SLB_SIP_EDIT_MAX_IOV);
    size_t len = slb_sip_edit_len(&w->edit);
    int rc = c ? send_to(w, c, iov, n, len) : hand_over(w, dst_worker, ri->flow, iov, n, len);
    if (rc < 0) {
        COUNT(w, to_client_busy);
        reply_busy(w, from, im, "Service Unavailable - Flow Busy", 1);
        return STEP_NEXT;
    }
    COUNT(w, requests_to_clients_forwarded);
    return STEP_NEXT;
}
