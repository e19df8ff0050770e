/* Maglev: even spread, minimal disruption when a backend leaves, order independence. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
    struct slb_maglev_backend b[3] = {{"127.0.0.1:5071", true, 1}, {"127.0.0.1:5072", true, 1},
                                      {"127.0.0.1:5073", true, 1}};
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
        b[i] = (struct slb_maglev_backend){names[i], true, 1};
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
    struct slb_maglev_backend b[1] = {{"a:1", false, 1}};
    struct slb_maglev m;
    build(&m, slots_a, b, 1);
    cr_assert_eq(slb_maglev_lookup(&m, 12345), SLB_MAGLEV_NONE);
    m.size = 65536;
    cr_assert_eq(slb_maglev_build(&m, b, 1, scratch), -22);
    cr_assert(slb_is_prime(65537));
    cr_assert_not(slb_is_prime(65535));
}

Test(maglev, weights_are_honoured_within_one_percent)
{
    struct slb_maglev_backend b[4] = {{"a.example.com:5061", true, 1},
                                      {"b.example.com:5061", true, 2},
                                      {"c.example.com:5061", true, 3},
                                      {"d.example.com:5061", true, 4}};
    struct slb_maglev m;
    build(&m, slots_a, b, 4);
    unsigned owned[4] = {0};
    for (uint32_t i = 0; i < m.size; i++)
        owned[m.slot[i]]++;
    for (int i = 0; i < 4; i++) {
        double share = (double)owned[i] / m.size, want = (i + 1) / 10.0;
        cr_assert(share > want - 0.01 && share < want + 0.01, "backend %d: %.4f, want %.2f", i,
                  share, want);
    }
}

Test(maglev, removed_keys_spread_over_survivors_and_return_exactly)
{
    enum { N = 10, KEYS = 200000 };
    struct slb_maglev_backend b[N];
    char names[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "sip%d.example.net:5061", i);
        b[i] = (struct slb_maglev_backend){names[i], true, 1};
    }
    struct slb_maglev all, less;
    build(&all, slots_a, b, N);
    b[7].up = false;
    build(&less, slots_b, b, N);
    unsigned got[N] = {0}, moved = 0;
    char buf[64];
    for (int i = 0; i < KEYS; i++) {
        uint64_t h = slb_route_hash(cid(buf, i));
        if (slb_maglev_lookup(&all, h) == 7) {
            got[slb_maglev_lookup(&less, h)]++;
            moved++;
        }
    }
    /* Every survivor takes some of the orphans, none more than twice its fair share. */
    for (int i = 0; i < N; i++) {
        if (i == 7)
            continue;
        cr_assert(got[i] > 0 && got[i] < 2 * moved / (N - 1), "survivor %d got %u of %u", i,
                  got[i], moved);
    }
    /* Adding it back restores the original table exactly. */
    b[7].up = true;
    build(&less, slots_b, b, N);
    cr_assert_eq(memcmp(all.slot, less.slot, all.size * sizeof(uint16_t)), 0);
}

static uint64_t table_digest(const struct slb_maglev *m)
{
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < m->size; i++)
        h = (h ^ m->slot[i]) * 1099511628211ull;
    return h;
}

Test(maglev, two_processes_build_the_same_table)
{
    struct slb_maglev_backend b[3] = {{"10.1.0.1:5061", true, 1}, {"10.1.0.2:5061", true, 2},
                                      {"10.1.0.3:5061", true, 1}};
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct slb_maglev m;
        m.size = SLB_MAGLEV_SIZE_DEFAULT;
        m.slot = slots_b;
        slb_maglev_build(&m, b, 3, scratch);
        uint64_t d = table_digest(&m);
        _exit(write(fd[1], &d, sizeof(d)) == sizeof(d) ? 0 : 1);
    }
    struct slb_maglev m;
    build(&m, slots_a, b, 3);
    uint64_t child = 0;
    cr_assert_eq(read(fd[0], &child, sizeof(child)), (ssize_t)sizeof(child));
    waitpid(pid, NULL, 0);
    cr_assert_eq(child, table_digest(&m));
}
