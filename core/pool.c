/* Free lists of slot indexes (see core/pool.h).
 *
 * Invariants: top <= cap; free[0, top) holds distinct indexes < cap, exactly those not
 * handed out. A fresh pool stores them in descending order so that the top is 0.
 * The owner's thread only. */
#include "core/pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int slb_pool_init(struct slb_pool *p, uint32_t n)
{
    memset(p, 0, sizeof(*p));
    if (n == 0)
        return 0; /* malloc(0) may be NULL: no memory is needed, nothing failed */
    p->free = malloc((size_t)n * sizeof(*p->free));
    if (!p->free)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        p->free[i] = n - 1 - i;
    p->top = n;
    p->cap = n;
    return 0;
}

void slb_pool_deinit(struct slb_pool *p)
{
    free(p->free);
    memset(p, 0, sizeof(*p));
}

void slb_pool_bad_put(const struct slb_pool *p, uint32_t idx)
{
    /* A put past cap would write beyond free[]; one of an index out of range would hand
     * out memory that is not the pool's. Either is a caller's bug, so stop here rather
     * than corrupt a neighbour. */
    fprintf(stderr, "slb_pool_put: index %u into a pool of %u with %u free\n", idx, p->cap, p->top);
    abort();
}
