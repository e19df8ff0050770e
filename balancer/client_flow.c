/* Clients' flow control. A client is read while it is neither parked on a link (waiting
 * for room toward its backend) nor backed up itself (not reading what we send it), and
 * TLS holds nothing more of it: what it sends meanwhile waits in the kernel, bounded by
 * its socket's receive buffer, never in our memory. Its one timer is a stall bound while
 * it does not read, a deadline while a message of its is unfinished, a linger after it
 * shut its write side, else the idle time.
 *
 * Thread: the worker's. */
#include <errno.h>

#include "balancer/worker-priv.h"

void client_recv_update(struct relay_conn *c)
{
    c->s.held = c->parked || c->out_blocked;
    if (c->s.held || c->s.tls_more)
        slb_conn_pause_recv(c->s.conn);
    else
        slb_conn_resume_recv(c->s.conn);
}

void client_timer(struct slb_worker *w, struct relay_conn *c)
{
    uint64_t ms = w->cfg->idle_timeout_ms;
    if (c->out_blocked) {
        ms = w->cfg->stall_timeout_ms;
    } else if (c->eof) {
        ms = EOF_LINGER_MS;
    } else if (c->partial_since_ms && !c->parked) {
        uint64_t due = c->partial_since_ms + w->cfg->message_timeout_ms;
        uint64_t now = slb_loop_now_ms(&w->loop);
        ms = due > now ? due - now : 1;
    }
    slb_conn_set_timeout(c->s.conn, (uint32_t)ms);
}

void client_block(struct slb_worker *w, struct relay_conn *c)
{
    c->out_blocked = true;
    COUNT(w, client_out_blocked);
    client_recv_update(c);
    client_timer(w, c);
}

int send_to(struct slb_worker *w, struct relay_conn *c, const struct iovec *iov, int n,
            size_t total)
{
    /* A refusal always leads to on_drained for c later (io/ is told what was missing). A
     * client whose queue passes half its bound, or that had to be refused, stops being
     * read until it drains. */
    int rc = slb_stream_send(&c->s, iov, n, total);
    if (c->kind == CONN_CLIENT && conn_open(c) && !c->out_blocked &&
        (rc < 0 || slb_conn_out_queued(c->s.conn) > (size_t)w->cfg->client_out_max / 2))
        client_block(w, c);
    return rc;
}

void park(struct slb_worker *w, struct relay_conn *client, struct link *l)
{
    if (client->parked)
        return;
    client->parked = l;
    client->next_parked = l->parked_head;
    l->parked_head = client;
    client->partial_since_ms = 0; /* waiting on us: no deadline of its own */
    client_recv_update(client);
    client_timer(w, client);
    COUNT(w, backpressure_parks);
}

void unpark(struct relay_conn *client)
{
    struct link *l = client->parked;
    if (!l)
        return;
    for (struct relay_conn **pp = &l->parked_head; *pp; pp = &(*pp)->next_parked) {
        if (*pp == client) {
            *pp = client->next_parked;
            break;
        }
    }
    client->parked = NULL;
    client->next_parked = NULL;
    client->s.held = client->out_blocked;
}

void wake_parked(struct slb_worker *w, struct link *l)
{
    struct relay_conn *c = l->parked_head;
    l->parked_head = NULL;
    while (c) {
        struct relay_conn *next = c->next_parked;
        c->parked = NULL;
        c->next_parked = NULL;
        resume_client(w, c);
        c = next;
    }
}

void resume_client(struct slb_worker *w, struct relay_conn *c)
{
    if (!conn_open(c))
        return;
    c->s.held = c->parked || c->out_blocked;
    slb_stream_resume(&c->s);
    if (conn_open(c)) {
        client_recv_update(c);
        client_timer(w, c);
    }
}

