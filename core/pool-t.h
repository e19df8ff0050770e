/* The index pool's type, apart from its functions so that other type headers can embed one. */
#ifndef SLB_CORE_POOL_T_H
#define SLB_CORE_POOL_T_H

#include <stdint.h>

/* A fixed set of slot indexes 0..cap-1, handed out and taken back LIFO (the slot freed last
 * is the one whose memory is most likely still in cache). Owned by whoever embeds it (a
 * worker's inbuf pool, a loop, an outbox); used by that owner's thread only. */
struct slb_pool {
    uint32_t *free; /* free[0, top): the free indexes, the next one to hand out on top */
    uint32_t top;   /* free indexes */
    uint32_t cap;   /* indexes in all */
};

#endif
