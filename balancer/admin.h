/* The admin listener (--admin ADDR:PORT): HTTP/1.1 on its own thread (libmicrohttpd's),
 * off the workers, so a slow or hostile admin client cannot stall relaying.
 *   GET  /metrics                       Prometheus text format (metrics.h)
 *   GET  /backends, /status             JSON
 *   GET  /ready, /live                  200 or 503, for orchestrators and L4 health checks
 *   POST /backends/NAME/drain|undrain   NAME as host:port
 *   POST /backends/NAME/weight?value=N
 *   POST /reload                        what SIGHUP does
 * POST calls need "Authorization: Bearer TOKEN" with the token of --admin-token-file;
 * without a token file they are refused (403). On a Unix socket (--admin unix:PATH, mode
 * 0660: the file's owner and group are who may call) no token is needed. */
#ifndef SLB_BALANCER_ADMIN_H
#define SLB_BALANCER_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "balancer/config.h"

struct slb_worker;
struct slb_health;
struct slb_admin;

/* What the admin calls do, provided by main (which owns the backends in force). Each runs
 * on the admin thread; who is the caller's address, for the log line. */
struct slb_admin_ops {
    void *ctx;
    /* A reference to the backends in force (the caller drops it). */
    const struct slb_backends *(*backends)(void *ctx);
    /* 0, -ENOENT (no such backend) or -EINVAL (bad value); applied like a reload. */
    int (*set_drain)(void *ctx, const char *name, bool drain, const char *who);
    int (*set_weight)(void *ctx, const char *name, long weight, const char *who);
    /* 0, or -EINVAL with err saying why (the running configuration is kept). */
    int (*reload)(void *ctx, const char *who, char *err, size_t errlen);
};

struct slb_dns_watch;

struct slb_admin_cfg {
    const struct slb_config *cfg;
    const struct slb_addr *addr; /* TCP; or */
    const char *unix_path;       /* a Unix socket (not NULL) */
    const char *token;           /* NULL: state-changing calls are refused */
    struct slb_worker *const *workers;
    unsigned n_workers;
    struct slb_health *health;
    uint64_t start_time_s;
    const struct slb_dns_watch *dns; /* NULL without DNS backends */
    struct slb_admin_ops ops;
};

/* Starts serving (its own thread). NULL with err set when it cannot (address in use...). */
struct slb_admin *slb_admin_start(const struct slb_admin_cfg *c, char *err, size_t errlen);

/* Stops serving and frees it. */
void slb_admin_stop(struct slb_admin *a);

#endif