void final_delivered(struct relay_conn *c)
{
    /* One request fewer awaited; a client that shut its write side and awaits nothing more
     * is closed now (after what is queued). */
    if (c->kind != CONN_CLIENT)
        return;
    c->finals_out++;
    if (c->awaiting)
        c->awaiting--;
    if (c->eof && c->awaiting == 0 && conn_open(c))
        conn_close(c, true);
}

size_t stash_account(struct slb_worker *w, struct relay_conn *c)
{
    size_t now = c->s.plain ? 0 : slb_tls_stash_bytes(&c->s.tls);
    w->stash_bytes = w->stash_bytes - c->stash_seen + now;
    c->stash_seen = (uint32_t)now;
    return w->stash_bytes;
}

/* After a client's bytes were handled: the message deadline starts with the first byte
 * that does not complete a frame and ends when one completes (restarting when the rest
 * of the input already began the next). Bytes that only move TLS along (a split record,
 * a KeyUpdate) count as unfinished too: a trickle of them is what slowloris sends. */
static void after_input(struct slb_worker *w, struct relay_conn *c, uint64_t frames_before)
{
    if (!conn_open(c))
        return;
    uint64_t now = slb_loop_now_ms(&w->loop);
    if (c->parked)
        c->partial_since_ms = 0;
    else if (c->s.frames != frames_before)
        c->partial_since_ms = c->s.in.pending ? now : 0;
    else if (!c->partial_since_ms)
        c->partial_since_ms = now;
    if (!c->out_blocked)
        client_timer(w, c);
}

/* Bytes that were in flight when the client was held: kept behind what is pending;
 * whoever keeps sending while held past the worker's stash budget is the one that goes. */
static void held_input(struct slb_worker *w, struct relay_conn *c, const void *data, size_t len)
{
    slb_stream_input_held(&c->s, data, len);
    if (conn_open(c) && !c->s.plain && stash_account(w, c) > WORKER_STASH_BUDGET) {
        COUNT(w, closed_input_flood);
        conn_close(c, false);
    }
}

void client_input(struct slb_worker *w, struct relay_conn *c, const void *data, size_t len)
{
    if (c->proxy_wait) {
        proxy_hdr_input(w, c, data, len);
        return;
    }
    if (!c->input_seen) {
        c->input_seen = true;
        if (proxy_hdr_unexpected(w, c, data, len))
            return;
    }
    if (c->s.state == SLB_STREAM_HANDSHAKE) {
        if (!c->hs_counted && !handshake_allowed(w, c))
            return;
        slb_stream_input(&c->s, data, len);
        return;
    }
    if (c->s.held) {
        held_input(w, c, data, len);
        return;
    }
    uint64_t frames = c->s.frames;
    slb_stream_input(&c->s, data, len);
    after_input(w, c, frames);
}

void client_eof(struct slb_worker *w, struct relay_conn *c)
{
    /* Nothing awaited (nor waiting to be sent): an ordinary close. Else it may still be
     * owed responses: kept for a short while (the stall bound still applies). */
    if (c->awaiting == 0 && !c->parked && !c->s.in.pending && !c->s.tls_more) {
        conn_close(c, true);
        return;
    }
    c->eof = true;
    COUNT(w, closed_half_closed);
    if (!c->out_blocked)
        client_timer(w, c);
}

void client_drained(struct slb_worker *w, struct relay_conn *c)
{
    if (!c->out_blocked || slb_conn_out_queued(c->s.conn) > (size_t)w->cfg->client_out_max / 2)
        return;
    c->out_blocked = false;
    resume_client(w, c);
}

void count_timeout(struct slb_worker *w, const struct relay_conn *c)
{
    if (c->proxy_wait)
        COUNT(w, proxy_hdr_timeouts);
    else if (c->s.state == SLB_STREAM_HANDSHAKE)
        COUNT(w, handshake_timeouts);
    else if (c->out_blocked)
        COUNT(w, closed_stalled);
    else if (c->partial_since_ms && !c->parked && !c->eof)
        COUNT(w, closed_message_timeout);
    else if (!c->eof)
        COUNT(w, closed_idle);
}
