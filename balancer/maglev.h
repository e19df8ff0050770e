/* Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size in
 * which each backend owns a near-equal share of slots, so that removing one of N backends
 * moves only about 1/N of the keys. Pure: no I/O, no clock; building allocates nothing
 * (the caller provides the table and a scratch area). */
#ifndef SLB_BALANCER_MAGLEV_H
#define SLB_BALANCER_MAGLEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice-t.h"

#define SLB_MAGLEV_SIZE_DEFAULT 65537u
#define SLB_MAGLEV_MAX_BACKENDS 1024u
#define SLB_MAGLEV_NONE         0xffffu /* lookup result when no backend is up */

/* A backend as the table sees it: its stable name (the same in every process that is
 * given the same backend list, e.g. "host:port"), its weight (share of slots relative to
 * the others; 0 counts as 1) and whether it takes new keys. */
struct slb_maglev_backend {
    const char *name;
    bool up;
    uint32_t weight;
};

/* The table: size entries of backend indices. Owned by its builder; read only once
 * published. */
struct slb_maglev {
    uint32_t size; /* a prime */
    uint32_t n_up;
    uint16_t *slot;
};

/* Bytes of scratch slb_maglev_build needs for n backends. */
size_t slb_maglev_scratch_bytes(size_t n);

/* Fills m->slot (m->size entries, prime, > n) from the backends that are up, each owning
 * a share of slots proportional to its weight. The result depends only on the names,
 * weights, up states and the size, not on the order of b[] beyond the indices it reports.
 * Returns 0, or -EINVAL (size not prime, n too large). */
int slb_maglev_build(struct slb_maglev *m, const struct slb_maglev_backend *b, size_t n,
                     void *scratch);

/* The backend index for a key hash, or SLB_MAGLEV_NONE. */
static inline uint16_t slb_maglev_lookup(const struct slb_maglev *m, uint64_t hash)
{
    return m->n_up ? m->slot[hash % m->size] : (uint16_t)SLB_MAGLEV_NONE;
}

/* The next choice for a key when backend `except` cannot take it (its link failed, it is
 * going down): the owner of the first slot from the key's own onward that is not except.
 * The same answer in every process given the same table, and never except; slots of the
 * other backends follow each other in the table's pseudo-random order, so the keys of a
 * failed backend spread over the others by their shares. SLB_MAGLEV_NONE when no other
 * backend is up. */
static inline uint16_t slb_maglev_lookup_except(const struct slb_maglev *m, uint64_t hash,
                                                uint16_t except)
{
    if (m->n_up == 0)
        return (uint16_t)SLB_MAGLEV_NONE;
    uint32_t s = (uint32_t)(hash % m->size);
    if (m->slot[s] != except)
        return m->slot[s];
    if (m->n_up == 1)
        return (uint16_t)SLB_MAGLEV_NONE;
    for (uint32_t i = 1; i < m->size; i++) {
        uint16_t b = m->slot[(s + i) % m->size];
        if (b != except)
            return b;
    }
    return (uint16_t)SLB_MAGLEV_NONE;
}

/* The routing hash of a Call-ID: a fixed-key SipHash, identical in every process. */
uint64_t slb_route_hash(struct slb_slice call_id);

bool slb_is_prime(uint32_t n);

#endif
