/* The routing view: tables built off the per-message path and swapped in by pointer;
 * reclamation by generations each worker announces when it loads a table (router.h).
 * Publishing, reclaiming and freeing run on one thread; acquiring on the workers. */
#include "balancer/router.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct slb_route_table *build(struct slb_router *r, const struct slb_backends *backends,
                                     const uint8_t state[SLB_MAX_BACKENDS])
{
    const struct slb_backend_attrs *attrs = &backends->attrs;
    struct slb_route_table *t = malloc(sizeof(*t) + (size_t)r->table_size * sizeof(t->slots[0]));
    void *scratch = malloc(slb_maglev_scratch_bytes(SLB_MAX_BACKENDS));
    if (!t || !scratch) {
        free(t);
        free(scratch);
        return NULL;
    }
    t->gen = ++r->next_gen;
    t->backends = slb_backends_ref(backends);
    t->n_backends = attrs->n;
    memcpy(t->state, state, SLB_MAX_BACKENDS);
    t->maglev.size = r->table_size;
    t->maglev.slot = t->slots;
    /* Only backends that are up take new dialogs: draining and down ones stay out, and so
     * does every SRV priority group but the best one with a backend up (RFC 2782: the others
     * are for failover). In-dialog requests still reach any backend by its token. */
    uint32_t best = UINT32_MAX;
    for (unsigned i = 0; i < attrs->n; i++)
        if (state[i] == SLB_BACKEND_UP && attrs->priority[i] < best)
            best = attrs->priority[i];
    struct slb_maglev_backend b[SLB_MAX_BACKENDS];
    for (unsigned i = 0; i < attrs->n; i++)
        b[i] = (struct slb_maglev_backend){backends->spec[i].name,
                                           state[i] == SLB_BACKEND_UP && attrs->priority[i] == best,
                                           attrs->weight[i]};
    slb_maglev_build(&t->maglev, b, attrs->n, scratch);
    free(scratch);
    return t;
}

static void table_free(struct slb_route_table *t)
{
    if (t)
        slb_backends_unref(t->backends);
    free(t);
}

int slb_router_init(struct slb_router *r, const struct slb_config *cfg,
                    const struct slb_backends *backends, unsigned n_workers)
{
    memset(r, 0, sizeof(*r));
    r->n_workers = n_workers;
    r->table_size = (uint32_t)cfg->maglev_size;
    uint8_t state[SLB_MAX_BACKENDS];
    for (unsigned i = 0; i < SLB_MAX_BACKENDS; i++)
        state[i] = backends->attrs.drain[i] ? SLB_BACKEND_DRAINING : SLB_BACKEND_UP;
    struct slb_route_table *t = build(r, backends, state);
    if (!t)
        return -ENOMEM;
    atomic_store(&r->cur, t);
    return 0;
}

void slb_router_reclaim(struct slb_router *r)
{
    uint64_t oldest = UINT64_MAX;
    for (unsigned w = 0; w < r->n_workers; w++) {
        uint64_t s = atomic_load_explicit(&r->worker[w].seen, memory_order_seq_cst);
        oldest = s < oldest ? s : oldest;
    }
    unsigned keep = 0;
    for (unsigned i = 0; i < r->n_retired; i++) {
        /* Every worker has loaded a newer table since: none can still hold this one. */
        if (r->retired[i]->gen < oldest)
            table_free(r->retired[i]);
        else
            r->retired[keep++] = r->retired[i];
    }
    r->n_retired = keep;
}

int slb_router_publish(struct slb_router *r, const struct slb_backends *backends,
                       const uint8_t state[SLB_MAX_BACKENDS])
{
    slb_router_reclaim(r);
    if (r->n_retired == SLB_ROUTER_RETIRED_MAX)
        return -EBUSY;
    struct slb_route_table *t = build(r, backends, state);
    if (!t)
        return -ENOMEM;
    struct slb_route_table *old = atomic_exchange_explicit(&r->cur, t, memory_order_seq_cst);
    r->retired[r->n_retired++] = old;
    slb_router_reclaim(r);
    return 0;
}

void slb_router_deinit(struct slb_router *r)
{
    for (unsigned i = 0; i < r->n_retired; i++)
        table_free(r->retired[i]);
    r->n_retired = 0;
    table_free(atomic_load(&r->cur));
    atomic_store(&r->cur, NULL);
}
