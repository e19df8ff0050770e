/* The re-send store (bounds, first response frees, orphans in age order, moved keys drop
 * late answers, expiry) and the next choice in Maglev order (deterministic, never the
 * failed backend, spread over the others). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "balancer/maglev.h"
#include "balancer/resend.h"

static char msg[3000], out[70000];

static const char *fill(int seed, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        msg[i] = (char)('a' + (seed + (int)i) % 26);
    return msg;
}

Test(resend, bounded_by_entries_and_bytes)
{
    struct slb_resend r;
    cr_assert_eq(slb_resend_init(&r, 4, 4 * SLB_RESEND_CHUNK), 0);
    cr_assert_eq(slb_resend_keep(&r, 1, 7, fill(1, 600), 600, 0, false), 0); /* 2 chunks */
    cr_assert_eq(slb_resend_keep(&r, 2, 7, fill(2, 512), 512, 0, false), 0); /* 1 chunk */
    cr_assert_eq(slb_resend_keep(&r, 3, 7, fill(3, 513), 513, 0, false), -ENOBUFS);
    cr_assert_eq(slb_resend_keep(&r, 2, 7, fill(2, 10), 10, 0, false), -EEXIST);
    cr_assert_eq(slb_resend_keep(&r, 3, 7, fill(3, 100), 100, 0, false), 0);
    cr_assert_eq(slb_resend_chunks_used(&r), 4);
    cr_assert_eq(slb_resend_answered(&r, 1), SLB_RESEND_WAITING);
    cr_assert_eq(slb_resend_chunks_used(&r), 2);
    cr_assert_eq(slb_resend_keep(&r, 4, 7, fill(4, 10), 10, 0, false), 0);
    cr_assert_eq(slb_resend_keep(&r, 5, 7, fill(5, 10), 10, 0, false), 0);
    cr_assert_eq(slb_resend_count(&r), 4);
    cr_assert_eq(slb_resend_keep(&r, 6, 7, fill(6, 10), 10, 0, false), -ENOSPC);
    /* The first response frees; later ones find nothing. */
    cr_assert_eq(slb_resend_answered(&r, 4), SLB_RESEND_WAITING);
    cr_assert_eq(slb_resend_answered(&r, 4), SLB_RESEND_FREE);
    cr_assert_eq(slb_resend_answered(&r, 99), SLB_RESEND_FREE);
    cr_assert_eq(slb_resend_count(&r), 3);
    slb_resend_deinit(&r);

    struct slb_resend off;
    cr_assert_eq(slb_resend_init(&off, 0, 4096), 0);
    cr_assert_eq(slb_resend_keep(&off, 1, 1, msg, 10, 0, false), -ENOSPC);
    slb_resend_deinit(&off);
}

Test(resend, orphans_come_out_oldest_first_with_their_bytes)
{
    struct slb_resend r;
    cr_assert_eq(slb_resend_init(&r, 64, 64 * 1024), 0);
    char expect[5][2000];
    uint32_t lens[5] = {100, 1500, 512, 1, 1999};
    for (int i = 0; i < 5; i++) {
        memcpy(expect[i], fill(i, lens[i]), lens[i]);
        cr_assert_eq(slb_resend_keep(&r, 100 + (uint64_t)i, 1000 + (uint64_t)i, msg, lens[i],
                                     (uint64_t)i, i == 3),
                     0);
    }
    cr_assert_eq(slb_resend_answered(&r, 102), SLB_RESEND_WAITING); /* answered: never re-sent */
    cr_assert_eq(slb_resend_next_orphan(&r, SLB_RESEND_NONE), SLB_RESEND_NONE);
    cr_assert_eq(slb_resend_orphan_all(&r), 4);
    int order[] = {0, 1, 3, 4};
    for (int k = 0; k < 4; k++) {
        uint32_t i = slb_resend_next_orphan(&r, SLB_RESEND_NONE);
        cr_assert_neq(i, SLB_RESEND_NONE);
        int want = order[k];
        cr_assert_eq(r.e[i].key, 100 + (uint64_t)want);
        cr_assert_eq(r.e[i].client, 1000 + (uint64_t)want);
        cr_assert_eq(r.e[i].resent, want == 3);
        cr_assert_eq(slb_resend_copy_out(&r, i, out), lens[want]);
        cr_assert(!memcmp(out, expect[want], lens[want]));
        slb_resend_settle(&r, i, false);
    }
    cr_assert_eq(slb_resend_next_orphan(&r, SLB_RESEND_NONE), SLB_RESEND_NONE);
    cr_assert_eq(slb_resend_count(&r), 0);
    cr_assert_eq(slb_resend_chunks_used(&r), 0);
    slb_resend_deinit(&r);
}

