/* The pending-INVITE map: put and find, expiry after Timer C, the shorter life once
 * answered, same-key overwrite, eviction of the entry expiring first from a full probe
 * window, and the transaction key (never 0, each field counts). */
#include "balancer/pending_invite.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct slb_siphash_key key = {0x0123456789abcdefull, 0xfedcba9876543210ull};
static struct slb_pending_invites *m;

static void setup(void)
{
    m = malloc(sizeof(*m));
    cr_assert_not_null(m);
    memset(m, 0xa5, sizeof(*m)); /* init must not rely on zeroed memory */
    slb_pending_invites_init(m, &key);
}

static void teardown(void)
{
    free(m);
}

TestSuite(pending_invite, .init = setup, .fini = teardown);

static struct slb_slice sl(const char *s)
{
    return (struct slb_slice){s, strlen(s)};
}

Test(pending_invite, an_invite_put_is_found_and_an_unknown_one_is_not)
{
    uint64_t k = slb_pending_invite_key(m, sl("z9hG4bK-a"), sl("call-1@host"));
    cr_assert_eq(slb_pending_invite_find(m, k, 1000), -ENOENT, "a fresh map knows nothing");
    slb_pending_invite_put(m, k, 3, 1000);
    cr_assert_eq(slb_pending_invite_find(m, k, 1000), 3);
    uint64_t other = slb_pending_invite_key(m, sl("z9hG4bK-b"), sl("call-1@host"));
    cr_assert_eq(slb_pending_invite_find(m, other, 1000), -ENOENT);
}

Test(pending_invite, an_entry_expires_after_timer_c)
{
    uint64_t k = 42;
    slb_pending_invite_put(m, k, 7, 1000);
    cr_assert_eq(slb_pending_invite_find(m, k, 1000 + SLB_PENDING_INVITE_RING_MS - 1), 7);
    cr_assert_eq(slb_pending_invite_find(m, k, 1000 + SLB_PENDING_INVITE_RING_MS), -ENOENT);
}

Test(pending_invite, a_final_response_shortens_the_entry_to_timer_b)
{
    uint64_t k = 42;
    slb_pending_invite_put(m, k, 7, 1000);
    slb_pending_invite_answered(m, k, 5000);
    cr_assert_eq(slb_pending_invite_find(m, k, 5000 + SLB_PENDING_INVITE_AFTER_MS - 1), 7,
                 "kept for the ACK and retransmissions");
    cr_assert_eq(slb_pending_invite_find(m, k, 5000 + SLB_PENDING_INVITE_AFTER_MS), -ENOENT);
}

Test(pending_invite, answering_an_unknown_or_expired_invite_changes_nothing)
{
    slb_pending_invite_answered(m, 42, 1000);
    cr_assert_eq(slb_pending_invite_find(m, 42, 1000), -ENOENT);
    slb_pending_invite_put(m, 42, 1, 0);
    slb_pending_invite_answered(m, 42, SLB_PENDING_INVITE_RING_MS);
    cr_assert_eq(slb_pending_invite_find(m, 42, SLB_PENDING_INVITE_RING_MS), -ENOENT,
                 "an expired entry is not revived");
}

Test(pending_invite, putting_the_same_key_again_replaces_its_entry)
{
    uint64_t k = 42;
    slb_pending_invite_put(m, k, 1, 1000);
    slb_pending_invite_put(m, k, 2, 2000);
    cr_assert_eq(slb_pending_invite_find(m, k, 2000), 2);
    /* In place: the rest of its window is still free for others. */
    for (uint64_t i = 1; i < SLB_PENDING_INVITE_PROBES; i++)
        slb_pending_invite_put(m, k + SLB_PENDING_INVITE_SLOTS * i, (uint16_t)(10 + i), 2000);
    for (uint64_t i = 1; i < SLB_PENDING_INVITE_PROBES; i++)
        cr_assert_eq(slb_pending_invite_find(m, k + SLB_PENDING_INVITE_SLOTS * i, 2000),
                     (int)(10 + i));
    cr_assert_eq(slb_pending_invite_find(m, k, 2000), 2);
    cr_assert_eq(slb_pending_invite_find(m, k, 2000 + SLB_PENDING_INVITE_RING_MS - 1), 2,
                 "the life counts from the last put");
}

