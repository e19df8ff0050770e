/* The SIP stream (sip_stream.h): TLS or plain bytes in, frames to the owner, whole
 * messages out.
 *
 * Invariants: a stream's pending buffer holds only bytes not yet handed to the owner as
 * frames, and at most one decryption's worth (core/inbuf sizes every buffer alike), so
 * whatever a stopped owner leaves unconsumed always fits; a write either queues a whole
 * message or nothing, except a TLS write cut part way, which closes the stream (the bytes
 * already queued could not be followed in order).
 *
 * Thread: the loop's. */
#include "balancer/sip_stream.h"
#include "balancer/sip_stream-priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/loop.h"

int slb_stream_env_init(struct slb_stream_env *env, const struct slb_stream_ops *ops,
                        uint32_t n_streams, size_t max_msg)
{
    memset(env, 0, sizeof(*env));
    env->ops = ops;
    env->rl = (struct slb_ratelimit)SLB_RATELIMIT_INIT(1000, 5);
    slb_sip_limits_default(&env->lim);
    env->lim.max_msg_bytes = (uint32_t)max_msg;
    /* One decryption (a whole message and the records around it) per buffer. */
    return slb_inbuf_pool_init(&env->inbufs, n_streams, max_msg + 2 * SLB_TLS_RECORD_PLAIN_MAX);
}

void slb_stream_env_deinit(struct slb_stream_env *env)
{
    slb_inbuf_pool_deinit(&env->inbufs);
}

static int tls_out(void *arg, const void *data, size_t len)
{
    struct slb_stream *s = arg;
    return s->conn ? slb_conn_write(s->conn, data, len) : -EPIPE;
}

int slb_stream_open(struct slb_stream_env *env, struct slb_stream *s, struct slb_conn *conn,
                    struct slb_tls_ctx *ctx, const char *host, void *owner)
{
    *s = (struct slb_stream){.env = env, .conn = conn, .id = conn->id};
    if (!ctx) {
        s->plain = true;
        s->state = SLB_STREAM_OPEN;
    } else {
        if (slb_tls_conn_init(&s->tls, ctx, host, tls_out, s) < 0) {
            *s = (struct slb_stream){.env = env};
            return -ENOMEM;
        }
        s->state = SLB_STREAM_HANDSHAKE;
    }
    conn->owner = owner;
    return 0;
}

void slb_stream_close(struct slb_stream *s, bool graceful)
{
    if (s->state == SLB_STREAM_FREE || s->state == SLB_STREAM_CLOSING)
        return;
    s->state = SLB_STREAM_CLOSING;
    if (s->conn)
        slb_conn_close(s->conn, graceful);
}

void slb_stream_shutdown(struct slb_stream *s)
{
    if (s->state == SLB_STREAM_FREE || s->state == SLB_STREAM_CLOSING)
        return;
    if (!s->plain)
        (void)slb_tls_close(&s->tls); /* an alert that cannot be queued is not waited for */
    slb_stream_close(s, true);
}

void slb_stream_release(struct slb_stream *s)
{
    if (s->state == SLB_STREAM_FREE)
        return;
    slb_inbuf_release(&s->env->inbufs, &s->in);
    if (!s->plain)
        slb_tls_conn_deinit(&s->tls);
    s->state = SLB_STREAM_FREE;
    s->conn = NULL;
    s->fr = (struct slb_sip_frame){0};
}

/* TLS failed: the owner hears it, the peer gets the alert. */
static void tls_failed(struct slb_stream *s, int rc)
{
    if (s->env->ops->tls_failed)
        s->env->ops->tls_failed(s, rc);
    /* The owner may have closed it already (io/ may even have released it: an abortive
     * close can run on_close at once). */
    if (s->state == SLB_STREAM_HANDSHAKE || s->state == SLB_STREAM_OPEN) {
        s->state = SLB_STREAM_CLOSING;
        slb_conn_close(s->conn, true); /* lets the alert out */
    }
}

void stream_close_for(struct slb_stream *s, _Atomic uint64_t *counter)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    struct slb_stream_counters *c = &s->env->c;
    const char *why = counter == &c->pending_pool_empty   ? "no input buffer free"
                      : counter == &c->closed_input_flood ? "it kept sending while held"
                      : counter == &c->closed_cut_write   ? "a message could not be written whole"
                                                          : "input that cannot be framed";
    const struct slb_log_field f[] = {SLB_LOG_NUM("conn", s->id.v), SLB_LOG_STR("reason", why)};
    slb_log_limited_event(&s->env->rl, slb_loop_now_ms(s->conn->loop), SLB_LOG_WARN,
                          "stream_closed", f, 2, "connection %llx closed: %s",
                          (unsigned long long)s->id.v, why);
    s->state = SLB_STREAM_CLOSING;
    slb_conn_close(s->conn, false);
}