Test(resend, moved_keys_drop_every_late_answer_until_they_expire)
{
    struct slb_resend r;
    cr_assert_eq(slb_resend_init(&r, 8, 8192), 0);
    cr_assert_eq(slb_resend_keep(&r, 1, 1, fill(0, 700), 700, 0, false), 0);
    cr_assert_eq(slb_resend_keep(&r, 2, 1, fill(0, 700), 700, 0, false), 0);
    cr_assert_eq(slb_resend_keep(&r, 3, 1, fill(0, 700), 700, 0, false), 0);
    /* Backend marked down, link still open. */
    cr_assert_eq(slb_resend_orphan_all(&r), 3);
    /* An answer that comes before the re-send: relayed, nothing re-sent for it. */
    cr_assert_eq(slb_resend_answered(&r, 2), SLB_RESEND_ORPHAN);
    /* The walk in age order with a cursor; one orphan waits again (its backend came
     * back), the other is re-sent. */
    uint32_t first = slb_resend_next_orphan(&r, SLB_RESEND_NONE);
    cr_assert_eq(r.e[first].key, 1);
    uint32_t second = slb_resend_next_orphan(&r, first);
    cr_assert_eq(r.e[second].key, 3);
    cr_assert_eq(slb_resend_next_orphan(&r, second), SLB_RESEND_NONE);
    slb_resend_unorphan(&r, first);
    slb_resend_settle(&r, second, true);
    cr_assert_eq(slb_resend_next_orphan(&r, SLB_RESEND_NONE), SLB_RESEND_NONE);
    cr_assert_eq(slb_resend_chunks_used(&r), 2); /* key 1's bytes; key 3's are freed */
    /* Every late answer of the moved transaction is dropped (100, 180, 200...). */
    cr_assert_eq(slb_resend_answered(&r, 3), SLB_RESEND_MOVED);
    cr_assert_eq(slb_resend_answered(&r, 3), SLB_RESEND_MOVED);
    cr_assert_eq(slb_resend_answered(&r, 1), SLB_RESEND_WAITING);
    /* The link goes: the moved key stays (an answer may come over a new connection). */
    cr_assert_eq(slb_resend_keep(&r, 4, 1, fill(0, 10), 10, 5, false), 0);
    cr_assert_eq(slb_resend_orphan_all(&r), 1);
    cr_assert_eq(r.e[slb_resend_next_orphan(&r, SLB_RESEND_NONE)].key, 4);
    cr_assert_eq(slb_resend_answered(&r, 3), SLB_RESEND_MOVED);
    /* Until it expires. */
    cr_assert_eq(slb_resend_expire(&r, 1000, 1000), 1);
    cr_assert_eq(slb_resend_answered(&r, 3), SLB_RESEND_FREE);
    slb_resend_deinit(&r);
}

Test(resend, expiry_takes_the_oldest_only)
{
    struct slb_resend r;
    cr_assert_eq(slb_resend_init(&r, 8, 8192), 0);
    for (uint64_t k = 1; k <= 5; k++)
        cr_assert_eq(slb_resend_keep(&r, k, 1, fill(0, 10), 10, k * 1000, false), 0);
    cr_assert_eq(slb_resend_expire(&r, 2999, 1000), 1); /* kept at 1000 */
    cr_assert_eq(slb_resend_expire(&r, 4000, 1000), 2); /* 2000 and 3000 */
    cr_assert_eq(slb_resend_count(&r), 2);
    cr_assert_eq(slb_resend_answered(&r, 4), SLB_RESEND_WAITING);
    cr_assert_eq(slb_resend_answered(&r, 5), SLB_RESEND_WAITING);
    slb_resend_deinit(&r);
}

