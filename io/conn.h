/* Connections of a loop: lookup by id, output queue, receive backpressure, close, timeout.
 * Everything here runs on the owning loop's thread. */
#ifndef SLB_IO_CONN_H
#define SLB_IO_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/conn-t.h"
#include "io/loop-t.h"

static inline struct slb_conn_id slb_conn_id_make(uint8_t loop_id, uint32_t slot, uint32_t gen)
{
    struct slb_conn_id id = {((uint64_t)loop_id << SLB_CONN_ID_LOOP_SHIFT) |
                             ((uint64_t)(slot & SLB_CONN_ID_SLOT_MASK) << SLB_CONN_ID_SLOT_SHIFT) |
                             gen};
    return id;
}

static inline uint8_t slb_conn_id_loop(struct slb_conn_id id)
{
    return (uint8_t)(id.v >> SLB_CONN_ID_LOOP_SHIFT);
}

static inline uint32_t slb_conn_id_slot(struct slb_conn_id id)
{
    return (uint32_t)(id.v >> SLB_CONN_ID_SLOT_SHIFT) & SLB_CONN_ID_SLOT_MASK;
}

static inline uint32_t slb_conn_id_gen(struct slb_conn_id id)
{
    return (uint32_t)id.v;
}

/* The live connection named by id, or NULL if the id is stale (closed: on_close ran),
 * belongs to another loop, or was never issued. */
struct slb_conn *slb_conn_get(struct slb_loop *loop, struct slb_conn_id id);

/* Appends len bytes (copied) to the output queue; they go out with the loop's next batch
 * of sends. Returns len; -ENOBUFS when the capacity (or the loop's chunk pool) would be
 * exceeded: nothing is appended, and on_drained follows once the queue falls to the
 * low-water mark (or, for pool exhaustion, once chunks are back); -EMSGSIZE if len exceeds the capacity;
 * -EPIPE once the connection is closing. Allowed while CONNECTING (sent once open). */
int slb_conn_write(struct slb_conn *conn, const void *data, size_t len);

/* Gives the connection its own output bound (cap_bytes; 0 keeps the current one) and says
 * whether it may use the pool's reserved chunks (opts.out_reserve_chunks). A write refused
 * for lack of chunks is followed by on_drained once chunks are back. */
void slb_conn_set_out_limits(struct slb_conn *conn, uint32_t cap_bytes, bool reserved);

/* The caller found slb_conn_out_space too small and wrote nothing: on_drained follows
 * once the queue has drained to its low-water mark or the pool has chunks again. */
void slb_conn_notify_space(struct slb_conn *conn);

/* Bytes slb_conn_write would accept now. */
size_t slb_conn_out_space(const struct slb_conn *conn);

/* Bytes queued and not yet acknowledged by a send completion. */
static inline size_t slb_conn_out_queued(const struct slb_conn *conn)
{
    return conn->out.bytes;
}

/* Stops receiving (the multishot recv is cancelled, not re-armed). Bytes the kernel had
 * already completed are still delivered to on_data after this call (up to the loop's
 * receive buffers in total), never dropped. */
void slb_conn_pause_recv(struct slb_conn *conn);

/* Receives again after slb_conn_pause_recv. */
void slb_conn_resume_recv(struct slb_conn *conn);

static inline bool slb_conn_recv_paused(const struct slb_conn *conn)
{
    return (conn->flags & SLB_CONN_F_PAUSED) != 0;
}

/* Closes the connection. after_flush: send what is queued, shut the write side, wait for
 * the peer's EOF (bounded by linger_ms), then close; further input is discarded. Otherwise
 * cancel everything and close now. on_close (reason 0) runs when the socket is closed; a
 * connection still connecting gets on_connect(-ECANCELED) instead. Idempotent. */
void slb_conn_close(struct slb_conn *conn, bool after_flush);

/* (Re)arms the connection's timeout: if it fires, the connection is closed with
 * -ETIMEDOUT (on_connect(-ETIMEDOUT) while connecting). 0 disarms. Call again on activity
 * for an idle timeout; O(1). Ignored once the connection is closing. */
void slb_conn_set_timeout(struct slb_conn *conn, uint32_t timeout_ms);

#endif
