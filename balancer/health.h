/* Backend health for the whole process: a control thread with its own io_uring loop sends
 * SIP OPTIONS probes over TLS to every backend, counts failures (unanswered or unwanted
 * responses, failed connects and handshakes, resets, and the same failures seen by the
 * workers), moves backends between up and down after --fall / --rise results, and
 * publishes a new routing table through the router on every change. It also reports
 * draining backends as drained once they have been idle for --drain-idle. */
#ifndef SLB_BALANCER_HEALTH_H
#define SLB_BALANCER_HEALTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "balancer/config.h"
#include "balancer/router.h"

struct slb_tls_ctx;
struct slb_health;

/* Signals a worker sends about a backend. Lock free; any worker thread. */
struct slb_health_signals {
    _Alignas(64) atomic_uint_fast64_t failures[SLB_MAX_BACKENDS]; /* passive failures */
};

/* Why a probe failed, for the metrics. */
enum slb_probe_fail {
    SLB_PROBE_FAIL_CONNECT,   /* the TCP connect failed or timed out */
    SLB_PROBE_FAIL_HANDSHAKE, /* TLS failed or timed out */
    SLB_PROBE_FAIL_RESET,     /* the connection was lost (or the workers' were) */
    SLB_PROBE_FAIL_TIMEOUT,   /* no final response within --probe-timeout */
    SLB_PROBE_FAIL_STATUS,    /* answered with a status --probe-alive does not accept */
    SLB_PROBE_FAIL_OTHER,
    SLB_PROBE_FAIL_KINDS
};

/* One backend as the health checker sees it, for /metrics and /backends. Any thread. */
struct slb_health_backend {
    const char *state;  /* "up", "down", "draining", "drained", "removed" */
    double probe_rtt_s; /* the last answered probe's round trip (0: none yet) */
    uint64_t probes_ok; /* probes answered as alive */
    uint64_t fails[SLB_PROBE_FAIL_KINDS];
};
extern const char *const slb_probe_fail_names[SLB_PROBE_FAIL_KINDS];
void slb_health_backend(struct slb_health *h, unsigned b, struct slb_health_backend *out);

/* Per-worker, per-backend time of the last message routed to a draining backend; written
 * by its worker only, read by the control thread. */
struct slb_drain_clock {
    _Alignas(64) atomic_uint_fast64_t last_ms[SLB_MAX_BACKENDS];
};

/* The health checker for these backends (it takes a reference). NULL when out of memory. */
struct slb_health *slb_health_new(const struct slb_config *cfg, struct slb_router *router,
                                  const struct slb_backends *backends,
                                  struct slb_tls_ctx *client_ctx, unsigned n_workers);
void slb_health_free(struct slb_health *h);

/* The control thread's body (pthread start routine); returns when stopped. */
void *slb_health_main(void *health);
void slb_health_stop(struct slb_health *h);

/* Whether the control thread stopped on an error of its own (logged). Any thread. */
bool slb_health_failed(struct slb_health *h);

/* Whether every backend in force has had a probe result (answered or failed): the first
 * probe round is done. Any thread. */
bool slb_health_first_round_done(struct slb_health *h, const struct slb_backends *b);

struct slb_health_signals *slb_health_signals(struct slb_health *h);
struct slb_drain_clock *slb_health_drain_clock(struct slb_health *h, unsigned worker);

/* Hands over the backends a reload built; the health thread applies them (added, removed,
 * new weights and drain flags), logs each change and publishes a new table within a tick.
 * Takes the caller's reference. Any thread. */
void slb_health_reload(struct slb_health *h, const struct slb_backends *b);

/* Writes "backend.NAME STATE" lines (up, down, draining, drained), the names taken from
 * names (the caller's backends, at least as new as the checker's). Any thread. */
void slb_health_report(struct slb_health *h, const struct slb_backends *names, FILE *out);

#endif
