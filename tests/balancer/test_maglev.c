/* Maglev: even spread, minimal disruption when a backend leaves, order independence. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer/maglev.h"

static uint16_t slots_a[SLB_MAGLEV_SIZE_DEFAULT], slots_b[SLB_MAGLEV_SIZE_DEFAULT];
static char scratch[1 << 16];

static void build(struct slb_maglev *m, uint16_t *slots, const struct slb_maglev_backend *b,
                  size_t n)
{
    m->size = SLB_MAGLEV_SIZE_DEFAULT;
    m->slot = slots;
    cr_assert_eq(slb_maglev_build(m, b, n, scratch), 0);
}

static struct slb_slice cid(char *buf, int i)
{
    int n = snprintf(buf, 64, "%08x-call-%d@client.example.com", (unsigned)i * 2654435761u, i);
    return (struct slb_slice){buf, (size_t)n};
}

Test(maglev, spreads_evenly_and_is_order_independent)
{
    struct slb_maglev_backend b[3] = {{"127.0.0.1:5071", true}, {"127.0.0.1:5072", true},
                                      {"127.0.0.1:5073", true}};
    struct slb_maglev m, r;
    build(&m, slots_a, b, 3);
    unsigned owned[3] = {0};
    for (uint32_t i = 0; i < m.size; i++)
        owned[m.slot[i]]++;
    for (int i = 0; i < 3; i++)
        cr_assert(owned[i] > m.size / 3 - 200 && owned[i] < m.size / 3 + 200, "%u", owned[i]);
    /* The same set listed in another order maps every key to the same name. */
    struct slb_maglev_backend rev[3] = {b[2], b[0], b[1]};
    build(&r, slots_b, rev, 3);
    for (uint32_t i = 0; i < m.size; i++)
        cr_assert_str_eq(b[m.slot[i]].name, rev[r.slot[i]].name);
}

Test(maglev, removing_one_of_n_moves_about_1_over_n)
{
    enum { N = 10, KEYS = 100000 };
    struct slb_maglev_backend b[N];
    char names[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "10.0.0.%d:5061", i + 1);
        b[i] = (struct slb_maglev_backend){names[i], true};
    }
    struct slb_maglev all, less;
    build(&all, slots_a, b, N);
    b[3].up = false;
    build(&less, slots_b, b, N);
    int moved = 0, moved_from_other = 0;
    char buf[64];
    for (int i = 0; i < KEYS; i++) {
        uint64_t h = slb_route_hash(cid(buf, i));
        uint16_t x = slb_maglev_lookup(&all, h), y = slb_maglev_lookup(&less, h);
        cr_assert_neq(y, 3);
        if (x != y) {
            moved++;
            moved_from_other += x != 3;
        }
    }
    /* Keys of the removed backend must move (1/N); others barely. */
    cr_assert(moved > KEYS / N * 9 / 10 && moved < KEYS / N * 13 / 10, "moved %d", moved);
    cr_assert(moved_from_other < KEYS / 50, "moved from survivors %d", moved_from_other);
}

Test(maglev, none_up_and_bad_sizes)
{
    struct slb_maglev_backend b[1] = {{"a:1", false}};
    struct slb_maglev m;
    build(&m, slots_a, b, 1);
    cr_assert_eq(slb_maglev_lookup(&m, 12345), SLB_MAGLEV_NONE);
    m.size = 65536;
    cr_assert_eq(slb_maglev_build(&m, b, 1, scratch), -22);
    cr_assert(slb_is_prime(65537));
    cr_assert_not(slb_is_prime(65535));
}
