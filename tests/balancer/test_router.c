/* The routing view: a table a worker still holds outlives newer publishes and is freed once
 * every worker has moved past it; a full retired list refuses to publish and leaks nothing;
 * tables carry rising generations and route new dialogs to backends that are up only.
 * Run under ASan, a read of a freed table fails the test. */
#include "balancer/router.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct slb_config cfg;
static struct slb_router router;
static struct slb_backends *backends;
static char cert_path[64], key_path[64];

/* slb_config_load only checks that the certificate files are readable. */
static void make_file(char *path, const char *name)
{
    snprintf(path, 64, "/tmp/slb-test-router-%s-XXXXXX", name);
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
}

/* Two backends (the second with the given parameters), a small Maglev table, a router
 * for two workers. The config keeps pointers into argv: it is static. */
static void load(const char *second)
{
    static char b2[64];
    snprintf(b2, sizeof(b2), "sips:127.0.0.1:5062%s", second);
    static char *argv[] = {"sipslb",
                           "--backend",
                           "sips:127.0.0.1:5061",
                           "--backend",
                           b2,
                           "--cert",
                           cert_path,
                           "--key",
                           key_path,
                           "--backend-verify",
                           "none",
                           "--maglev-size",
                           "251"};
    cr_assert_eq(slb_config_load(&cfg, (int)(sizeof(argv) / sizeof(argv[0])), argv), 0);
    backends = slb_backends_new(&cfg);
    cr_assert_not_null(backends);
    cr_assert_eq(slb_router_init(&router, &cfg, backends, 2), 0);
}

static void setup(void)
{
    make_file(cert_path, "cert");
    make_file(key_path, "key");
}

static void teardown(void)
{
    slb_router_deinit(&router);
    slb_backends_unref(backends);
    backends = NULL;
    unlink(cert_path);
    unlink(key_path);
}

TestSuite(router, .init = setup, .fini = teardown);

static int publish(uint8_t s0, uint8_t s1)
{
    uint8_t state[SLB_MAX_BACKENDS] = {s0, s1};
    return slb_router_publish(&router, backends, state);
}

static bool retired(const struct slb_route_table *t)
{
    for (unsigned i = 0; i < router.n_retired; i++)
        if (router.retired[i] == t)
            return true;
    return false;
}

/* Slots of t owned by backend b (reads every slot: a freed table trips ASan). */
static unsigned owned(const struct slb_route_table *t, unsigned b)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < t->maglev.size; i++)
        n += t->maglev.slot[i] == b;
    return n;
}

Test(router, a_table_a_worker_holds_outlives_two_newer_ones)
{
    load("");
    const struct slb_route_table *old = slb_router_acquire(&router, 1);
    cr_assert_eq(slb_router_acquire(&router, 0), old);
    cr_assert_eq(old->gen, 1);
    cr_assert_eq(publish(SLB_BACKEND_DOWN, SLB_BACKEND_UP), 0);
    const struct slb_route_table *mid = slb_router_acquire(&router, 0);
    cr_assert_neq(mid, old);
    cr_assert_eq(publish(SLB_BACKEND_UP, SLB_BACKEND_DOWN), 0);
    const struct slb_route_table *cur = slb_router_acquire(&router, 0);
    cr_assert_neq(cur, mid);
    /* Worker 1 has not acquired since: both older tables are kept, not freed. */
    slb_router_reclaim(&router);
    cr_assert_eq(router.n_retired, 2);
    cr_assert(retired(old));
    cr_assert(retired(mid));
    cr_assert_eq(old->gen, 1);
    cr_assert_eq(old->state[0], SLB_BACKEND_UP);
    cr_assert_eq(old->state[1], SLB_BACKEND_UP);
    cr_assert_eq(owned(old, 0) + owned(old, 1), old->maglev.size);
    cr_assert_gt(owned(old, 0), 0);
    cr_assert_gt(owned(old, 1), 0);
    /* Once it acquires again, it holds the newest and the old ones go. */
    cr_assert_eq(slb_router_acquire(&router, 1), cur);
    slb_router_reclaim(&router);
    cr_assert_eq(router.n_retired, 0);
    cr_assert_eq(cur->gen, 3);
    cr_assert_eq(owned(cur, 0), cur->maglev.size);
}

Test(router, a_worker_one_table_behind_keeps_only_that_one)
{
    load("");
    slb_router_acquire(&router, 0);
    slb_router_acquire(&router, 1);
    cr_assert_eq(publish(SLB_BACKEND_UP, SLB_BACKEND_UP), 0);
    const struct slb_route_table *mid = slb_router_acquire(&router, 1);
    slb_router_acquire(&router, 0);
    cr_assert_eq(publish(SLB_BACKEND_UP, SLB_BACKEND_UP), 0);
    slb_router_acquire(&router, 0);
    /* Generation 1 no worker holds: freed by the publish. Worker 1 still holds 2. */
    cr_assert_eq(router.n_retired, 1);
    cr_assert_eq(router.retired[0], mid);
    cr_assert_eq(mid->gen, 2);
    slb_router_acquire(&router, 1);
    slb_router_reclaim(&router);
    cr_assert_eq(router.n_retired, 0);
}

