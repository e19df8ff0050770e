/* Log-linear latency histogram (see hist.h for the layout).
 *
 * Index of v >= 2^S (S = SLB_HIST_SUB_BITS, H = 2^(S-1)): with k the position of v's
 * highest bit and g = k - S + 1 >= 1, the top S bits m = v >> g lie in [H, 2H) and
 * v goes to g * H + m. Below 2^S the index is v itself. Group g therefore starts right
 * where group g - 1 ends, and a bucket of group g spans 2^g values out of at least
 * H * 2^g: relative width at most 1/H.
 *
 * Invariants: count == sum of counts[]; min/max exact. Single writer, no allocation. */
#include "bench/hist.h"

#include <string.h>

#define LINEAR_END (2ull * SLB_HIST_HALF) /* 2^S: values with a bucket of their own */
#define TOP_GROUP  (SLB_HIST_MAX_BITS - SLB_HIST_SUB_BITS)

void slb_hist_init(struct slb_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

uint32_t slb_hist_index(uint64_t v)
{
    if (v < LINEAR_END)
        return (uint32_t)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v);
    unsigned g = k - SLB_HIST_SUB_BITS + 1u;
    if (g > TOP_GROUP)
        return SLB_HIST_BUCKETS - 1u;
    return g * SLB_HIST_HALF + (uint32_t)(v >> g);
}

static unsigned group_of(uint32_t i)
{
    return i < LINEAR_END ? 0u : i / SLB_HIST_HALF - 1u;
}

uint64_t slb_hist_bucket_low(uint32_t i)
{
    unsigned g = group_of(i);
    if (g == 0)
        return i;
    uint64_t m = i - (uint64_t)g * SLB_HIST_HALF;
    return m << g;
}

uint64_t slb_hist_bucket_high(uint32_t i)
{
    if (i >= SLB_HIST_BUCKETS - 1u)
        return UINT64_MAX;
    return slb_hist_bucket_low(i + 1u) - 1u;
}

void slb_hist_record_n(struct slb_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    h->counts[slb_hist_index(v)] += n;
    h->count += n;
    uint64_t add = v * n;
    bool over = (v != 0 && add / v != n) || h->sum + add < h->sum;
    h->sum = over ? UINT64_MAX : h->sum + add;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void slb_hist_merge(struct slb_hist *dst, const struct slb_hist *src)
{
    if (src->count == 0)
        return;
    for (uint32_t i = 0; i < SLB_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum = dst->sum + src->sum < dst->sum ? UINT64_MAX : dst->sum + src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t slb_hist_percentile(const struct slb_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (!(p > 0.0))
        return h->min;
    if (p >= 100.0)
        return h->max;
    /* rank: how many values must be at or below the answer (at least one). The tolerance
     * keeps binary rounding (99.9% of 1000 is 999.0000000000001) from adding one. */
    double want = p / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if (want - (double)rank > 1e-9 * want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < SLB_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = slb_hist_bucket_high(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double slb_hist_mean(const struct slb_hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}
