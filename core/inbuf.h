/* Unframed input of stream connections: where decrypted (or plain) bytes land before they
 * are framed, and where the rest of a batch waits when its connection stops part way (a
 * message split across reads, a client parked by backpressure).
 *
 * One pool per worker: a scratch buffer that takes each decryption when nothing is
 * pending, and fixed pending buffers, each taken by one connection only while it holds
 * unconsumed bytes. Every buffer is buf_bytes long, so whatever one decryption into the
 * scratch leaves unconsumed always fits a pending buffer: the invariant whose absence let
 * a parked client's rest overflow into its neighbour's buffer.
 *
 * Pure memory bookkeeping: no I/O, no framing, no locks. The owning worker's thread only.
 * The pool's memory is reserved at init and touched only as buffers are used. */
#ifndef SLB_CORE_INBUF_H
#define SLB_CORE_INBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/pool-t.h"

/* Owned by one worker. */
struct slb_inbuf_pool {
    char *scratch;        /* buf_bytes */
    char *mem;            /* n pending buffers of buf_bytes */
    struct slb_pool free; /* indexes of the free ones */
    uint32_t n;           /* pending buffers */
    size_t buf_bytes;
};

/* One connection's pending input, embedded in its record. Zero is empty. */
struct slb_inbuf {
    char *pending; /* a pool buffer while bytes wait, else NULL */
    uint32_t len;  /* bytes waiting in it */
};

/* A pool of n pending buffers of buf_bytes each, plus the scratch. Returns 0 or -ENOMEM. */
int slb_inbuf_pool_init(struct slb_inbuf_pool *pool, uint32_t n, size_t buf_bytes);
void slb_inbuf_pool_deinit(struct slb_inbuf_pool *pool);

/* Where the next read or decryption for `in` goes, and how much room it has there: behind
 * its pending bytes, or the scratch when none wait. The caller writes at most *cap bytes
 * there, then calls slb_inbuf_filled with how many it wrote. */
char *slb_inbuf_dst(struct slb_inbuf_pool *pool, const struct slb_inbuf *in, size_t *cap);

/* After got bytes were written at slb_inbuf_dst: the buffer to frame from (its start) and
 * its length in *len. The bytes belong to `in` from here on. */
const char *slb_inbuf_filled(struct slb_inbuf_pool *pool, struct slb_inbuf *in, size_t got,
                             size_t *len);

/* After framing buf[0, used) of what slb_inbuf_filled (or slb_inbuf_append) returned:
 * keeps buf[used, len) as in's pending bytes and frees its buffer when nothing is left.
 * Returns 0, or -ENOBUFS when a pending buffer was needed and none was free, or -EMSGSIZE
 * when the rest does not fit one (a caller's bug, refused rather than overflowing): the
 * caller closes the connection. */
int slb_inbuf_keep(struct slb_inbuf_pool *pool, struct slb_inbuf *in, const char *buf, size_t used,
                   size_t len);

/* Appends n bytes behind in's pending ones (input that arrives while the connection is
 * paused, or plain TCP bytes while something is pending). Returns 0, -ENOBUFS (no buffer
 * free) or -EMSGSIZE (more than the buffer holds: nothing appended). */
int slb_inbuf_append(struct slb_inbuf_pool *pool, struct slb_inbuf *in, const void *data, size_t n);

/* Gives in's buffer back (the connection closed). */
void slb_inbuf_release(struct slb_inbuf_pool *pool, struct slb_inbuf *in);

/* Room left behind in's pending bytes (buf_bytes when none wait). */
static inline size_t slb_inbuf_room(const struct slb_inbuf_pool *pool, const struct slb_inbuf *in)
{
    return pool->buf_bytes - in->len;
}

#endif
