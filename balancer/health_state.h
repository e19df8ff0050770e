/* One backend's health verdict as a pure state machine: probe and passive results in, the
 * changes the health checker must publish and report out. No I/O, no clock (time comes in
 * as numbers), no allocation. The health checker (health.c) holds one per backend slot and
 * drives it from its control thread. */
#ifndef SLB_BALANCER_HEALTH_STATE_H
#define SLB_BALANCER_HEALTH_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "balancer/router.h"

/* What a result did to the verdict. */
enum slb_health_change {
    SLB_HEALTH_NONE = 0,  /* verdict unchanged */
    SLB_HEALTH_WENT_UP,   /* --rise oks in a row: alive again */
    SLB_HEALTH_WENT_DOWN, /* --fall failures in a row: down */
};

/* A backend slot's verdict and the counts that lead to it. Embedded in the health
 * checker's per-backend probe; touched by its control thread only. */
struct slb_health_state {
    bool alive;            /* the verdict; a backend starts alive (routes at once) */
    unsigned fails;        /* failures in a row while alive */
    unsigned oks;          /* oks in a row while down */
    bool drained_reported; /* draining and idle: reported drained once */
    uint64_t seen_passive; /* the workers' failure count already counted */
};

/* A slot at start: alive, nothing counted, no passive failure seen. */
void slb_health_state_init(struct slb_health_state *s);

/* A backend added by a reload, or back after a removal: alive until its probes say
 * otherwise, counts and drained report cleared. The passive failure count seen so far is
 * kept (the workers' counter only grows). */
void slb_health_state_added(struct slb_health_state *s);

/* Counts one result (ok: a wanted answer; else any failure). While alive, fall failures in
 * a row take it down; while down, rise oks in a row bring it up; a result of the other kind
 * restarts the count. fall and rise are >= 1. Returns the change. */
enum slb_health_change slb_health_state_result(struct slb_health_state *s, bool ok, unsigned fall,
                                               unsigned rise);

/* Takes the workers' passive failure counter for this backend. Returns true when it moved
 * since the last call: the caller counts that as one failed result, however many failures
 * the workers saw in between. */
bool slb_health_state_passive(struct slb_health_state *s, uint64_t failures);

/* The routing state for a table: REMOVED when not present, DOWN when not alive, else
 * DRAINING or UP by the drain flag. */
enum slb_backend_state slb_health_state_route(const struct slb_health_state *s, bool present,
                                              bool drain);

/* Whether a drained report is pending: alive, draining, not reported yet. A cheap test
 * before the caller looks up when the backend last carried traffic. */
static inline bool slb_health_state_awaits_drain(const struct slb_health_state *s, bool drain)
{
    return s->alive && drain && !s->drained_reported;
}

/* Returns true once when a draining backend has carried no traffic for idle_ms (last_ms:
 * its newest traffic, now_ms: the time now); it then stays reported until its drain flag
 * changes or it goes down. */
bool slb_health_state_drained(struct slb_health_state *s, bool drain, uint64_t last_ms,
                              uint64_t now_ms, uint64_t idle_ms);

/* The drain flag changed (a reload): a drained report is due again once idle. */
void slb_health_state_drain_changed(struct slb_health_state *s);

#endif
