/* Timer wheel unit tests: no ring, no sockets, a fake clock. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "io/timer.h"

struct rec {
    struct slb_timer timer;
    uint64_t expires;
    uint64_t fired_at;
    int fired;
    int id;
};

static uint64_t g_now;
static uint64_t g_last_fired_expiry;
static int g_order_errors;
static int g_fired_total;

static void on_fire(struct slb_timer *t)
{
    struct rec *r = slb_timer_entry(t, struct rec, timer);
    r->fired++;
    r->fired_at = g_now;
    if (r->expires < g_last_fired_expiry)
        g_order_errors++;
    g_last_fired_expiry = r->expires;
    g_fired_total++;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void reset_globals(uint64_t now)
{
    g_now = now;
    g_last_fired_expiry = 0;
    g_order_errors = 0;
    g_fired_total = 0;
}

Test(timer, fires_every_timer_on_time_in_deadline_order_across_levels)
{
    enum { N = 3000 };
    static struct slb_timer_wheel w;
    static struct rec recs[N];
    reset_globals(1000);
    slb_timer_wheel_init(&w, g_now);
    for (int i = 0; i < N; i++) {
        /* Mix of level 0, 1 and 2 delays (up to ~3 minutes). */
        uint64_t delay = rng() % (i % 3 == 0 ? 250 : i % 3 == 1 ? 60000 : 200000);
        recs[i].id = i;
        recs[i].expires = g_now + delay;
        slb_timer_init(&recs[i].timer, on_fire);
        slb_timer_arm(&w, &recs[i].timer, delay);
    }
    uint64_t prev_now = g_now - 1;
    for (int step = 0; step < 100000 && g_fired_total < N; step++) {
        uint64_t next = slb_timer_wheel_next_ms(&w);
        cr_assert_neq(next, SLB_TIMER_NEVER);
        cr_assert_geq(next, g_now, "next deadline in the past");
        g_now += 1 + rng() % 3000;
        slb_timer_wheel_run(&w, g_now);
        /* Anything due at the previous run must have fired then, not now. */
        for (int i = 0; i < N; i++)
            if (recs[i].fired && recs[i].fired_at == g_now)
                cr_assert_gt(recs[i].expires, prev_now, "timer %d fired late", i);
        prev_now = g_now;
    }
    cr_assert_eq(g_fired_total, N);
    cr_assert_eq(g_order_errors, 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(recs[i].fired, 1, "timer %d fired %d times", i, recs[i].fired);
        cr_assert_geq(recs[i].fired_at, recs[i].expires, "timer %d fired early", i);
    }
    cr_assert_eq(slb_timer_wheel_next_ms(&w), SLB_TIMER_NEVER);
}

Test(timer, fires_exactly_on_its_millisecond_when_run_every_tick)
{
    static struct slb_timer_wheel w;
    static struct rec recs[600];
    reset_globals(5000);
    slb_timer_wheel_init(&w, g_now);
    for (int i = 0; i < 600; i++) {
        uint64_t delay = (uint64_t)(i * 37) % 70000;
        recs[i].expires = g_now + delay;
        slb_timer_init(&recs[i].timer, on_fire);
        slb_timer_arm(&w, &recs[i].timer, delay);
    }
    /* Jump straight to each next deadline, as the loop does with its wait timeout. */
    for (int step = 0; step < 100000 && g_fired_total < 600; step++) {
        uint64_t next = slb_timer_wheel_next_ms(&w);
        g_now = next > g_now ? next : g_now;
        slb_timer_wheel_run(&w, g_now);
    }
    cr_assert_eq(g_fired_total, 600);
    for (int i = 0; i < 600; i++)
        cr_assert_eq(recs[i].fired_at, recs[i].expires, "timer %d", i);
    cr_assert_eq(g_order_errors, 0);
}

Test(timer, cancelled_timers_never_fire)
{
    static struct slb_timer_wheel w;
    static struct rec recs[200];
    reset_globals(0);
    slb_timer_wheel_init(&w, g_now);
    for (int i = 0; i < 200; i++) {
        recs[i].expires = (uint64_t)i * 400;
        slb_timer_init(&recs[i].timer, on_fire);
        slb_timer_arm(&w, &recs[i].timer, recs[i].expires);
    }
    for (int i = 0; i < 200; i += 2)
        slb_timer_cancel(&recs[i].timer);
    slb_timer_cancel(&recs[0].timer); /* twice is harmless */
    for (int i = 0; i < 200; i++)
        cr_assert_eq(slb_timer_armed(&recs[i].timer), i % 2 == 1);
    g_now = 200 * 400;
    slb_timer_wheel_run(&w, g_now);
    for (int i = 0; i < 200; i++)
        cr_assert_eq(recs[i].fired, i % 2, "timer %d", i);
    cr_assert_eq(slb_timer_wheel_next_ms(&w), SLB_TIMER_NEVER);
}