/* Many keys in and out in a mixed order: the index (backward-shift deletion) never loses
 * one, and every chunk comes back. */
Test(resend, index_survives_churn)
{
    struct slb_resend r;
    cr_assert_eq(slb_resend_init(&r, 512, 512 * 1024), 0);
    uint64_t live[512];
    unsigned n = 0;
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 200000; round++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (n < 512 && (x & 3) != 0) {
            uint64_t key = x | 1; /* never 0, may collide in the index's home slots */
            int rc = slb_resend_keep(&r, key, 1, fill(0, (uint32_t)(x % 900) + 1),
                                     (uint32_t)(x % 900) + 1, 0, false);
            if (rc == 0)
                live[n++] = key;
        } else if (n) {
            unsigned j = (unsigned)(x >> 20) % n;
            cr_assert_eq(slb_resend_answered(&r, live[j]), SLB_RESEND_WAITING);
            live[j] = live[--n];
        }
    }
    cr_assert_eq(slb_resend_count(&r), n);
    for (unsigned j = 0; j < n; j++)
        cr_assert_eq(slb_resend_answered(&r, live[j]), SLB_RESEND_WAITING);
    cr_assert_eq(slb_resend_chunks_used(&r), 0);
    slb_resend_deinit(&r);
}

static uint16_t slots[SLB_MAGLEV_SIZE_DEFAULT], slots_down[SLB_MAGLEV_SIZE_DEFAULT];
static char scratch[1 << 16];

Test(resend, next_choice_is_deterministic_and_never_the_failed_backend)
{
    struct slb_maglev_backend b[3] = {
        {"127.0.0.1:5071", true, 1}, {"127.0.0.1:5072", true, 1}, {"127.0.0.1:5073", true, 1}};
    struct slb_maglev m = {.size = SLB_MAGLEV_SIZE_DEFAULT, .slot = slots};
    cr_assert_eq(slb_maglev_build(&m, b, 3, scratch), 0);
    unsigned moved_to[3] = {0}, on_victim = 0;
    for (uint64_t i = 0; i < 30000; i++) {
        uint64_t h = i * 0x9e3779b97f4a7c15ull;
        uint16_t first = slb_maglev_lookup(&m, h);
        uint16_t next = slb_maglev_lookup_except(&m, h, 1);
        cr_assert_neq(next, 1);
        cr_assert_eq(next, slb_maglev_lookup_except(&m, h, 1)); /* same answer every time */
        if (first != 1) {
            cr_assert_eq(next, first); /* keys of the others stay where they are */
        } else {
            on_victim++;
            moved_to[next]++;
        }
    }
    /* The victim's keys spread over both others. */
    cr_assert(moved_to[0] > on_victim / 4 && moved_to[2] > on_victim / 4, "%u %u of %u",
              moved_to[0], moved_to[2], on_victim);
    /* Once the victim is marked down (the table rebuilt without it) the plain lookup never
     * names it, and the except-lookup is the plain one. */
    b[1].up = false;
    struct slb_maglev d = {.size = SLB_MAGLEV_SIZE_DEFAULT, .slot = slots_down};
    cr_assert_eq(slb_maglev_build(&d, b, 3, scratch), 0);
    for (uint64_t i = 0; i < 1000; i++)
        cr_assert_eq(slb_maglev_lookup_except(&d, i * 7919, 1), slb_maglev_lookup(&d, i * 7919));
    /* With one backend up, the except-lookup of that backend has no answer. */
    b[0].up = b[2].up = false;
    b[1].up = true;
    cr_assert_eq(slb_maglev_build(&d, b, 3, scratch), 0);
    cr_assert_eq(slb_maglev_lookup_except(&d, 42, 1), SLB_MAGLEV_NONE);
    cr_assert_eq(slb_maglev_lookup_except(&d, 42, 0), 1);
}
