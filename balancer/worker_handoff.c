/* Messages for a connection on another worker (a response to a client there, a request
 * toward a phone there): copied into a slot of this worker's outbox and posted to that
 * worker's loop (handoff.h has the one encoding); the receiver sends the bytes from the
 * slot and posts the slot back. A message whose connection went away meanwhile: a
 * request gets 430 Flow Failed, sent back like any response; a response is dropped.
 *
 * Invariants: a slot is written only by its owner while free, read only by the one
 * receiver it was posted to, and free again only once returned (or its post failed).
 * Thread: the worker's (each side on its own). */
#include <errno.h>
#include <string.h>

#include "balancer/worker-priv.h"

static int post(struct slb_worker *to, const struct slb_handoff *h)
{
    uint64_t a, b;
    slb_handoff_encode(h, &a, &b);
    return slb_loop_post(slb_worker_loop(to), a, b);
}

/* Gives a slot back to its owner; if the post cannot go now, the refresh timer retries. */
static void return_slot(struct slb_worker *w, unsigned owner, uint16_t slot)
{
    struct slb_handoff back = {.kind = SLB_HANDOFF_RETURN, .worker = (uint8_t)owner, .slot = slot};
    if (post(w->sh->workers[owner], &back) < 0 && w->n_returns < w->returns_cap)
        w->returns[w->n_returns++] = (struct slot_return){(uint8_t)owner, slot};
}

int hand_over(struct slb_worker *w, unsigned dst_worker, uint64_t dst, const struct iovec *iov,
              int n, size_t len)
{
    int slot = slb_outbox_fill(&w->outbox, dst, iov, n, len);
    if (slot < 0)
        return slot;
    struct slb_handoff h = {.kind = SLB_HANDOFF_MESSAGE,
                            .worker = (uint8_t)w->index,
                            .slot = (uint16_t)slot,
                            .len = (uint32_t)len};
    int rc = post(w->sh->workers[dst_worker], &h);
    if (rc < 0) {
        slb_outbox_release(&w->outbox, (uint16_t)slot);
        return rc;
    }
    COUNT(w, handoffs_sent);
    return 0;
}

/* The client is gone (or full): a request gets 430 Flow Failed (RFC 5626 5.3), sent back
 * like any response, by our Via on top of it. */
static void flow_failed(struct slb_worker *w, const char *msg, size_t len)
{
    struct slb_stream_env *env = &w->env;
    if (slb_sip_scan(msg, len, &env->lim, &env->msg, env->hdrs, SLB_SIP_MAX_HEADERS_DEFAULT) < 0 ||
        !slb_proxy_can_reply(&env->msg))
        return;
    COUNT(w, flow_failed);
    int n = slb_proxy_reply(w->reply, w->reply_cap, &env->msg, msg, 430, "Flow Failed", NULL,
                            "slbflow");
    /* We answer for the client that is gone: the 430 travels as its response. */
    static const struct relay_conn for_client = {.kind = CONN_CLIENT, .backend_peer = -1};
    if (n > 0 && slb_sip_scan(w->reply, (size_t)n, &env->lim, &env->msg, env->hdrs,
                              SLB_SIP_MAX_HEADERS_DEFAULT) == 0) {
        struct in_msg im = {.base = w->reply, .m = &env->msg};
        relay_response(w, (struct relay_conn *)&for_client, &im);
    }
}

static void deliver(struct slb_worker *w, const struct slb_handoff *h)
{
    const struct slb_worker *src = w->sh->workers[h->worker];
    uint64_t dst;
    const char *msg = slb_outbox_message(&src->outbox, h->slot, h->len, &dst);
    if (!msg)
        return; /* not a slot of that size: nothing to send, nothing to return */
    struct slb_conn *conn = slb_conn_get(&w->loop, (struct slb_conn_id){dst});
    struct relay_conn *c = conn ? conn->owner : NULL;
    struct iovec iov = {(void *)msg, h->len};
    /* A half-closed client still gets responses, but no more requests (toward_client). */
    bool response = h->len >= 8 && !memcmp(msg, "SIP/2.0 ", 8);
    if (c && (response || !c->eof) && send_to(w, c, &iov, 1, h->len) == 0) {
        COUNT(w, handoffs_delivered);
        if (response && h->len >= 9 && msg[8] >= '2')
            final_delivered(c);
    } else {
        COUNT(w, handoffs_lost);
        flow_failed(w, msg, h->len);
    }
    return_slot(w, h->worker, h->slot);
}

void on_handoff(struct slb_loop *loop, uint64_t a, uint64_t b)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct slb_handoff h;
    if (slb_handoff_decode(a, b, &h) < 0 || h.worker >= w->cfg->n_workers)
        return;
    if (h.kind == SLB_HANDOFF_RETURN)
        slb_outbox_release(&w->outbox, h.slot); /* our slot is back */
    else
        deliver(w, &h);
}

/* A message whose MSG_RING never arrived: the slot is still ours. A slot return that never
 * arrived: retried like one whose post failed at once. */
void on_handoff_failed(struct slb_loop *loop, uint64_t a, int res)
{
    struct slb_worker *w = slb_loop_user(loop);
    struct slb_handoff h;
    (void)res;
    if (slb_handoff_decode(a, 0, &h) < 0)
        return;
    COUNT(w, handoff_slots_reclaimed);
    if (h.kind == SLB_HANDOFF_MESSAGE && h.worker == w->index) {
        COUNT(w, handoffs_lost);
        slb_outbox_release(&w->outbox, h.slot);
    } else if (h.kind == SLB_HANDOFF_RETURN && h.worker < w->cfg->n_workers &&
               w->n_returns < w->returns_cap) {
        w->returns[w->n_returns++] = (struct slot_return){h.worker, h.slot};
    }
}

void retry_returns(struct slb_worker *w)
{
    unsigned keep = 0;
    for (unsigned i = 0; i < w->n_returns; i++) {
        struct slot_return r = w->returns[i];
        struct slb_handoff back = {.kind = SLB_HANDOFF_RETURN, .worker = r.worker, .slot = r.slot};
        if (post(w->sh->workers[r.worker], &back) < 0)
            w->returns[keep++] = r;
    }
    w->n_returns = keep;
}
