/* Graceful stop (SIGTERM, or a new process that took our listeners over): stop accepting,
 * keep relaying, and close each client connection once it is idle, so that no transaction
 * it has in flight is cut; main cuts whatever is left at --drain-timeout.
 *
 * Idle means: no request awaiting its final response (awaiting), none parked, no partial
 * message or TLS record pending, nothing queued toward it, and no message from it nor final
 * response to it since the previous tick. Ticks come every DRAIN_TICK_MS while draining: a busy
 * connection (a trunk with a call every few tens of milliseconds) still shows such quiet moments
 * between its calls, where a slower tick would keep it until the timeout cuts it mid-call. The
 * quiet tick narrows the race with a request the client sends as we close to about a round trip;
 * SIP over TCP has no way to tell a client "finish and go", so it cannot be closed
 * entirely. A closed client reconnects, to whichever process now holds the
 * listening sockets.
 *
 * Thread: the worker's (drain_tick: started by the refresh timer, then its own), except
 * slb_worker_drain and the status accessor (any thread: atomics). */
#include "balancer/worker-priv.h"

void slb_worker_drain(struct slb_worker *w)
{
    atomic_store(&w->drain_req, 1);
}

bool slb_worker_drain_status(const struct slb_worker *w, uint32_t *clients, uint32_t *awaiting)
{
    *clients = atomic_load_explicit(&w->drain_clients, memory_order_relaxed);
    *awaiting = atomic_load_explicit(&w->drain_awaiting, memory_order_relaxed);
    return atomic_load_explicit(&w->drain_started, memory_order_acquire) != 0;
}

/* Idle: quiet for a whole tick both ways (seen at the previous one with the same count of
 * messages from it and of final responses to it: a connection accepted just now, whose
 * first request is on its way, is not, nor one that just got the 200 its ACK and BYE
 * will follow) and awaiting nothing. */
static bool idle(struct relay_conn *c)
{
    return c->drain_seen && c->awaiting == 0 && !c->parked && !c->s.in.pending && !c->s.tls_more &&
           !c->out_blocked && slb_conn_out_queued(c->s.conn) == 0 &&
           c->s.frames == c->drain_frames_seen && c->finals_out == c->drain_finals_seen;
}

static void on_drain_tick(struct slb_timer *t)
{
    struct slb_worker *w = slb_timer_entry(t, struct slb_worker, drain_timer);
    drain_tick(w);
}

void drain_tick(struct slb_worker *w)
{
    if (!atomic_load_explicit(&w->drain_req, memory_order_relaxed))
        return;
    if (!w->draining) {
        w->draining = true;
        slb_loop_stop_accepting(&w->loop);
        slb_timer_init(&w->drain_timer, on_drain_tick);
    }
    slb_timer_arm(slb_loop_wheel(&w->loop), &w->drain_timer, DRAIN_TICK_MS);
    uint32_t clients = 0, awaiting = 0;
    for (uint32_t i = 0; i < w->n_conns; i++) {
        struct relay_conn *c = &w->conns[i];
        if (c->kind != CONN_CLIENT || !c->s.conn)
            continue;
        /* A handshake under way is left to finish: its client is about to send. */
        if (c->s.state == SLB_STREAM_HANDSHAKE) {
            clients++;
            continue;
        }
        if (!conn_open(c))
            continue;
        if (idle(c)) {
            COUNT(w, drain_closed_idle);
            conn_close(c, true);
            continue;
        }
        c->drain_frames_seen = c->s.frames;
        c->drain_finals_seen = c->finals_out;
        c->drain_seen = true;
        clients++;
        awaiting += c->awaiting;
    }
    atomic_store_explicit(&w->drain_clients, clients, memory_order_relaxed);
    atomic_store_explicit(&w->drain_awaiting, awaiting, memory_order_relaxed);
    atomic_store_explicit(&w->drain_started, 1, memory_order_release);
}

void drain_count_cut(struct slb_worker *w)
{
    if (!w->draining)
        return;
    for (uint32_t i = 0; i < w->n_conns; i++) {
        struct relay_conn *c = &w->conns[i];
        if (c->kind != CONN_CLIENT || !c->s.conn || !conn_open(c))
            continue;
        COUNT(w, drain_cut_conns);
        COUNT_N(w, drain_cut_requests, c->awaiting);
    }
}