Test(pending_invite, a_stale_entry_is_overwritten_before_any_live_one)
{
    /* Keys that differ by a multiple of the table size share a home slot. */
    uint64_t a = 5, b = 5 + SLB_PENDING_INVITE_SLOTS;
    slb_pending_invite_put(m, a, 1, 0);
    slb_pending_invite_put(m, b, 2, SLB_PENDING_INVITE_RING_MS); /* a is stale by then */
    cr_assert_eq(slb_pending_invite_find(m, b, SLB_PENDING_INVITE_RING_MS), 2);
    cr_assert_eq(slb_pending_invite_find(m, a, 0), -ENOENT, "b took a's slot");
}

Test(pending_invite, a_full_window_evicts_the_entry_that_expires_first)
{
    /* Keys 100..107 each land on their own home slot and fill the window of key 100; the
     * one put earliest (103) expires first. */
    const uint64_t base = 100;
    uint64_t now = 10000;
    slb_pending_invite_put(m, base + 3, 3, now);
    for (uint64_t i = 0; i < SLB_PENDING_INVITE_PROBES; i++) {
        if (i != 3)
            slb_pending_invite_put(m, base + i, (uint16_t)i, now + 1 + i);
    }
    uint64_t intruder = base + SLB_PENDING_INVITE_SLOTS; /* home slot 100, a new key */
    uint64_t t = now + 100;
    slb_pending_invite_put(m, intruder, 99, t);
    cr_assert_eq(slb_pending_invite_find(m, intruder, t), 99);
    cr_assert_eq(slb_pending_invite_find(m, base + 3, t), -ENOENT, "the earliest to expire went");
    for (uint64_t i = 0; i < SLB_PENDING_INVITE_PROBES; i++) {
        if (i != 3)
            cr_assert_eq(slb_pending_invite_find(m, base + i, t), (int)i, "entry %llu kept",
                         (unsigned long long)(base + i));
    }
    /* An answered entry expires sooner than one still ringing, so it goes next. */
    slb_pending_invite_answered(m, base + 6, t);
    slb_pending_invite_put(m, intruder + SLB_PENDING_INVITE_SLOTS, 98, t);
    cr_assert_eq(slb_pending_invite_find(m, base + 6, t), -ENOENT);
    cr_assert_eq(slb_pending_invite_find(m, intruder + SLB_PENDING_INVITE_SLOTS, t), 98);
    cr_assert_eq(slb_pending_invite_find(m, intruder, t), 99);
}

Test(pending_invite, the_probe_window_wraps_around_the_table_end)
{
    uint64_t last = SLB_PENDING_INVITE_SLOTS - 1;
    slb_pending_invite_put(m, last, 1, 0);
    slb_pending_invite_put(m, last + SLB_PENDING_INVITE_SLOTS, 2, 0); /* goes to slot 0 */
    cr_assert_eq(slb_pending_invite_find(m, last, 0), 1);
    cr_assert_eq(slb_pending_invite_find(m, last + SLB_PENDING_INVITE_SLOTS, 0), 2);
    cr_assert_eq(slb_pending_invite_find(m, 0 + SLB_PENDING_INVITE_SLOTS * 3, 0), -ENOENT);
}

Test(pending_invite, keys_are_never_zero_and_every_field_counts)
{
    struct slb_slice empty = {"", 0};
    uint64_t k0 = slb_pending_invite_key(m, empty, empty);
    cr_assert_neq(k0, 0);
    cr_assert_eq(slb_pending_invite_find(m, k0, 0), -ENOENT, "an empty key is no entry");
    uint64_t ab = slb_pending_invite_key(m, sl("z9hG4bKa"), sl("b"));
    cr_assert_eq(ab, slb_pending_invite_key(m, sl("z9hG4bKa"), sl("b")), "stable");
    cr_assert_neq(ab, slb_pending_invite_key(m, sl("b"), sl("z9hG4bKa")), "fields not swappable");
    cr_assert_neq(ab, slb_pending_invite_key(m, sl("z9hG4bKa"), sl("c")), "Call-ID counts");
    cr_assert_neq(ab, slb_pending_invite_key(m, sl("z9hG4bKx"), sl("b")), "branch counts");
    cr_assert_neq(slb_pending_invite_key(m, sl("x"), sl("x")), 0, "equal fields do not cancel");
    /* The secret key counts too: another process files the same transaction elsewhere. */
    static struct slb_pending_invites other;
    struct slb_siphash_key k2 = {1, 2};
    slb_pending_invites_init(&other, &k2);
    cr_assert_neq(ab, slb_pending_invite_key(&other, sl("z9hG4bKa"), sl("b")));
    char branch[32], call[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(branch, sizeof(branch), "z9hG4bK%d", i);
        snprintf(call, sizeof(call), "%d@example.com", i * 7);
        cr_assert_neq(slb_pending_invite_key(m, sl(branch), sl(call)), 0);
    }
}
