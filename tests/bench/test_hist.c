/* The log-linear latency histogram of sipslb-load (bench/hist.c). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "bench/hist.h"

/* 112 KiB each: keep them off Criterion's stack. */
static struct slb_hist ha, hb, hc;

Test(hist, empty_reports_zero)
{
    slb_hist_init(&ha);
    cr_assert(slb_hist_empty(&ha));
    cr_assert_eq(slb_hist_percentile(&ha, 50), 0);
    cr_assert_eq(slb_hist_percentile(&ha, 100), 0);
    cr_assert_eq(slb_hist_mean(&ha), 0.0);
}

Test(hist, values_below_1024_are_exact)
{
    for (uint64_t v = 0; v < 1024; v++) {
        uint32_t i = slb_hist_index(v);
        cr_assert_eq(slb_hist_bucket_low(i), v);
        cr_assert_eq(slb_hist_bucket_high(i), v);
    }
}

Test(hist, buckets_are_contiguous_and_ordered)
{
    cr_assert_eq(slb_hist_bucket_low(0), 0);
    for (uint32_t i = 0; i + 1 < SLB_HIST_BUCKETS; i++) {
        cr_assert_eq(slb_hist_bucket_high(i) + 1, slb_hist_bucket_low(i + 1), "bucket %u", i);
        cr_assert_leq(slb_hist_bucket_low(i), slb_hist_bucket_high(i));
    }
    cr_assert_eq(slb_hist_bucket_high(SLB_HIST_BUCKETS - 1), UINT64_MAX);
}

Test(hist, every_value_lands_in_a_bucket_that_holds_it)
{
    /* Each bucket's edges, their neighbours, and pseudo-random values of every size. */
    for (uint32_t i = 0; i < SLB_HIST_BUCKETS; i++) {
        uint64_t lo = slb_hist_bucket_low(i);
        cr_assert_eq(slb_hist_index(lo), i);
        if (i + 1 < SLB_HIST_BUCKETS)
            cr_assert_eq(slb_hist_index(slb_hist_bucket_high(i)), i);
    }
    uint64_t x = 88172645463325252ull;
    for (int n = 0; n < 200000; n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t v = x >> (x % 64);
        uint32_t i = slb_hist_index(v);
        cr_assert_lt(i, SLB_HIST_BUCKETS);
        cr_assert_leq(slb_hist_bucket_low(i), v);
        cr_assert_geq(slb_hist_bucket_high(i), v);
    }
}

Test(hist, bucket_width_is_within_one_part_in_512)
{
    for (uint32_t i = 1024; i + 1 < SLB_HIST_BUCKETS; i++) {
        uint64_t lo = slb_hist_bucket_low(i), hi = slb_hist_bucket_high(i);
        cr_assert_leq((hi - lo + 1) * 512, lo, "bucket %u [%lu, %lu]", i, (unsigned long)lo,
                      (unsigned long)hi);
    }
}

Test(hist, huge_values_share_the_top_bucket_and_keep_max_exact)
{
    slb_hist_init(&ha);
    slb_hist_record(&ha, UINT64_MAX - 5);
    slb_hist_record(&ha, (uint64_t)1 << 40);
    cr_assert_eq(slb_hist_index((uint64_t)1 << 40), SLB_HIST_BUCKETS - 1);
    cr_assert_eq(ha.counts[SLB_HIST_BUCKETS - 1], 2);
    cr_assert_eq(ha.max, UINT64_MAX - 5);
    cr_assert_eq(ha.min, (uint64_t)1 << 40);
    cr_assert_eq(slb_hist_percentile(&ha, 100), UINT64_MAX - 5);
    cr_assert_eq(ha.sum, UINT64_MAX, "the sum saturates instead of wrapping");
}

Test(hist, percentiles_of_a_uniform_run)
{
    slb_hist_init(&ha);
    for (uint64_t v = 1; v <= 100000; v++)
        slb_hist_record(&ha, v);
    cr_assert_eq(ha.count, 100000);
    cr_assert_eq(ha.min, 1);
    cr_assert_eq(ha.max, 100000);
    cr_assert_eq(slb_hist_percentile(&ha, 0), 1);
    cr_assert_eq(slb_hist_percentile(&ha, 100), 100000);
    cr_assert_float_eq(slb_hist_mean(&ha), 50000.5, 1e-9);
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
        double exact = ps[k] * 1000.0;
        uint64_t got = slb_hist_percentile(&ha, ps[k]);
        /* Reported as the bucket's top: never below the exact rank, at most 1/512 above. */
        cr_assert_geq((double)got, exact, "p%g = %lu", ps[k], (unsigned long)got);
        cr_assert_leq((double)got, exact * (1.0 + 1.0 / 512), "p%g = %lu", ps[k],
                      (unsigned long)got);
    }
}

Test(hist, percentile_rank_is_exact_for_small_values)
{
    slb_hist_init(&ha);
    slb_hist_record_n(&ha, 100, 999);
    slb_hist_record(&ha, 1000000);
    cr_assert_eq(slb_hist_percentile(&ha, 50), 100);
    cr_assert_eq(slb_hist_percentile(&ha, 99.9), 100); /* rank 999 of 1000 */
    cr_assert_eq(slb_hist_percentile(&ha, 99.95), 1000000);
    cr_assert_eq(slb_hist_percentile(&ha, 100), 1000000);
    slb_hist_init(&ha);
    for (uint64_t v = 1; v <= 10; v++)
        slb_hist_record(&ha, v);
    cr_assert_eq(slb_hist_percentile(&ha, 10), 1);
    cr_assert_eq(slb_hist_percentile(&ha, 50), 5);
    cr_assert_eq(slb_hist_percentile(&ha, 50.1), 6);
    cr_assert_eq(slb_hist_percentile(&ha, 90), 9);
    cr_assert_eq(slb_hist_percentile(&ha, 99), 10);
}

Test(hist, percentile_is_clamped_to_the_recorded_range)
{
    slb_hist_init(&ha);
    slb_hist_record(&ha, 5000); /* bucket [5000, 5007] */
    cr_assert_eq(slb_hist_percentile(&ha, 50), 5000);
    cr_assert_eq(slb_hist_percentile(&ha, 99.9), 5000);
}

Test(hist, record_n_equals_n_records)
{
    slb_hist_init(&ha);
    slb_hist_init(&hb);
    slb_hist_record_n(&ha, 12345, 7);
    slb_hist_record_n(&ha, 3, 0);
    for (int i = 0; i < 7; i++)
        slb_hist_record(&hb, 12345);
    cr_assert_arr_eq(&ha, &hb, sizeof(ha));
}

Test(hist, merge_equals_recording_everything_in_one)
{
    slb_hist_init(&ha);
    slb_hist_init(&hb);
    slb_hist_init(&hc);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int n = 0; n < 50000; n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t v = x % 5000000;
        slb_hist_record(n % 3 ? &ha : &hb, v);
        slb_hist_record(&hc, v);
    }
    struct slb_hist *empty = calloc(1, sizeof(*empty));
    slb_hist_init(empty);
    slb_hist_merge(&ha, empty);
    slb_hist_merge(empty, &hb); /* into an empty one: min and max come across */
    cr_assert_eq(empty->min, hb.min);
    cr_assert_eq(empty->max, hb.max);
    slb_hist_merge(&ha, &hb);
    cr_assert_arr_eq(&ha, &hc, sizeof(ha));
    cr_assert_eq(slb_hist_percentile(&ha, 99), slb_hist_percentile(&hc, 99));
    free(empty);
}