bool stream_deliver(struct slb_stream *s, const char *msg, size_t len)
{
    struct slb_stream_env *env = s->env;
    slb_sip_frame(msg, len, &env->lim, &env->msg, env->hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &s->fr);
    /* One WebSocket message is exactly one SIP message (RFC 7118 5.1): less (a length past
     * the end) or more (a second message, trailing bytes) cannot be framed. */
    if (s->fr.kind == SLB_FRAME_NEED_MORE || s->fr.frame_len != len) {
        stream_close_for(s, &env->c.closed_bad_input);
        return false;
    }
    s->frames++;
    bool go_on = env->ops->frame(s, msg, &s->fr, &env->msg);
    if (go_on && s->fr.kind == SLB_FRAME_FATAL) {
        stream_close_for(s, &env->c.closed_bad_input);
        go_on = false;
    }
    s->fr = (struct slb_sip_frame){0};
    return go_on;
}

/* Frames and hands over messages in buf[0, *len) (a WebSocket stream may rewrite it in
 * place and shorten *len: ws_consume). Returns the bytes consumed; *stop is set when the
 * owner stopped or the stream is no longer open. */
static size_t consume(struct slb_stream *s, char *buf, size_t *total, bool *stop)
{
    if (s->ws)
        return ws_consume(s, buf, total, stop);
    struct slb_stream_env *env = s->env;
    size_t at = 0, len = *total;
    *stop = false;
    while (at < len && s->state == SLB_STREAM_OPEN) {
        slb_sip_frame(buf + at, len - at, &env->lim, &env->msg, env->hdrs,
                      SLB_SIP_MAX_HEADERS_DEFAULT, &s->fr);
        if (s->fr.kind == SLB_FRAME_NEED_MORE)
            break;
        s->frames++;
        bool go_on = env->ops->frame(s, buf + at, &s->fr, &env->msg);
        if (go_on && s->fr.kind == SLB_FRAME_FATAL) {
            /* Nothing after a fatal frame can be framed (its length is 0): the stream
             * ends whatever its owner said. */
            stream_close_for(s, &env->c.closed_bad_input);
            go_on = false;
        }
        if (!go_on) {
            *stop = true;
            /* A stopped message stays unconsumed; after a close nothing more is read. */
            if (s->state == SLB_STREAM_CLOSING)
                at = len;
            break;
        }
        at += s->fr.frame_len;
        s->fr = (struct slb_sip_frame){0};
    }
    if (s->state != SLB_STREAM_OPEN)
        *stop = true;
    return at;
}

/* Keeps buf[used, len) pending. False when that failed: the stream is then closed. */
static bool keep_rest(struct slb_stream *s, const char *buf, size_t used, size_t len)
{
    int rc = slb_inbuf_keep(&s->env->inbufs, &s->in, buf, used, len);
    if (rc == 0)
        return true;
    stream_close_for(s,
                     rc == -ENOBUFS ? &s->env->c.pending_pool_empty : &s->env->c.closed_bad_input);
    return false;
}

/* Plain TCP: framed straight from the receive buffer when nothing is pending (no copy at
 * all), else behind the pending bytes. What framing leaves of one receive buffer (16 KiB)
 * always fits a pending buffer (at least a message and two TLS records). */
static void plain_input(struct slb_stream *s, const void *data, size_t len)
{
    struct slb_stream_env *env = s->env;
    if (!len)
        return;
    const char *buf = data;
    size_t total = len;
    if (s->in.pending || s->held) {
        int rc = slb_inbuf_append(&env->inbufs, &s->in, data, len);
        if (rc < 0) {
            /* More than a whole message behind what is pending (the framer refuses anything
             * larger): the peer floods while held. */
            stream_close_for(s, rc == -ENOBUFS ? &env->c.pending_pool_empty
                                               : &env->c.closed_input_flood);
            return;
        }
        if (s->held)
            return;
        buf = s->in.pending;
        total = s->in.len;
    }
    bool stop;
    /* Writable memory (our receive buffer or pending buffer): a WebSocket stream unmasks
     * in place. */
    size_t used = consume(s, (char *)buf, &total, &stop);
    if (s->state == SLB_STREAM_CLOSING)
        return;
    keep_rest(s, buf, used, total);
}

