/*
 * Connection table, output queues and the close state machine of one loop.
 *
 * Slots live in one array allocated at init; free slots (like free output chunks) are
 * handed out LIFO from a core/pool. A slot's generation is bumped whenever it is freed, so
 * an id handed out earlier never resolves to the slot's next connection. A connection is
 * freed only when `inflight` (SQEs in flight for it plus callbacks running on it) is zero
 * and it is not on the pending list: the kernel may still read or write memory an
 * in-flight SQE references.
 *
 * Output: each connection's queue is a chain of fixed-size chunks from the loop's pool,
 * taken on write and returned as soon as sends complete, so an idle connection holds none.
 * Each queue has its own bound (out_cap). The last out_reserve chunks of the pool go only
 * to connections marked reserved (a load balancer's backend links), so clients that stop
 * reading cannot take what everyone's traffic needs. A write refused for lack of chunks
 * puts the connection on the pool wait list; loop.c calls on_drained for it once chunks
 * are back.
 *
 * This file never touches the ring: what needs an SQE (cancel, send, recv) is flagged and
 * the connection put on the pending list, which loop.c flushes once per turn.
 *
 * Thread: the owning loop's thread only.
 */
#include "io/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/pool.h"
#include "io/loop-priv.h"

static unsigned char *chunk_data(const struct slb_loop *loop, uint32_t idx)
{
    return loop->chunk_mem + (size_t)idx * loop->chunk_bytes;
}

/* Only after counting the chunks a write needs (chunks_usable): none missing here. */
static uint32_t chunk_get(struct slb_loop *loop)
{
    int64_t idx = slb_pool_get(&loop->chunk_free);
    if (idx < 0)
        abort(); /* a write that did not count its chunks first: io/'s bug */
    loop->chunk_next[idx] = SLB_IO_NONE;
    return (uint32_t)idx;
}

static void chunk_put(struct slb_loop *loop, uint32_t idx)
{
    slb_pool_put(&loop->chunk_free, idx);
}

static void conn_timer_fire(struct slb_timer *timer);

