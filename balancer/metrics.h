/* /metrics: sipslb's counters and states in the Prometheus text format (version 0.0.4),
 * with # HELP and # TYPE lines and units in the names. Counters live per worker and are
 * summed here, when scraped: the per-message path pays nothing for them beyond its own
 * relaxed stores. */
#ifndef SLB_BALANCER_METRICS_H
#define SLB_BALANCER_METRICS_H

#include <stdint.h>

#include "balancer/config.h"

struct slb_worker;
struct slb_health;
struct slb_textbuf;

/* What a scrape reads. The caller holds a reference to backends for the call. */
struct slb_dns_watch;

struct slb_metrics_src {
    const struct slb_config *cfg;
    struct slb_worker *const *workers;
    unsigned n_workers;
    struct slb_health *health;
    const struct slb_backends *backends;
    uint64_t start_time_s;           /* Unix time */
    const struct slb_dns_watch *dns; /* NULL without DNS backends */
};

/* Appends the exposition to out. Returns 0, or -1 when out ran out of memory. Any thread
 * but the workers' (it reads /proc). */
int slb_metrics_render(const struct slb_metrics_src *src, struct slb_textbuf *out);

#endif