void slb_stream_input(struct slb_stream *s, const void *data, size_t len)
{
    struct slb_stream_env *env = s->env;
    if (s->state == SLB_STREAM_FREE || s->state == SLB_STREAM_CLOSING)
        return;
    if (s->plain) {
        plain_input(s, data, len);
        return;
    }
    for (unsigned round = 0; round < SLB_STREAM_FEED_ROUNDS; round++) {
        /* Never more than a pending buffer holds: a stream stopped by this very batch
         * leaves what it did not consume there. */
        size_t cap, got = 0;
        char *dst = slb_inbuf_dst(&env->inbufs, &s->in, &cap);
        int ev = slb_tls_feed(&s->tls, data, len, dst, cap, &got);
        data = NULL;
        len = 0;
        if (ev < 0) {
            tls_failed(s, ev);
            return;
        }
        s->tls_more = (ev & SLB_TLS_EV_MORE) != 0;
        if ((ev & SLB_TLS_EV_HANDSHAKE_DONE) && s->state == SLB_STREAM_HANDSHAKE)
            s->state = SLB_STREAM_OPEN;
        if (env->ops->tls_events)
            env->ops->tls_events(s, ev);
        if (s->state == SLB_STREAM_CLOSING || s->state == SLB_STREAM_FREE)
            return;
        bool stop = false;
        if (got) {
            size_t total;
            const char *buf = slb_inbuf_filled(&env->inbufs, &s->in, got, &total);
            size_t used = consume(s, (char *)buf, &total, &stop);
            if (s->state == SLB_STREAM_CLOSING || s->state == SLB_STREAM_FREE ||
                !keep_rest(s, buf, used, total))
                return;
        }
        if (ev & SLB_TLS_EV_PEER_CLOSED) {
            /* What the peer sent before its close_notify is still handled: a stream stopped
             * with bytes pending shuts down once they are (slb_stream_resume). */
            if (stop && s->in.pending)
                s->peer_closed = true;
            else
                slb_stream_shutdown(s);
            return;
        }
        if (stop || s->held || (ev & SLB_TLS_EV_WANT_WRITE) || !(ev & SLB_TLS_EV_MORE))
            return;
    }
}

void slb_stream_input_held(struct slb_stream *s, const void *data, size_t len)
{
    struct slb_stream_env *env = s->env;
    if (s->state != SLB_STREAM_OPEN)
        return;
    if (s->plain) {
        plain_input(s, data, len);
        return;
    }
    /* Into the scratch, then behind what waits: rare (only bytes already in flight when
     * the stream was held), so the copy is not worth a special case. */
    size_t got = 0, room = slb_inbuf_room(&env->inbufs, &s->in);
    int ev = slb_tls_feed(&s->tls, data, len, env->inbufs.scratch, room, &got);
    if (ev < 0) {
        tls_failed(s, ev);
        return;
    }
    s->tls_more = (ev & SLB_TLS_EV_MORE) != 0;
    /* TLS reports the peer's close_notify once: kept for after the held bytes. */
    if (ev & SLB_TLS_EV_PEER_CLOSED)
        s->peer_closed = true;
    if (slb_inbuf_append(&env->inbufs, &s->in, env->inbufs.scratch, got) < 0)
        stream_close_for(s, &env->c.pending_pool_empty);
}

void slb_stream_resume(struct slb_stream *s)
{
    if (s->state != SLB_STREAM_OPEN || s->held)
        return;
    if (s->in.pending) {
        bool stop;
        const char *buf = s->in.pending;
        size_t len = s->in.len;
        size_t used = consume(s, (char *)buf, &len, &stop);
        if (s->state != SLB_STREAM_OPEN || !keep_rest(s, buf, used, len) || stop)
            return;
    }
    if (s->peer_closed) {
        slb_stream_shutdown(s); /* a close_notify that came while the stream was held */
        return;
    }
    if (!s->plain)
        slb_stream_input(s, NULL, 0);
}