Test(router, a_full_retired_list_refuses_to_publish_and_keeps_the_current_table)
{
    load("");
    /* Worker 1 never moves on; worker 0 follows every table. */
    slb_router_acquire(&router, 1);
    const unsigned cap = sizeof(router.retired) / sizeof(router.retired[0]);
    for (unsigned i = 0; i < cap; i++) {
        cr_assert_eq(publish(SLB_BACKEND_UP, SLB_BACKEND_UP), 0);
        slb_router_acquire(&router, 0);
    }
    cr_assert_eq(router.n_retired, cap);
    struct slb_route_table *cur = atomic_load(&router.cur);
    uint64_t next_gen = router.next_gen;
    cr_assert_eq(publish(SLB_BACKEND_DOWN, SLB_BACKEND_UP), -EBUSY);
    cr_assert_eq(atomic_load(&router.cur), cur, "the old table stays current");
    cr_assert_eq(router.next_gen, next_gen, "no table was built (nothing to leak)");
    cr_assert_eq(router.n_retired, cap);
    cr_assert_eq(slb_router_acquire(&router, 0)->state[0], SLB_BACKEND_UP);
    /* The stuck worker moves on: all but the table it now holds can go. */
    cr_assert_eq(slb_router_acquire(&router, 1), cur);
    cr_assert_eq(publish(SLB_BACKEND_DOWN, SLB_BACKEND_UP), 0);
    cr_assert_eq(router.n_retired, 1);
    cr_assert_eq(router.retired[0], cur);
    cr_assert_eq(slb_router_acquire(&router, 0)->state[0], SLB_BACKEND_DOWN);
    /* The fixture's deinit frees the rest; LeakSanitizer reports anything lost. */
}

Test(router, generations_rise_with_every_publish)
{
    load("");
    uint64_t last = slb_router_acquire(&router, 0)->gen;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(publish(SLB_BACKEND_UP, SLB_BACKEND_UP), 0);
        uint64_t g = slb_router_acquire(&router, 0)->gen;
        cr_assert_eq(g, last + 1);
        last = g;
    }
    cr_assert_eq(atomic_load(&router.worker[0].seen), last, "the worker announced it");
}

Test(router, only_backends_that_are_up_take_new_dialogs)
{
    load("");
    const uint8_t others[] = {SLB_BACKEND_DOWN, SLB_BACKEND_DRAINING, SLB_BACKEND_REMOVED};
    for (unsigned i = 0; i < sizeof(others); i++) {
        cr_assert_eq(publish(others[i], SLB_BACKEND_UP), 0);
        const struct slb_route_table *t = slb_router_acquire(&router, 0);
        slb_router_acquire(&router, 1);
        cr_assert_eq(t->n_backends, 2);
        cr_assert_eq(t->state[0], others[i], "the states are published as given");
        cr_assert_eq(t->state[1], SLB_BACKEND_UP);
        cr_assert_eq(t->maglev.n_up, 1);
        cr_assert_eq(owned(t, 0), 0, "state %u", others[i]);
        cr_assert_eq(owned(t, 1), t->maglev.size);
    }
    cr_assert_eq(publish(SLB_BACKEND_DOWN, SLB_BACKEND_DRAINING), 0);
    const struct slb_route_table *t = slb_router_acquire(&router, 0);
    cr_assert_eq(t->maglev.n_up, 0);
    cr_assert_eq(slb_maglev_lookup(&t->maglev, 12345), SLB_MAGLEV_NONE);
}

Test(router, the_first_table_has_every_backend_up_or_draining_by_its_flag)
{
    load(";drain");
    const struct slb_route_table *t = slb_router_acquire(&router, 0);
    cr_assert_eq(t->gen, 1);
    cr_assert_eq(t->n_backends, 2);
    cr_assert_eq(t->state[0], SLB_BACKEND_UP);
    cr_assert_eq(t->state[1], SLB_BACKEND_DRAINING);
    cr_assert_eq(owned(t, 0), t->maglev.size);
}

Test(router, weights_set_the_shares_of_slots)
{
    load(";weight=3");
    const struct slb_route_table *t = slb_router_acquire(&router, 0);
    unsigned a = owned(t, 0), b = owned(t, 1);
    cr_assert_eq(a + b, t->maglev.size);
    cr_assert(b > 2 * a && b < 4 * a, "%u vs %u", a, b);
}

/* A table holds a reference to the backends it was built from: a reload's new backends
 * object replaces the old one in new tables, and the old one lives while a table that
 * names it may still be read. */
Test(router, table_keeps_its_backends_alive)
{
    load("");
    struct slb_backends *older = slb_backends_new(&cfg);
    cr_assert_not_null(older);
    uint8_t state[SLB_MAX_BACKENDS] = {SLB_BACKEND_UP, SLB_BACKEND_UP};
    cr_assert_eq(slb_router_publish(&router, older, state), 0);
    const struct slb_route_table *held = slb_router_acquire(&router, 1);
    cr_assert_eq(held->backends, older);
    slb_backends_unref(older); /* the table's reference is the last */
    cr_assert_eq(atomic_load(&older->refs), 1u);
    cr_assert_eq(slb_router_publish(&router, backends, state), 0);
    (void)slb_router_acquire(&router, 0);
    slb_router_reclaim(&router);
    /* Worker 1 still holds the table: its backends are still readable. */
    cr_assert_str_eq(held->backends->spec[1].name, "127.0.0.1:5062");
    cr_assert_eq(atomic_load(&older->refs), 1u);
    (void)slb_router_acquire(&router, 1);
    slb_router_reclaim(&router);
    cr_assert_eq(router.n_retired, 0u);
    cr_assert_eq(slb_router_peek(&router)->backends, backends);
}
