/* The per-backend health verdict (health_state.h): consecutive failures take a backend down,
 * consecutive oks bring it back, a result of the other kind restarts the count. Pure; the
 * health checker's control thread runs it.
 *
 * Invariants: fails counts only while alive and oks only while down (the other is 0), and
 * both are below their threshold between calls; drained_reported is set only while alive
 * and draining. */
#include "balancer/health_state.h"

#include <string.h>

void slb_health_state_init(struct slb_health_state *s)
{
    memset(s, 0, sizeof(*s));
    s->alive = true;
}

void slb_health_state_added(struct slb_health_state *s)
{
    s->alive = true;
    s->fails = 0;
    s->oks = 0;
    s->drained_reported = false;
}

enum slb_health_change slb_health_state_result(struct slb_health_state *s, bool ok, unsigned fall,
                                               unsigned rise)
{
    if (ok) {
        s->fails = 0;
        if (!s->alive && ++s->oks >= rise) {
            s->alive = true;
            s->oks = 0;
            return SLB_HEALTH_WENT_UP;
        }
        return SLB_HEALTH_NONE;
    }
    s->oks = 0;
    if (s->alive && ++s->fails >= fall) {
        s->alive = false;
        s->fails = 0;
        /* Should it come back still draining, its idle time is reported afresh. */
        s->drained_reported = false;
        return SLB_HEALTH_WENT_DOWN;
    }
    return SLB_HEALTH_NONE;
}

bool slb_health_state_passive(struct slb_health_state *s, uint64_t failures)
{
    if (failures == s->seen_passive)
        return false;
    s->seen_passive = failures;
    return true;
}

enum slb_backend_state slb_health_state_route(const struct slb_health_state *s, bool present,
                                              bool drain)
{
    if (!present)
        return SLB_BACKEND_REMOVED;
    if (!s->alive)
        return SLB_BACKEND_DOWN;
    return drain ? SLB_BACKEND_DRAINING : SLB_BACKEND_UP;
}

bool slb_health_state_drained(struct slb_health_state *s, bool drain, uint64_t last_ms,
                              uint64_t now_ms, uint64_t idle_ms)
{
    if (!slb_health_state_awaits_drain(s, drain))
        return false;
    /* A worker's clock may have read a later time than the caller's cached now: traffic
     * that recent is not idleness (the difference would wrap around). */
    if (last_ms > now_ms || now_ms - last_ms < idle_ms)
        return false;
    s->drained_reported = true;
    return true;
}

void slb_health_state_drain_changed(struct slb_health_state *s)
{
    s->drained_reported = false;
}
