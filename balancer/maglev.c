/* Maglev table population (NSDI 2016, section 3.4): each backend walks its own
 * permutation of the slots (offset + j * skip, mod a prime) and, in turns, claims the next
 * slot of its permutation that is still free, until every slot has an owner. Weights: in
 * every round a backend earns weight/max_weight of a turn and claims a slot for each whole
 * turn it has earned, so slot shares follow the weights. Backends are taken in the order of
 * their names' hashes so that the same set yields the same table whatever order it was
 * listed in. Pure; runs off the per-message path. */
#include "balancer/maglev.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/siphash.h"

/* Fixed keys: every sipslb process must compute the same permutations and hashes. */
static const struct slb_siphash_key offset_key = {0x736970736c622d6full, 0x66667365742d6b31ull};
static const struct slb_siphash_key skip_key = {0x736970736c622d73ull, 0x6b69702d6b65792dull};
static const struct slb_siphash_key route_key = {0x736970736c622d72ull, 0x6f7574652d6b6579ull};

uint64_t slb_route_hash(struct slb_slice call_id)
{
    return slb_siphash(&route_key, call_id.ptr, call_id.len);
}

bool slb_is_prime(uint32_t n)
{
    if (n < 2)
        return false;
    for (uint32_t d = 2; (uint64_t)d * d <= n; d++)
        if (n % d == 0)
            return false;
    return true;
}

struct perm {
    uint32_t offset, skip, next;
    uint64_t weight, credit; /* turns earned, in units of 1/max_weight */
    uint16_t index; /* into the caller's backend array */
    uint64_t order; /* hash of the name: the turn order */
};

size_t slb_maglev_scratch_bytes(size_t n)
{
    return n * sizeof(struct perm);
}

static int by_order(const void *a, const void *b)
{
    const struct perm *x = a, *y = b;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

int slb_maglev_build(struct slb_maglev *m, const struct slb_maglev_backend *b, size_t n,
                     void *scratch)
{
    if (!slb_is_prime(m->size) || n > SLB_MAGLEV_MAX_BACKENDS || n >= m->size)
        return -EINVAL;
    struct perm *p = scratch;
    uint32_t up = 0;
    for (size_t i = 0; i < n; i++) {
        if (!b[i].up)
            continue;
        size_t len = strlen(b[i].name);
        p[up] = (struct perm){
            .offset = (uint32_t)(slb_siphash(&offset_key, b[i].name, len) % m->size),
            .skip = (uint32_t)(slb_siphash(&skip_key, b[i].name, len) % (m->size - 1)) + 1,
            .next = 0,
            .weight = b[i].weight ? b[i].weight : 1,
            .credit = 0,
            .index = (uint16_t)i,
            .order = slb_siphash(&route_key, b[i].name, len),
        };
        up++;
    }
    m->n_up = up;
    if (up == 0)
        return 0;
    qsort(p, up, sizeof(p[0]), by_order);
    uint64_t max_w = 0;
    for (uint32_t i = 0; i < up; i++)
        max_w = p[i].weight > max_w ? p[i].weight : max_w;
    memset(m->slot, 0xff, m->size * sizeof(m->slot[0]));
    uint32_t filled = 0;
    for (;;) {
        for (uint32_t i = 0; i < up; i++) {
            p[i].credit += p[i].weight;
            while (p[i].credit >= max_w) {
                p[i].credit -= max_w;
                /* Next free slot in this backend's permutation; the permutation visits
                 * every slot since skip and the prime size are coprime. */
                uint32_t c;
                do {
                    c = (uint32_t)(((uint64_t)p[i].offset + (uint64_t)p[i].next * p[i].skip) %
                                   m->size);
                    p[i].next++;
                } while (m->slot[c] != SLB_MAGLEV_NONE);
                m->slot[c] = p[i].index;
                if (++filled == m->size)
                    return 0;
            }
        }
    }
}