static struct rec g_victim;
static void cancel_victim(struct slb_timer *t)
{
    on_fire(t);
    slb_timer_cancel(&g_victim.timer);
}

Test(timer, callback_can_cancel_a_timer_due_in_the_same_millisecond)
{
    static struct slb_timer_wheel w;
    static struct rec first;
    reset_globals(100);
    slb_timer_wheel_init(&w, g_now);
    slb_timer_init(&first.timer, cancel_victim);
    slb_timer_init(&g_victim.timer, on_fire);
    slb_timer_arm(&w, &first.timer, 10);
    slb_timer_arm(&w, &g_victim.timer, 10);
    g_now = 200;
    slb_timer_wheel_run(&w, g_now);
    cr_assert_eq(first.fired, 1);
    cr_assert_eq(g_victim.fired, 0);
    cr_assert_eq(w.count, 0);
}

static struct slb_timer_wheel g_pw;
static int g_periodic_runs;
static void periodic(struct slb_timer *t)
{
    g_periodic_runs++;
    slb_timer_arm(&g_pw, t, 10); /* relative to the wheel's clock: no catch-up storm */
}

Test(timer, rearm_from_callback_is_relative_to_the_clock_and_terminates)
{
    static struct slb_timer tm;
    slb_timer_wheel_init(&g_pw, 0);
    slb_timer_init(&tm, periodic);
    slb_timer_arm(&g_pw, &tm, 10);
    slb_timer_wheel_run(&g_pw, 1000);
    cr_assert_eq(g_periodic_runs, 1);
    cr_assert_eq(tm.expires_ms, 1010);
    cr_assert_eq(slb_timer_wheel_next_ms(&g_pw), 1010);
    slb_timer_wheel_run(&g_pw, 1010);
    cr_assert_eq(g_periodic_runs, 2);
}

Test(timer, zero_delay_fires_on_next_run_and_past_deadline_fires_at_once)
{
    static struct slb_timer_wheel w;
    static struct rec a, b;
    reset_globals(50);
    slb_timer_wheel_init(&w, g_now);
    slb_timer_wheel_run(&w, g_now);
    slb_timer_init(&a.timer, on_fire);
    slb_timer_init(&b.timer, on_fire);
    slb_timer_arm(&w, &a.timer, 0);
    slb_timer_arm_at(&w, &b.timer, 3); /* in the past */
    cr_assert_leq(slb_timer_wheel_next_ms(&w), g_now + 1);
    g_now += 1;
    slb_timer_wheel_run(&w, g_now);
    cr_assert_eq(a.fired, 1);
    cr_assert_eq(b.fired, 1);
}

Test(timer, far_timers_beyond_level_three_fire_on_time)
{
    static struct slb_timer_wheel w;
    static struct rec far, near;
    uint64_t start = ((uint64_t)1 << 32) - 5000; /* straddle a 2^32 boundary */
    reset_globals(start);
    slb_timer_wheel_init(&w, g_now);
    slb_timer_init(&far.timer, on_fire);
    slb_timer_init(&near.timer, on_fire);
    far.expires = start + ((uint64_t)1 << 33) + 12345;
    near.expires = start + 6000;
    slb_timer_arm_at(&w, &far.timer, far.expires);
    slb_timer_arm_at(&w, &near.timer, near.expires);
    for (int step = 0; step < 10000 && g_fired_total < 2; step++) {
        uint64_t next = slb_timer_wheel_next_ms(&w);
        cr_assert_leq(next, far.expires);
        g_now = next;
        slb_timer_wheel_run(&w, g_now);
    }
    cr_assert_eq(near.fired_at, near.expires);
    cr_assert_eq(far.fired_at, far.expires);
}

Test(timer, idle_wheel_has_no_deadline_and_long_sleep_is_cheap)
{
    static struct slb_timer_wheel w;
    slb_timer_wheel_init(&w, 0);
    cr_assert_eq(slb_timer_wheel_next_ms(&w), SLB_TIMER_NEVER);
    cr_assert_eq(slb_timer_wheel_run(&w, (uint64_t)1 << 40), 0);
    static struct rec r;
    reset_globals((uint64_t)1 << 40);
    slb_timer_init(&r.timer, on_fire);
    slb_timer_arm(&w, &r.timer, 5);
    cr_assert_eq(slb_timer_wheel_next_ms(&w), ((uint64_t)1 << 40) + 5);
}
