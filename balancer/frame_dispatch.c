/* Each frame a relay connection delivers (sip_stream.h's ops): keepalives answered, bad
 * input answered or closed, responses to relay_response, requests to the client-request
 * router or, from an authenticated backend with a flow token, toward a phone. Also the
 * TLS events of each connection: handshakes done, sessions to keep, failures logged.
 *
 * Thread: the worker's. */
#include <string.h>

#include "balancer/worker-priv.h"

/* Bad or fatal input. A request gets its 400/505/513 when a response can be built (it
 * needs Via, From, To, Call-ID and CSeq); a client request that cannot be answered closes
 * the connection, as does anything that breaks framing. */
static bool bad_frame(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im,
                      const struct slb_sip_frame *fr)
{
    const struct slb_sip_msg *m = im->m;
    bool answerable = m->is_request && slb_proxy_can_reply(m);
    if (answerable)
        reply(w, c, im, slb_sip_err_status(m->err), slb_sip_err_reason(m->err), NULL);
    bool close =
        fr->kind == SLB_FRAME_FATAL || (c->kind == CONN_CLIENT && m->is_request && !answerable);
    slb_log_limited(&w->rl_input, slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                    "worker %u: %s %s:%u sent a bad message: %s%s", w->index,
                    c->kind == CONN_CLIENT ? "client" : "backend", c->ip, c->port,
                    slb_sip_err_reason(m->err), close ? " (closing)" : "");
    if (!close)
        return true;
    COUNT(w, closed_bad_input);
    conn_close(c, true);
    return false;
}

/* A request: toward a phone when an authenticated backend sends it with a flow token
 * naming someone else than itself; else a client's request to route. */
static enum step request(struct slb_worker *w, struct relay_conn *c, struct in_msg *im)
{
    slb_proxy_route_info(im->m, &w->self, &im->route);
    im->strict = !im->route.ours && slb_proxy_strict_routed(im->m, &w->self, &im->route);
    bool from_backend = c->kind == CONN_LINK || c->backend_peer >= 0;
    bool toward = im->route.has_flow &&
                  !(im->route.flow_ok && !im->route.flow_elsewhere && im->route.flow == c->s.id.v);
    if (from_backend && toward)
        return toward_client(w, c, im);
    if (c->unauth_backend && toward) {
        /* A backend's address without a verified certificate, sending toward a phone:
         * told plainly (a registrar missing its client certificate), never relayed. */
        COUNT(w, drop_backend_request);
        reply(w, c, im, 403, "Forbidden - Backend Not Authenticated", NULL);
        return STEP_NEXT;
    }
    if (c->kind == CONN_CLIENT)
        return route_client_request(w, c, im);
    COUNT(w, drop_backend_request);
    reply(w, c, im, 403, "Forbidden - No Flow Token", NULL);
    return STEP_NEXT;
}

static bool on_frame(struct slb_stream *s, const char *base, const struct slb_sip_frame *fr,
                     const struct slb_sip_msg *m)
{
    struct relay_conn *c = conn_of(s);
    struct slb_worker *w = worker_of(s);
    struct in_msg im = {.base = base, .m = m};
    switch (fr->kind) {
    case SLB_FRAME_PING:
        COUNT(w, keepalives);
        pong(w, c); /* RFC 5626 3.5.1 */
        return true;
    case SLB_FRAME_SKIP:
    case SLB_FRAME_NEED_MORE:
        return true;
    case SLB_FRAME_BAD:
    case SLB_FRAME_FATAL:
        return bad_frame(w, c, &im, fr);
    case SLB_FRAME_MESSAGE:
        break;
    }
    if (!m->is_request) {
        relay_response(w, c, &im);
        return true;
    }
    return request(w, c, &im) == STEP_NEXT;
}

static void on_tls_events(struct slb_stream *s, int ev)
{
    struct relay_conn *c = conn_of(s);
    struct slb_worker *w = worker_of(s);
    if (c->kind == CONN_CLIENT) {
        /* Our answer to the client (a KeyUpdate, a ticket) could not be queued: it is not
         * read until its output drains, so what it keeps sending waits in the kernel. */
        stash_account(w, c);
        if ((ev & SLB_TLS_EV_WANT_WRITE) && !c->out_blocked)
            client_block(w, c);
        if (ev & SLB_TLS_EV_HANDSHAKE_DONE)
            client_handshake_done(w, c);
        return;
    }
    if (ev & SLB_TLS_EV_HANDSHAKE_DONE)
        link_ready(w, c);
    if (ev & SLB_TLS_EV_NEW_SESSION)
        slb_redial_keep_session(&c->link->redial, s);
}

static void on_tls_failed(struct slb_stream *s, int rc)
{
    struct relay_conn *c = conn_of(s);
    struct slb_worker *w = worker_of(s);
    enum slb_tls_fail why = slb_tls_fail_reason(&s->tls);
    (void)rc;
    if (s->state == SLB_STREAM_HANDSHAKE && c->kind == CONN_CLIENT) {
        COUNT(w, handshakes_failed);
        COUNT(w, listeners[c->listener].handshakes_failed);
        switch (why) {
        case SLB_TLS_FAIL_PROTOCOL:
            COUNT(w, handshake_fail_protocol);
            break;
        case SLB_TLS_FAIL_BAD_CERT:
            COUNT(w, handshake_fail_bad_cert);
            break;
        case SLB_TLS_FAIL_NO_SHARED_CIPHER:
            COUNT(w, handshake_fail_no_shared_cipher);
            break;
        case SLB_TLS_FAIL_PEER_CLOSED:
            COUNT(w, handshake_fail_peer_closed);
            break;
        default:
            COUNT(w, handshake_fail_other);
        }
    }
    char err[128];
    slb_log_limited(c->kind == CONN_CLIENT ? &w->rl_tls : &w->rl_backend, slb_loop_now_ms(&w->loop),
                    SLB_LOG_WARN, "worker %u: TLS with %s %s:%u failed (%s): %s", w->index,
                    c->kind == CONN_CLIENT ? "client" : "backend", c->ip, c->port,
                    slb_tls_fail_name(why), slb_tls_error_string(&s->tls, err, sizeof(err)));
}

static void on_ws_open(struct slb_stream *s)
{
    client_ws_open(worker_of(s), conn_of(s));
}

const struct slb_stream_ops relay_stream_ops = {
    .frame = on_frame,
    .ws_open = on_ws_open,
    .tls_events = on_tls_events,
    .tls_failed = on_tls_failed,
};