int slb_io_conns_init(struct slb_loop *loop, const struct slb_loop_opts *o)
{
    loop->max_conns = o->max_conns;
    loop->conns = calloc(o->max_conns, sizeof(*loop->conns));
    if (!loop->conns || slb_pool_init(&loop->conn_free, o->max_conns) < 0)
        return -ENOMEM;
    /* The generation starts at 1 so that no id is 0. */
    for (uint32_t i = 0; i < o->max_conns; i++) {
        struct slb_conn *c = &loop->conns[i];
        c->id = slb_conn_id_make(loop->id, i, 1);
        c->loop = loop;
        c->fd = -1;
        c->next = SLB_IO_NONE;
        c->out.head = SLB_IO_NONE;
        c->out.tail = SLB_IO_NONE;
        slb_timer_init(&c->timer, conn_timer_fire);
    }

    loop->chunk_bytes = o->out_chunk_bytes;
    loop->nchunks = o->out_chunks;
    loop->out_cap = o->out_cap_bytes;
    loop->out_low = o->out_low_bytes;
    loop->out_reserve = o->out_reserve_chunks;
    loop->pool_wait_head = loop->pool_wait_tail = SLB_IO_NONE;
    size_t pool = (size_t)o->out_chunks * o->out_chunk_bytes;
    /* mmap: untouched chunks cost no memory until first used. */
    void *mem = mmap(NULL, pool, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -ENOMEM;
    loop->chunk_mem = mem;
    loop->chunk_next = malloc((size_t)o->out_chunks * sizeof(*loop->chunk_next));
    if (!loop->chunk_next || slb_pool_init(&loop->chunk_free, o->out_chunks) < 0)
        return -ENOMEM;
    for (uint32_t i = 0; i < o->out_chunks; i++)
        loop->chunk_next[i] = SLB_IO_NONE;
    return 0;
}

void slb_io_conns_deinit(struct slb_loop *loop)
{
    if (loop->chunk_mem)
        munmap(loop->chunk_mem, (size_t)loop->nchunks * loop->chunk_bytes);
    loop->chunk_mem = NULL;
    free(loop->chunk_next);
    loop->chunk_next = NULL;
    slb_pool_deinit(&loop->chunk_free);
    free(loop->conns);
    loop->conns = NULL;
    slb_pool_deinit(&loop->conn_free);
}

struct slb_conn *slb_io_conn_alloc(struct slb_loop *loop, int fd, uint32_t tag,
                                   enum slb_conn_state state)
{
    int64_t slot = slb_pool_get(&loop->conn_free);
    if (slot < 0)
        return NULL;
    struct slb_conn *c = &loop->conns[slot];
    loop->nconns++;
    c->next = SLB_IO_NONE;
    c->owner = NULL;
    c->tag = tag;
    c->fd = fd;
    c->peer_len = 0;
    c->state = (uint8_t)state;
    c->flags = 0;
    c->inflight = 0;
    c->close_reason = 0;
    c->out_cap = loop->out_cap;
    return c;
}

struct slb_conn *slb_conn_get(struct slb_loop *loop, struct slb_conn_id id)
{
    uint32_t slot = slb_conn_id_slot(id);
    if (slb_conn_id_loop(id) != loop->id || slot >= loop->max_conns)
        return NULL;
    struct slb_conn *c = &loop->conns[slot];
    if (c->id.v != id.v || c->state == SLB_CONN_FREE || c->state == SLB_CONN_ZOMBIE)
        return NULL;
    return c;
}

/* Returns every chunk of the queue to the pool. Only when no send references them. */
static void outq_release(struct slb_loop *loop, struct slb_conn *c)
{
    struct slb_outq *q = &c->out;
    uint32_t idx = q->head;
    /* The chain has at most nchunks links. */
    for (uint32_t n = 0; idx != SLB_IO_NONE && n < loop->nchunks; n++) {
        uint32_t next = loop->chunk_next[idx];
        chunk_put(loop, idx);
        idx = next;
    }
    if (q->bytes > 0)
        loop->out_busy--;
    q->head = q->tail = SLB_IO_NONE;
    q->head_off = q->tail_len = 0;
    q->bytes = 0;
}

void slb_io_pool_wait_remove(struct slb_loop *loop, struct slb_conn *c)
{
    if (!(c->flags & SLB_CONN_F_POOL_WAIT))
        return;
    if (c->wait_prev == SLB_IO_NONE)
        loop->pool_wait_head = c->wait_next;
    else
        loop->conns[c->wait_prev].wait_next = c->wait_next;
    if (c->wait_next == SLB_IO_NONE)
        loop->pool_wait_tail = c->wait_prev;
    else
        loop->conns[c->wait_next].wait_prev = c->wait_prev;
    c->wait_prev = c->wait_next = SLB_IO_NONE;
    c->flags &= (uint16_t)~SLB_CONN_F_POOL_WAIT;
    loop->pool_waiters--;
}

/* At the tail: the wake-up walk pops from the head, so one refused again during it waits
 * behind those that were there first. */
static void pool_wait_add(struct slb_loop *loop, struct slb_conn *c)
{
    if (c->flags & SLB_CONN_F_POOL_WAIT)
        return;
    uint32_t slot = slb_conn_id_slot(c->id);
    c->flags |= SLB_CONN_F_POOL_WAIT;
    c->wait_next = SLB_IO_NONE;
    c->wait_prev = loop->pool_wait_tail;
    if (c->wait_prev == SLB_IO_NONE)
        loop->pool_wait_head = slot;
    else
        loop->conns[c->wait_prev].wait_next = slot;
    loop->pool_wait_tail = slot;
    loop->pool_waiters++;
}

void slb_io_conn_finalize(struct slb_loop *loop, struct slb_conn *c)
{
    slb_io_pool_wait_remove(loop, c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    outq_release(loop, c);
    slb_timer_cancel(&c->timer);
    uint32_t slot = slb_conn_id_slot(c->id);
    uint32_t gen = slb_conn_id_gen(c->id) + 1;
    if (gen == 0)
        gen = 1;
    c->id = slb_conn_id_make(loop->id, slot, gen);
    c->state = SLB_CONN_FREE;
    c->flags = 0;
    c->owner = NULL;
    slb_pool_put(&loop->conn_free, slot);
    loop->nconns--;
}

void slb_io_conn_hold(struct slb_conn *c)
{
    c->inflight++;
}

void slb_io_conn_put(struct slb_loop *loop, struct slb_conn *c)
{
    c->inflight--;
    /* On the pending list the slot must stay put; the flush frees it. */
    if (c->inflight == 0 && c->state == SLB_CONN_ZOMBIE && !(c->flags & SLB_CONN_F_PENDING))
        slb_io_conn_finalize(loop, c);
}

void slb_io_conn_abort(struct slb_loop *loop, struct slb_conn *c)
{
    if (c->state == SLB_CONN_FREE || c->state == SLB_CONN_ZOMBIE)
        return;
    c->state = SLB_CONN_ZOMBIE;
    slb_timer_cancel(&c->timer);
    slb_io_conn_hold(c);
    if (c->inflight > 1) {
        c->flags |= SLB_CONN_F_CANCEL_ALL;
        slb_io_pending_add(loop, c);
    }
    slb_io_conn_put(loop, c);
}

void slb_io_conn_close_now(struct slb_loop *loop, struct slb_conn *c, int reason)
{
    if (c->state == SLB_CONN_FREE || c->state == SLB_CONN_ZOMBIE)
        return;
    uint8_t prev = c->state;
    c->state = SLB_CONN_ZOMBIE;
    c->close_reason = reason;
    slb_timer_cancel(&c->timer);
    /* Held across the callbacks so that nothing they do can free the slot under us. */
    slb_io_conn_hold(c);
    if (prev == SLB_CONN_CONNECTING) {
        loop->counters.connect_failed++;
        if (loop->cbs.on_connect)
            loop->cbs.on_connect(loop, c, reason < 0 ? reason : -ECANCELED);
    } else if (c->flags & SLB_CONN_F_REPORTED) {
        c->flags &= (uint16_t)~SLB_CONN_F_REPORTED;
        loop->counters.closed++;
        if (loop->cbs.on_close)
            loop->cbs.on_close(loop, c, reason);
    }
    if (c->inflight > 1) {
        c->flags |= SLB_CONN_F_CANCEL_ALL;
        slb_io_pending_add(loop, c);
    }
    slb_io_conn_put(loop, c);
}

void slb_io_conn_close_graceful(struct slb_loop *loop, struct slb_conn *c, int reason)
{
    if (c->state == SLB_CONN_CONNECTING) {
        slb_io_conn_close_now(loop, c, -ECANCELED);
        return;
    }
    if (c->state != SLB_CONN_OPEN)
        return;
    c->state = SLB_CONN_CLOSING;
    c->close_reason = reason;
    slb_timer_arm(&loop->wheel, &c->timer, loop->linger_ms);
    slb_io_pending_add(loop, c);
}

static void conn_timer_fire(struct slb_timer *timer)
{
    struct slb_conn *c = slb_timer_entry(timer, struct slb_conn, timer);
    struct slb_loop *loop = c->loop;
    switch (c->state) {
    case SLB_CONN_CONNECTING:
    case SLB_CONN_OPEN:
    case SLB_CONN_CLOSING: /* the queue never drained: the peer stopped reading */
        slb_io_conn_close_now(loop, c, -ETIMEDOUT);
        break;
    case SLB_CONN_LINGER: /* all delivered; the peer just never sent its FIN */
        slb_io_conn_close_now(loop, c, c->close_reason);
        break;
    default:
        break;
    }
}

void slb_conn_close(struct slb_conn *conn, bool after_flush)
{
    struct slb_loop *loop = conn->loop;
    switch (conn->state) {
    case SLB_CONN_CONNECTING:
        slb_io_conn_close_now(loop, conn, -ECANCELED);
        break;
    case SLB_CONN_OPEN:
        if (after_flush)
            slb_io_conn_close_graceful(loop, conn, 0);
        else
            slb_io_conn_close_now(loop, conn, 0);
        break;
    case SLB_CONN_CLOSING:
    case SLB_CONN_LINGER:
        if (!after_flush)
            slb_io_conn_close_now(loop, conn, conn->close_reason);
        break;
    default:
        break;
    }
}

void slb_conn_set_timeout(struct slb_conn *conn, uint32_t timeout_ms)
{
    if (conn->state != SLB_CONN_OPEN && conn->state != SLB_CONN_CONNECTING)
        return;
    if (timeout_ms == 0)
        slb_timer_cancel(&conn->timer);
    else
        slb_timer_arm(&conn->loop->wheel, &conn->timer, timeout_ms);
}

void slb_conn_pause_recv(struct slb_conn *conn)
{
    if (conn->flags & SLB_CONN_F_PAUSED)
        return;
    conn->flags |= SLB_CONN_F_PAUSED;
    /* A multishot recv keeps completing until cancelled; not re-arming is not enough. */
    if ((conn->flags & SLB_CONN_F_RECV_ARMED) && !(conn->flags & SLB_CONN_F_RECV_CANCELING)) {
        conn->flags |= SLB_CONN_F_CANCEL_RECV;
        slb_io_pending_add(conn->loop, conn);
    }
}

void slb_conn_resume_recv(struct slb_conn *conn)
{
    if (!(conn->flags & SLB_CONN_F_PAUSED))
        return;
    /* A cancel not yet submitted is dropped; one in flight ends the recv and the
     * completion handler re-arms it since we are no longer paused. */
    conn->flags &= (uint16_t) ~(SLB_CONN_F_PAUSED | SLB_CONN_F_CANCEL_RECV);
    if (conn->state == SLB_CONN_OPEN && !(conn->flags & SLB_CONN_F_RECV_ARMED))
        slb_io_pending_add(conn->loop, conn);
}

/* Chunks this connection may still take from the pool. */
static uint32_t chunks_usable(const struct slb_loop *loop, const struct slb_conn *c)
{
    uint32_t free_chunks = slb_pool_free_count(&loop->chunk_free);
    if (c->flags & SLB_CONN_F_OUT_RESERVE)
        return free_chunks;
    return free_chunks > loop->out_reserve ? free_chunks - loop->out_reserve : 0;
}

size_t slb_conn_out_space(const struct slb_conn *conn)
{
    const struct slb_loop *loop = conn->loop;
    const struct slb_outq *q = &conn->out;
    if (conn->state != SLB_CONN_OPEN && conn->state != SLB_CONN_CONNECTING)
        return 0;
    size_t room = q->bytes < conn->out_cap ? conn->out_cap - q->bytes : 0;
    size_t tail_room = q->tail == SLB_IO_NONE ? 0 : loop->chunk_bytes - q->tail_len;
    size_t pool = tail_room + (size_t)chunks_usable(loop, conn) * loop->chunk_bytes;
    return room < pool ? room : pool;
}

void slb_conn_notify_space(struct slb_conn *conn)
{
    struct slb_loop *loop = conn->loop;
    if (conn->state != SLB_CONN_OPEN && conn->state != SLB_CONN_CONNECTING)
        return;
    if (conn->out.bytes > slb_io_out_low(loop, conn))
        conn->flags |= SLB_CONN_F_OUT_HIGH; /* a send completion will bring it down */
    else
        pool_wait_add(loop, conn); /* the queue is short: the pool is what is missing */
}

void slb_conn_set_out_limits(struct slb_conn *conn, uint32_t cap_bytes, bool reserved)
{
    if (cap_bytes)
        conn->out_cap = cap_bytes;
    if (reserved)
        conn->flags |= SLB_CONN_F_OUT_RESERVE;
    else
        conn->flags &= (uint16_t)~SLB_CONN_F_OUT_RESERVE;
}

int slb_conn_write(struct slb_conn *conn, const void *data, size_t len)
{
    struct slb_loop *loop = conn->loop;
    struct slb_outq *q = &conn->out;
    if ((conn->state != SLB_CONN_OPEN && conn->state != SLB_CONN_CONNECTING) || loop->tearing_down)
        return -EPIPE;
    if (len == 0)
        return 0;
    if (len > conn->out_cap)
        return -EMSGSIZE;
    if (q->bytes + len > conn->out_cap) {
        loop->counters.out_full++;
        conn->flags |= SLB_CONN_F_OUT_HIGH; /* so on_drained tells when to retry */
        return -ENOBUFS;
    }
    size_t tail_room = q->tail == SLB_IO_NONE ? 0 : loop->chunk_bytes - q->tail_len;
    if (len > tail_room) {
        size_t need = (len - tail_room + loop->chunk_bytes - 1) / loop->chunk_bytes;
        if (need > chunks_usable(loop, conn)) {
            /* The queue may be empty, so no send completion would ever say "retry":
             * the wait list does, once chunks come back. */
            loop->counters.out_pool_empty++;
            pool_wait_add(loop, conn);
            return -ENOBUFS;
        }
    }
    const unsigned char *src = data;
    size_t left = len;
    /* At most out_cap / chunk_bytes + 1 passes. */
    while (left > 0) {
        if (q->tail == SLB_IO_NONE || q->tail_len == loop->chunk_bytes) {
            uint32_t idx = chunk_get(loop);
            if (q->tail == SLB_IO_NONE) {
                q->head = idx;
                q->head_off = 0;
            } else {
                loop->chunk_next[q->tail] = idx;
            }
            q->tail = idx;
            q->tail_len = 0;
        }
        size_t n = loop->chunk_bytes - q->tail_len;
        if (n > left)
            n = left;
        memcpy(chunk_data(loop, q->tail) + q->tail_len, src, n);
        q->tail_len += (uint32_t)n;
        src += n;
        left -= n;
    }
    if (q->bytes == 0)
        loop->out_busy++;
    q->bytes += (uint32_t)len;
    if (q->bytes > slb_io_out_low(loop, conn))
        conn->flags |= SLB_CONN_F_OUT_HIGH;
    if (!(conn->flags & SLB_CONN_F_SEND_ARMED))
        slb_io_pending_add(loop, conn);
    return (int)len;
}

void slb_io_outq_consume(struct slb_loop *loop, struct slb_conn *c, uint32_t n)
{
    struct slb_outq *q = &c->out;
    if (n > q->bytes)
        n = q->bytes; /* the kernel never reports more than we gave it */
    q->bytes -= n;
    if (q->bytes == 0) {
        uint32_t idx = q->head;
        for (uint32_t i = 0; idx != SLB_IO_NONE && i < loop->nchunks; i++) {
            uint32_t next = loop->chunk_next[idx];
            chunk_put(loop, idx);
            idx = next;
        }
        q->head = q->tail = SLB_IO_NONE;
        q->head_off = q->tail_len = 0;
        loop->out_busy--;
        return;
    }
    /* Bytes remain, so the walk stops before the tail; every chunk before it is full. */
    while (n > 0) {
        uint32_t avail = loop->chunk_bytes - q->head_off;
        if (n < avail) {
            q->head_off += n;
            return;
        }
        n -= avail;
        uint32_t next = loop->chunk_next[q->head];
        chunk_put(loop, q->head);
        q->head = next;
        q->head_off = 0;
    }
}

unsigned slb_io_outq_iov(const struct slb_loop *loop, const struct slb_conn *c, struct iovec *iov,
                         unsigned max)
{
    const struct slb_outq *q = &c->out;
    uint32_t idx = q->head;
    uint32_t off = q->head_off;
    unsigned n = 0;
    while (idx != SLB_IO_NONE && n < max) {
        uint32_t end = idx == q->tail ? q->tail_len : loop->chunk_bytes;
        iov[n].iov_base = chunk_data(loop, idx) + off;
        iov[n].iov_len = end - off;
        n++;
        off = 0;
        idx = idx == q->tail ? SLB_IO_NONE : loop->chunk_next[idx];
    }
    return n;
}
