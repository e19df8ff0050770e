/* The process-wide routing view: one Maglev table built from the backends' health and
 * weights, published to every worker by pointer swap. Workers read it with no lock; an old
 * table is freed only after every worker has announced a newer one (quiescent-state based
 * reclamation), so no worker ever reads freed memory. */
#ifndef SLB_BALANCER_ROUTER_H
#define SLB_BALANCER_ROUTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "balancer/config.h"
#include "balancer/maglev.h"
#include "io/loop-t.h"

/* Routing tables published but not yet freed (a worker still may hold them): past this,
 * publishing waits (-EBUSY) until the slowest worker moves on. */
#define SLB_ROUTER_RETIRED_MAX 64u

enum slb_backend_state {
    SLB_BACKEND_UP = 0,   /* takes new dialogs */
    SLB_BACKEND_DOWN,     /* failed its probes: no traffic */
    SLB_BACKEND_DRAINING, /* no new dialogs; its dialogs still reach it */
    SLB_BACKEND_REMOVED,  /* taken out by a reload: no traffic, its links are closed */
};

/* One published table. Immutable once published; freed by the router's owner thread. */
struct slb_route_table {
    uint64_t gen;
    const struct slb_backends *backends; /* the backends it was built from (a reference) */
    uint32_t n_backends;                 /* slots of backends in use (some may be REMOVED) */
    uint8_t state[SLB_MAX_BACKENDS];     /* enum slb_backend_state */
    struct slb_maglev maglev;            /* slot array follows the struct */
    uint16_t slots[];
};

/* Shared by all threads. Publishing and reclaiming happen on one thread (the control
 * thread); workers only acquire. */
struct slb_router {
    _Atomic(struct slb_route_table *) cur;
    struct {
        _Alignas(64) atomic_uint_fast64_t seen; /* newest generation this worker has loaded */
    } worker[SLB_LOOPS_MAX];
    unsigned n_workers;
    uint32_t table_size;
    uint64_t next_gen;
    struct slb_route_table *retired[SLB_ROUTER_RETIRED_MAX]; /* published, not yet freed */
    unsigned n_retired;
};

/* Sets up the router with an initial table for these backends (every one up, or draining
 * when so flagged), for tables of cfg's --maglev-size. Takes a reference to backends.
 * Returns 0 or -ENOMEM. */
int slb_router_init(struct slb_router *r, const struct slb_config *cfg,
                    const struct slb_backends *backends, unsigned n_workers);
void slb_router_deinit(struct slb_router *r);

/* Builds and publishes a table for these states, then frees the retired tables every worker
 * has moved past. Publisher thread only. Returns 0, or -ENOMEM / -EBUSY (too many tables
 * still held: the old one stays current). */
int slb_router_publish(struct slb_router *r, const struct slb_backends *backends,
                       const uint8_t state[SLB_MAX_BACKENDS]);

/* Frees what can be freed without publishing (called periodically by the publisher). */
void slb_router_reclaim(struct slb_router *r);

/* The current table, for worker `w`; valid until that worker's next acquire. */
static inline const struct slb_route_table *slb_router_acquire(struct slb_router *r, unsigned w)
{
    struct slb_route_table *t = atomic_load_explicit(&r->cur, memory_order_acquire);
    if (atomic_load_explicit(&r->worker[w].seen, memory_order_relaxed) != t->gen)
        atomic_store_explicit(&r->worker[w].seen, t->gen, memory_order_seq_cst);
    return t;
}

/* The current table without announcing it: safe on a worker's thread until that worker's
 * next slb_router_acquire (the generation it announced last keeps every newer table). For
 * reading the backends outside the handling of a message. */
static inline const struct slb_route_table *slb_router_peek(struct slb_router *r)
{
    return atomic_load_explicit(&r->cur, memory_order_acquire);
}

#endif
