/* The index pool: lowest index first when fresh, LIFO after, -ENOBUFS when empty, counts,
 * the empty pool, a large one, and the programmer errors that abort. */
#include "core/pool.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>

Test(pool, a_fresh_pool_hands_out_the_lowest_index_first)
{
    struct slb_pool p;
    cr_assert_eq(slb_pool_init(&p, 5), 0);
    for (int64_t i = 0; i < 5; i++)
        cr_assert_eq(slb_pool_get(&p), i);
    slb_pool_deinit(&p);
}

Test(pool, an_empty_pool_says_enobufs_and_stays_usable)
{
    struct slb_pool p;
    cr_assert_eq(slb_pool_init(&p, 3), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_geq(slb_pool_get(&p), 0);
    cr_assert_eq(slb_pool_get(&p), -ENOBUFS);
    cr_assert_eq(slb_pool_get(&p), -ENOBUFS, "asking again changes nothing");
    slb_pool_put(&p, 1);
    cr_assert_eq(slb_pool_get(&p), 1);
    cr_assert_eq(slb_pool_get(&p), -ENOBUFS);
    slb_pool_deinit(&p);
}

Test(pool, the_index_put_back_last_comes_out_first)
{
    struct slb_pool p;
    cr_assert_eq(slb_pool_init(&p, 8), 0);
    for (int i = 0; i < 6; i++)
        (void)slb_pool_get(&p); /* 0..5 out, 6 and 7 never taken */
    slb_pool_put(&p, 2);
    slb_pool_put(&p, 5);
    slb_pool_put(&p, 0);
    cr_assert_eq(slb_pool_get(&p), 0);
    cr_assert_eq(slb_pool_get(&p), 5);
    cr_assert_eq(slb_pool_get(&p), 2);
    cr_assert_eq(slb_pool_get(&p), 6, "then those never taken, lowest first");
    cr_assert_eq(slb_pool_get(&p), 7);
    cr_assert_eq(slb_pool_get(&p), -ENOBUFS);
    slb_pool_deinit(&p);
}

Test(pool, counts_follow_gets_and_puts)
{
    struct slb_pool p;
    cr_assert_eq(slb_pool_init(&p, 4), 0);
    cr_assert_eq(slb_pool_capacity(&p), 4);
    cr_assert_eq(slb_pool_free_count(&p), 4);
    int64_t a = slb_pool_get(&p), b = slb_pool_get(&p);
    cr_assert_eq(slb_pool_free_count(&p), 2);
    slb_pool_put(&p, (uint32_t)a);
    cr_assert_eq(slb_pool_free_count(&p), 3);
    slb_pool_put(&p, (uint32_t)b);
    cr_assert_eq(slb_pool_free_count(&p), 4);
    cr_assert_eq(slb_pool_capacity(&p), 4, "capacity never changes");
    slb_pool_deinit(&p);
    cr_assert_eq(slb_pool_capacity(&p), 0);
    cr_assert_eq(slb_pool_free_count(&p), 0);
}

Test(pool, a_pool_of_zero_has_nothing_to_give)
{
    struct slb_pool p;
    cr_assert_eq(slb_pool_init(&p, 0), 0);
    cr_assert_eq(slb_pool_capacity(&p), 0);
    cr_assert_eq(slb_pool_free_count(&p), 0);
    cr_assert_eq(slb_pool_get(&p), -ENOBUFS);
    slb_pool_deinit(&p);
}

Test(pool, a_zeroed_pool_can_be_deinitialised)
{
    struct slb_pool p = {0};
    slb_pool_deinit(&p);
    cr_assert_eq(slb_pool_get(&p), -ENOBUFS);
}

Test(pool, a_large_pool_hands_out_every_index_once_in_order)
{
    const uint32_t n = 1u << 22;
    struct slb_pool p;
    cr_assert_eq(slb_pool_init(&p, n), 0);
    for (uint32_t i = 0; i < n; i++) {
        int64_t got = slb_pool_get(&p);
        if (got != (int64_t)i)
            cr_assert_fail("got %lld, want %u", (long long)got, i);
    }
    cr_assert_eq(slb_pool_get(&p), -ENOBUFS);
    slb_pool_put(&p, n - 1);
    cr_assert_eq(slb_pool_get(&p), (int64_t)(n - 1), "the highest index is a valid one");
    slb_pool_deinit(&p);
}

Test(pool, putting_an_index_out_of_range_aborts, .signal = SIGABRT)
{
    struct slb_pool p;
    cr_assert_eq(slb_pool_init(&p, 4), 0);
    (void)slb_pool_get(&p);
    slb_pool_put(&p, 4);
}

Test(pool, putting_into_a_full_pool_aborts, .signal = SIGABRT)
{
    struct slb_pool p;
    cr_assert_eq(slb_pool_init(&p, 4), 0);
    int64_t i = slb_pool_get(&p);
    slb_pool_put(&p, (uint32_t)i);
    slb_pool_put(&p, (uint32_t)i); /* the double put */
}
