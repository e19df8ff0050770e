/* The unframed-input buffers: scratch and pending buffers of one size, keep and append
 * bounded by it, buffers taken only while bytes wait. */
#include "core/inbuf.h"
#include "core/pool.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

static struct slb_inbuf_pool pool;

static void setup(void)
{
    cr_assert_eq(slb_inbuf_pool_init(&pool, 2, 100), 0);
}

static void teardown(void)
{
    slb_inbuf_pool_deinit(&pool);
}

TestSuite(inbuf, .init = setup, .fini = teardown);

Test(inbuf, a_read_goes_to_the_scratch_and_only_its_rest_takes_a_buffer)
{
    struct slb_inbuf in = {0};
    size_t cap, len;
    char *dst = slb_inbuf_dst(&pool, &in, &cap);
    cr_assert_eq(dst, pool.scratch);
    cr_assert_eq(cap, 100);
    memcpy(dst, "0123456789", 10);
    const char *buf = slb_inbuf_filled(&pool, &in, 10, &len);
    cr_assert_eq(buf, pool.scratch);
    cr_assert_eq(len, 10);
    cr_assert_eq(slb_pool_free_count(&pool.free), 2, "nothing taken while all is consumed at once");
    cr_assert_eq(slb_inbuf_keep(&pool, &in, buf, 4, len), 0);
    cr_assert_eq(in.len, 6);
    cr_assert_eq(memcmp(in.pending, "456789", 6), 0);
    cr_assert_eq(slb_pool_free_count(&pool.free), 1);
    /* The next read lands behind the pending bytes, with the room that is left. */
    dst = slb_inbuf_dst(&pool, &in, &cap);
    cr_assert_eq(dst, in.pending + 6);
    cr_assert_eq(cap, 94);
    memcpy(dst, "ab", 2);
    buf = slb_inbuf_filled(&pool, &in, 2, &len);
    cr_assert_eq(buf, in.pending);
    cr_assert_eq(len, 8);
    cr_assert_eq(slb_inbuf_keep(&pool, &in, buf, 8, len), 0);
    cr_assert_null(in.pending, "the buffer goes back once everything was consumed");
    cr_assert_eq(slb_pool_free_count(&pool.free), 2);
}

Test(inbuf, a_rest_larger_than_a_buffer_is_refused_not_copied)
{
    struct slb_inbuf a = {0}, b = {0};
    char big[200];
    memset(big, 'x', sizeof(big));
    cr_assert_eq(slb_inbuf_append(&pool, &b, "bb", 2), 0);
    cr_assert_eq(slb_inbuf_keep(&pool, &a, big, 50, 200), -EMSGSIZE);
    cr_assert_null(a.pending);
    cr_assert_eq(memcmp(b.pending, "bb", 2), 0, "the neighbour is untouched");
    cr_assert_eq(slb_inbuf_append(&pool, &a, big, 60), 0);
    cr_assert_eq(slb_inbuf_append(&pool, &a, big, 41), -EMSGSIZE, "60 + 41 > 100");
    cr_assert_eq(a.len, 60);
    cr_assert_eq(slb_inbuf_append(&pool, &a, big, 40), 0);
    cr_assert_eq(slb_inbuf_room(&pool, &a), 0);
    slb_inbuf_release(&pool, &a);
    slb_inbuf_release(&pool, &b);
    cr_assert_eq(slb_pool_free_count(&pool.free), 2);
}

Test(inbuf, no_free_buffer_is_reported)
{
    struct slb_inbuf a = {0}, b = {0}, c = {0};
    cr_assert_eq(slb_inbuf_append(&pool, &a, "a", 1), 0);
    cr_assert_eq(slb_inbuf_append(&pool, &b, "b", 1), 0);
    cr_assert_eq(slb_inbuf_append(&pool, &c, "c", 1), -ENOBUFS);
    cr_assert_eq(slb_inbuf_keep(&pool, &c, "xyz", 1, 3), -ENOBUFS);
    cr_assert_null(c.pending);
    slb_inbuf_release(&pool, &a);
    slb_inbuf_release(&pool, &b);
}
