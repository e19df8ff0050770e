/* A latency histogram with log-linear buckets (HdrHistogram's layout): values below
 * 2^SLB_HIST_SUB_BITS each have a bucket of their own; above, every power-of-two range is
 * cut into 2^(SLB_HIST_SUB_BITS - 1) equal buckets, so a bucket is never wider than 1/512
 * of the values it holds. Fixed memory (one flat array, no allocation), O(1) record,
 * mergeable by adding counts, so each worker keeps its own and the totals are summed
 * after the run. Units are the caller's (sipslb-load records microseconds).
 *
 * Not thread-safe: one writer; read or merge only once the writer is done. */
#ifndef SLB_BENCH_HIST_H
#define SLB_BENCH_HIST_H

#include <stdbool.h>
#include <stdint.h>

#define SLB_HIST_SUB_BITS 10u /* exact below 1024; then 512 buckets per power of two */
#define SLB_HIST_MAX_BITS 36u /* values from 2^36 up share the top bucket (max stays exact) */
#define SLB_HIST_HALF     (1u << (SLB_HIST_SUB_BITS - 1))
#define SLB_HIST_BUCKETS  ((SLB_HIST_MAX_BITS - SLB_HIST_SUB_BITS + 2u) * SLB_HIST_HALF)

/* Owned by whoever embeds it (a worker's stats, a report). 112 KiB. */
struct slb_hist {
    uint64_t count; /* values recorded */
    uint64_t min;   /* exact; UINT64_MAX while empty */
    uint64_t max;   /* exact; 0 while empty */
    uint64_t sum;   /* exact (saturates), for the mean */
    uint64_t counts[SLB_HIST_BUCKETS];
};

/* Empties h. */
void slb_hist_init(struct slb_hist *h);

/* Records value v n times (n may be 0). */
void slb_hist_record_n(struct slb_hist *h, uint64_t v, uint64_t n);

static inline void slb_hist_record(struct slb_hist *h, uint64_t v)
{
    slb_hist_record_n(h, v, 1);
}

/* Adds every value recorded in src to dst. */
void slb_hist_merge(struct slb_hist *dst, const struct slb_hist *src);

/* The bucket holding v (values at or past 2^SLB_HIST_MAX_BITS land in the last one). */
uint32_t slb_hist_index(uint64_t v);

/* The smallest and largest value bucket i holds (i < SLB_HIST_BUCKETS). Consecutive
 * buckets are contiguous: high(i) + 1 == low(i + 1). The last bucket's high is UINT64_MAX. */
uint64_t slb_hist_bucket_low(uint32_t i);
uint64_t slb_hist_bucket_high(uint32_t i);

/* The value at percentile p (0..100): the smallest recorded value v such that at least
 * p% of the values are <= v, reported as the highest value of v's bucket, clamped to
 * [min, max]; so p = 100 gives max exactly and p = 0 gives min. 0 for an empty histogram. */
uint64_t slb_hist_percentile(const struct slb_hist *h, double p);

/* The exact mean, 0 for an empty histogram. */
double slb_hist_mean(const struct slb_hist *h);

static inline bool slb_hist_empty(const struct slb_hist *h)
{
    return h->count == 0;
}

#endif
