/* The health verdict: backends start alive, --fall failures in a row take one down, --rise
 * oks in a row bring it back, a result of the other kind restarts the count; workers'
 * failures count once per look; draining backends are reported drained once, when idle. */
#include "balancer/health_state.h"

#include <criterion/criterion.h>

enum { FALL = 3, RISE = 2 };

static enum slb_health_change result(struct slb_health_state *s, bool ok)
{
    return slb_health_state_result(s, ok, FALL, RISE);
}

/* A backend taken down by FALL failures. */
static void take_down(struct slb_health_state *s)
{
    slb_health_state_init(s);
    for (int i = 0; i < FALL - 1; i++)
        cr_assert_eq(result(s, false), SLB_HEALTH_NONE);
    cr_assert_eq(result(s, false), SLB_HEALTH_WENT_DOWN);
}

Test(health_state, a_backend_starts_alive_and_routed)
{
    struct slb_health_state s;
    slb_health_state_init(&s);
    cr_assert(s.alive);
    cr_assert_eq(s.fails, 0);
    cr_assert_eq(s.oks, 0);
    cr_assert_eq(s.seen_passive, 0);
    cr_assert_eq(slb_health_state_route(&s, true, false), SLB_BACKEND_UP);
    cr_assert_eq(result(&s, true), SLB_HEALTH_NONE, "an ok while alive changes nothing");
}

Test(health_state, fall_failures_in_a_row_take_it_down)
{
    struct slb_health_state s;
    slb_health_state_init(&s);
    cr_assert_eq(result(&s, false), SLB_HEALTH_NONE);
    cr_assert_eq(result(&s, false), SLB_HEALTH_NONE);
    cr_assert(s.alive);
    cr_assert_eq(result(&s, false), SLB_HEALTH_WENT_DOWN);
    cr_assert_not(s.alive);
    cr_assert_eq(slb_health_state_route(&s, true, false), SLB_BACKEND_DOWN);
    cr_assert_eq(result(&s, false), SLB_HEALTH_NONE, "further failures change nothing");
    cr_assert_not(s.alive);
}

Test(health_state, an_ok_between_failures_restarts_the_count)
{
    struct slb_health_state s;
    slb_health_state_init(&s);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < FALL - 1; i++)
            cr_assert_eq(result(&s, false), SLB_HEALTH_NONE);
        cr_assert_eq(result(&s, true), SLB_HEALTH_NONE);
    }
    cr_assert(s.alive);
    cr_assert_eq(s.fails, 0);
}

Test(health_state, rise_oks_in_a_row_bring_it_back)
{
    struct slb_health_state s;
    take_down(&s);
    cr_assert_eq(result(&s, true), SLB_HEALTH_NONE);
    cr_assert_not(s.alive);
    cr_assert_eq(result(&s, true), SLB_HEALTH_WENT_UP);
    cr_assert(s.alive);
    cr_assert_eq(s.oks, 0);
    cr_assert_eq(slb_health_state_route(&s, true, false), SLB_BACKEND_UP);
    /* Back up, it needs FALL failures again to go down. */
    cr_assert_eq(result(&s, false), SLB_HEALTH_NONE);
    cr_assert(s.alive);
}

Test(health_state, a_failure_between_oks_restarts_the_rise)
{
    struct slb_health_state s;
    take_down(&s);
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(result(&s, true), SLB_HEALTH_NONE);
        cr_assert_eq(result(&s, false), SLB_HEALTH_NONE);
    }
    cr_assert_not(s.alive);
    cr_assert_eq(result(&s, true), SLB_HEALTH_NONE);
    cr_assert_eq(result(&s, true), SLB_HEALTH_WENT_UP);
}

Test(health_state, fall_and_rise_of_one_act_on_every_result)
{
    struct slb_health_state s;
    slb_health_state_init(&s);
    cr_assert_eq(slb_health_state_result(&s, false, 1, 1), SLB_HEALTH_WENT_DOWN);
    cr_assert_eq(slb_health_state_result(&s, true, 1, 1), SLB_HEALTH_WENT_UP);
    cr_assert_eq(slb_health_state_result(&s, false, 1, 1), SLB_HEALTH_WENT_DOWN);
}