int stream_write_raw(struct slb_stream *s, const struct iovec *iov, int n, size_t total)
{
    if (s->state != SLB_STREAM_OPEN)
        return -ENOBUFS;
    /* Room for the message and one record's overhead per 16 KiB of it. */
    size_t need = total + SLB_STREAM_TLS_OVERHEAD * (total / SLB_TLS_RECORD_PLAIN_MAX + 2);
    if (slb_conn_out_space(s->conn) < need) {
        slb_conn_notify_space(s->conn);
        return -ENOBUFS;
    }
    if (s->plain) {
        for (int i = 0; i < n; i++)
            if (slb_conn_write(s->conn, iov[i].iov_base, iov[i].iov_len) < 0)
                return -ENOBUFS; /* cannot happen: the room was checked */
        return 0;
    }
    int r = slb_tls_write(&s->tls, iov, n);
    if (r == -EAGAIN) {
        /* TLS output itself is blocked (an alert or a KeyUpdate answer io/ refused): the
         * same wait as no room, and io/ calls on_drained. */
        slb_conn_notify_space(s->conn);
        return -ENOBUFS;
    }
    if (r < 0)
        return r;
    if ((size_t)r < total) {
        /* Part of a message went out and the rest cannot follow in order: the stream is
         * broken for whoever shares it. Cannot happen with the room checked above; if it
         * does, the connection goes. */
        stream_close_for(s, &s->env->c.closed_cut_write);
        return -EPIPE;
    }
    return 0;
}

int slb_stream_send(struct slb_stream *s, const struct iovec *iov, int n, size_t total)
{
    if (!s->ws)
        return stream_write_raw(s, iov, n, total);
    /* WebSocket: one frame per message, its header in front. */
    if (s->ws != SLB_STREAM_WS_OPEN)
        return s->state == SLB_STREAM_OPEN && s->ws == SLB_STREAM_WS_HTTP ? -ENOBUFS : -EPIPE;
    struct iovec v[SLB_STREAM_IOV_MAX];
    if (n + 1 > (int)SLB_STREAM_IOV_MAX)
        return -EINVAL;
    uint8_t hdr[SLB_WS_HDR_MAX];
    v[0] = (struct iovec){hdr, ws_message_header(s, hdr, total)};
    memcpy(v + 1, iov, (size_t)n * sizeof(*iov));
    return stream_write_raw(s, v, n + 1, total + v[0].iov_len);
}

int slb_stream_flush(struct slb_stream *s)
{
    if (s->state == SLB_STREAM_FREE || s->state == SLB_STREAM_CLOSING || s->plain)
        return 0;
    int ev = slb_tls_flush(&s->tls);
    if (ev < 0)
        tls_failed(s, ev);
    return ev;
}

/* ---- outbound streams ---------------------------------------------------------------------- */

void slb_redial_init(struct slb_redial *r, uint32_t min_ms, uint32_t max_ms,
                     void (*fire)(struct slb_timer *t))
{
    r->backoff_ms = 0;
    r->min_ms = min_ms;
    r->max_ms = max_ms;
    r->session = NULL;
    slb_timer_init(&r->timer, fire);
}

void slb_redial_deinit(struct slb_redial *r)
{
    slb_timer_cancel(&r->timer);
    if (r->session)
        slb_tls_session_free(r->session);
    r->session = NULL;
}

int slb_redial_connect(struct slb_loop *loop, const struct sockaddr *addr, socklen_t len,
                       uint32_t tag, uint32_t timeout_ms, struct slb_conn_id *id)
{
    int rc = slb_loop_connect(loop, addr, len, tag, id);
    if (rc < 0)
        return rc;
    struct slb_conn *conn = slb_conn_get(loop, *id);
    if (conn)
        slb_conn_set_timeout(conn, timeout_ms);
    return 0;
}

uint32_t slb_redial_backoff(struct slb_redial *r, struct slb_loop *loop)
{
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : r->min_ms;
    if (r->backoff_ms > r->max_ms)
        r->backoff_ms = r->max_ms;
    slb_timer_arm(slb_loop_wheel(loop), &r->timer, r->backoff_ms);
    return r->backoff_ms;
}

void slb_redial_after(struct slb_redial *r, struct slb_loop *loop, uint32_t ms)
{
    r->backoff_ms = ms;
    slb_timer_arm(slb_loop_wheel(loop), &r->timer, ms);
}

void slb_redial_offer_session(struct slb_redial *r, struct slb_stream *s)
{
    /* A session the server no longer takes only costs a full handshake: the result is
     * not worth acting on. */
    if (r->session && !s->plain)
        (void)slb_tls_conn_set_session(&s->tls, r->session);
}

void slb_redial_keep_session(struct slb_redial *r, struct slb_stream *s)
{
    struct slb_tls_session *n = slb_tls_session_get(&s->tls);
    if (!n)
        return;
    if (r->session)
        slb_tls_session_free(r->session);
    r->session = n;
}
