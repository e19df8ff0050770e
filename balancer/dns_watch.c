/* dns_watch.c — the DNS backends' thread (dns_watch.h). */
#include "balancer/dns_watch.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

struct slb_dns_watch {
    const struct slb_config *cfg;
    slb_dns_apply_fn apply;
    void *ctx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    uint64_t due_ms[SLB_MAX_DNS_GROUPS];
    bool failing[SLB_MAX_DNS_GROUPS]; /* logged once per failure streak */
    _Atomic uint64_t resolved, failed;
    struct slb_dns_result r; /* the thread's */
};

int slb_dns_resolve_group(const struct slb_config *cfg, unsigned g, struct slb_dns_result *r,
                          char *err, size_t errlen)
{
    int rc = slb_dns_resolve(cfg->dns_names[g], 5061, (const char *const *)cfg->dns_server.v,
                             cfg->dns_server.n, SLB_DNS_TIMEOUT_MS, r, err, errlen);
    if (rc == 0) {
        snprintf(err, errlen, "%s: no target (\".\" SRV)", cfg->dns_names[g]);
        return -ENOENT;
    }
    return rc;
}

static uint64_t period_ms(const struct slb_config *cfg, uint32_t ttl_s)
{
    uint64_t p = (uint64_t)ttl_s * 1000u;
    if (p < cfg->dns_min_ttl_ms)
        p = cfg->dns_min_ttl_ms;
    if (p > cfg->dns_max_ttl_ms)
        p = cfg->dns_max_ttl_ms;
    return p;
}

static void resolve_one(struct slb_dns_watch *d, unsigned g)
{
    const struct slb_config *cfg = d->cfg;
    char err[512] = "";
    int rc = slb_dns_resolve_group(cfg, g, &d->r, err, sizeof(err));
    if (rc < 0) {
        atomic_fetch_add(&d->failed, 1);
        if (!d->failing[g])
            slb_log(SLB_LOG_ERROR, "DNS %s: %s: the last good backends kept, retried every %llu ms",
                    cfg->dns_names[g], err, (unsigned long long)cfg->dns_min_ttl_ms);
        d->failing[g] = true;
        d->due_ms[g] = slb_clock_ms() + cfg->dns_min_ttl_ms;
        return;
    }
    atomic_fetch_add(&d->resolved, 1);
    if (d->failing[g])
        slb_log(SLB_LOG_INFO, "DNS %s: resolves again (%d targets)", cfg->dns_names[g], rc);
    d->failing[g] = false;
    if (err[0])
        slb_log(SLB_LOG_WARN, "DNS %s: %s", cfg->dns_names[g], err);
    d->apply(d->ctx, g, &d->r);
    d->due_ms[g] = slb_clock_ms() + period_ms(cfg, d->r.ttl_s);
}

static void *watch_main(void *arg)
{
    struct slb_dns_watch *d = arg;
    pthread_mutex_lock(&d->lock);
    while (!d->stop) {
        uint64_t next = UINT64_MAX, now = slb_clock_ms();
        unsigned due = SLB_MAX_DNS_GROUPS;
        for (unsigned g = 0; g < d->cfg->n_dns; g++)
            if (d->due_ms[g] < next) {
                next = d->due_ms[g];
                due = g;
            }
        if (next <= now && due < SLB_MAX_DNS_GROUPS) {
            pthread_mutex_unlock(&d->lock);
            resolve_one(d, due);
            pthread_mutex_lock(&d->lock);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t wait = next - now;
        ts.tv_sec += (time_t)(wait / 1000u);
        ts.tv_nsec += (long)(wait % 1000u) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&d->wake, &d->lock, &ts);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

struct slb_dns_watch *slb_dns_watch_start(const struct slb_config *cfg, const uint32_t *first_ttl_s,
                                          slb_dns_apply_fn apply, void *ctx)
{
    if (!cfg->n_dns)
        return NULL;
    struct slb_dns_watch *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->cfg = cfg;
    d->apply = apply;
    d->ctx = ctx;
    pthread_mutex_init(&d->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->wake, &ca);
    pthread_condattr_destroy(&ca);
    uint64_t now = slb_clock_ms();
    for (unsigned g = 0; g < cfg->n_dns; g++)
        d->due_ms[g] = now + period_ms(cfg, first_ttl_s[g]);
    if (pthread_create(&d->thread, NULL, watch_main, d) != 0) {
        pthread_cond_destroy(&d->wake);
        pthread_mutex_destroy(&d->lock);
        free(d);
        return NULL;
    }
    return d;
}

void slb_dns_watch_counts(const struct slb_dns_watch *d, uint64_t *resolved, uint64_t *failed)
{
    *resolved = d ? atomic_load(&d->resolved) : 0;
    *failed = d ? atomic_load(&d->failed) : 0;
}

void slb_dns_watch_stop(struct slb_dns_watch *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->stop = true;
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->thread, NULL);
    pthread_cond_destroy(&d->wake);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