Test(health_state, workers_failures_count_once_per_look)
{
    struct slb_health_state s;
    slb_health_state_init(&s);
    cr_assert_not(slb_health_state_passive(&s, 0), "no failure yet");
    cr_assert(slb_health_state_passive(&s, 5), "five since the last look: one signal");
    cr_assert_not(slb_health_state_passive(&s, 5));
    cr_assert(slb_health_state_passive(&s, 6));
    cr_assert_eq(s.seen_passive, 6);
    /* Taken down and added back, it keeps what it has seen of the growing counter. */
    for (int i = 0; i < FALL; i++)
        result(&s, false);
    cr_assert_not(s.alive);
    slb_health_state_added(&s);
    cr_assert(s.alive);
    cr_assert_not(slb_health_state_passive(&s, 6));
}

Test(health_state, added_back_it_is_alive_with_nothing_counted)
{
    struct slb_health_state s;
    take_down(&s);
    cr_assert_eq(result(&s, true), SLB_HEALTH_NONE);
    cr_assert_eq(s.oks, 1);
    slb_health_state_added(&s);
    cr_assert(s.alive);
    cr_assert_eq(s.oks, 0);
    cr_assert_eq(s.fails, 0);
    cr_assert_not(s.drained_reported);
}

Test(health_state, route_state_follows_presence_verdict_and_drain)
{
    struct slb_health_state s;
    slb_health_state_init(&s);
    cr_assert_eq(slb_health_state_route(&s, true, false), SLB_BACKEND_UP);
    cr_assert_eq(slb_health_state_route(&s, true, true), SLB_BACKEND_DRAINING);
    cr_assert_eq(slb_health_state_route(&s, false, false), SLB_BACKEND_REMOVED);
    take_down(&s);
    cr_assert_eq(slb_health_state_route(&s, true, true), SLB_BACKEND_DOWN);
    cr_assert_eq(slb_health_state_route(&s, false, true), SLB_BACKEND_REMOVED);
}

Test(health_state, a_draining_backend_is_reported_drained_once_when_idle)
{
    struct slb_health_state s;
    slb_health_state_init(&s);
    cr_assert_not(slb_health_state_awaits_drain(&s, false), "not draining");
    cr_assert_not(slb_health_state_drained(&s, false, 0, 100000, 1000));
    cr_assert(slb_health_state_awaits_drain(&s, true));
    cr_assert_not(slb_health_state_drained(&s, true, 5000, 5999, 1000), "idle 999 ms");
    cr_assert(slb_health_state_drained(&s, true, 5000, 6000, 1000), "idle 1000 ms");
    cr_assert_not(slb_health_state_awaits_drain(&s, true));
    cr_assert_not(slb_health_state_drained(&s, true, 5000, 9000, 1000), "reported once");
    /* A drain flag change (a reload) makes the report due again. */
    slb_health_state_drain_changed(&s);
    cr_assert(slb_health_state_drained(&s, true, 5000, 9000, 1000));
}

Test(health_state, traffic_newer_than_now_is_not_idleness)
{
    /* A worker's clock read after the caller's cached now. */
    struct slb_health_state s;
    slb_health_state_init(&s);
    cr_assert_not(slb_health_state_drained(&s, true, 5001, 5000, 1000));
    cr_assert(slb_health_state_awaits_drain(&s, true));
}

Test(health_state, a_down_backend_is_not_drained_and_going_down_rearms_the_report)
{
    struct slb_health_state s;
    slb_health_state_init(&s);
    cr_assert(slb_health_state_drained(&s, true, 0, 1000, 1000));
    for (int i = 0; i < FALL; i++)
        result(&s, false);
    cr_assert_not(s.alive);
    cr_assert_not(s.drained_reported, "going down clears the report");
    cr_assert_not(slb_health_state_drained(&s, true, 0, 5000, 1000), "down: not drained");
    for (int i = 0; i < RISE; i++)
        result(&s, true);
    cr_assert(slb_health_state_drained(&s, true, 0, 5000, 1000), "back up and idle: again");
}
