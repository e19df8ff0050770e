/* Backends from DNS kept current: a thread of its own re-resolves every --backend sips:NAME
 * at its records' TTL (bounded by --dns-min-ttl and --dns-max-ttl) and hands each answer to
 * apply, which turns it into a new backends object like a reload's. A failure keeps the last
 * good set (apply is not called), is logged and counted, and is retried after
 * --dns-min-ttl. Resolution blocks (c-ares, bounded), so never on a worker nor on the health
 * checker's thread. */
#ifndef SLB_BALANCER_DNS_WATCH_H
#define SLB_BALANCER_DNS_WATCH_H

#include <stdint.h>

#include "balancer/config.h"
#include "balancer/dns_resolve.h"

#define SLB_DNS_TIMEOUT_MS 3000u /* one resolution, every query and retry */

typedef void (*slb_dns_apply_fn)(void *ctx, unsigned group, const struct slb_dns_result *r);

struct slb_dns_watch;

/* Resolves group g of cfg once, now (boot: on the main thread, before the watch starts).
 * Returns as slb_dns_resolve; -ENOENT too for an answer with no target. */
int slb_dns_resolve_group(const struct slb_config *cfg, unsigned g, struct slb_dns_result *r,
                          char *err, size_t errlen);

/* Starts the thread; each group is next resolved after its first_ttl_s (bounded). NULL when
 * cfg has no DNS group or on failure. */
struct slb_dns_watch *slb_dns_watch_start(const struct slb_config *cfg, const uint32_t *first_ttl_s,
                                          slb_dns_apply_fn apply, void *ctx);

/* Resolutions, failures and answers that changed the backends, so far. Any thread. */
void slb_dns_watch_counts(const struct slb_dns_watch *d, uint64_t *resolved, uint64_t *failed);

void slb_dns_watch_stop(struct slb_dns_watch *d);

#endif
