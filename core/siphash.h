/* SipHash-2-4 (Aumasson and Bernstein): a keyed 64-bit hash, used as the MAC of our
 * branch and flow tokens (per-process random key) and, with a fixed key, as the routing
 * hash of Call-IDs (the same in every process). Pure. */
#ifndef SLB_CORE_SIPHASH_H
#define SLB_CORE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct slb_siphash_key {
    uint64_t k0, k1;
};

uint64_t slb_siphash(const struct slb_siphash_key *key, const void *data, size_t len);

#endif
