/* Free lists of slot indexes: the one facility behind every fixed-size pool (pending input
 * buffers, connection slots, output chunks, hand-over slots). The pool hands out indexes
 * only; what a slot is and where its memory lives is the owner's business.
 *
 * Allocated once at init, never after: getting and putting are O(1) and never allocate.
 * Not thread-safe: the owner's thread only. */
#ifndef SLB_CORE_POOL_H
#define SLB_CORE_POOL_H

#include <errno.h>
#include <stdint.h>

#include "core/pool-t.h"

/* Makes p a pool of n indexes, all free; the first gets on it return 0, 1, 2, ... in that
 * order. n may be 0 (every get fails). Returns 0 or -ENOMEM (then p is as after
 * slb_pool_deinit). */
int slb_pool_init(struct slb_pool *p, uint32_t n);

/* Frees p's memory. Safe on a zeroed pool and on one whose init failed; p may be
 * initialised again afterwards. */
void slb_pool_deinit(struct slb_pool *p);

/* Reports a bad put and aborts (slb_pool_put's programmer-error path). */
_Noreturn void slb_pool_bad_put(const struct slb_pool *p, uint32_t idx);

/* Takes a free index: the one put back last, or the lowest never taken. Returns the index
 * (0 <= index < capacity), which the caller owns until slb_pool_put, or -ENOBUFS when
 * none is free. Inline: io/ takes an output chunk per write. */
static inline int64_t slb_pool_get(struct slb_pool *p)
{
    if (p->top == 0)
        return -ENOBUFS;
    return p->free[--p->top];
}

/* Gives idx back; the caller must own it (from slb_pool_get). An index out of range, or a
 * put into a pool with every index already free (a double put), is a programmer error:
 * the process aborts. (A double put while other indexes are out goes unseen: catching it
 * would cost a bitmap.) */
static inline void slb_pool_put(struct slb_pool *p, uint32_t idx)
{
    if (idx >= p->cap || p->top >= p->cap)
        slb_pool_bad_put(p, idx);
    p->free[p->top++] = idx;
}

/* Indexes free now. */
static inline uint32_t slb_pool_free_count(const struct slb_pool *p)
{
    return p->top;
}

/* Indexes in all (the n of slb_pool_init). */
static inline uint32_t slb_pool_capacity(const struct slb_pool *p)
{
    return p->cap;
}

#endif
