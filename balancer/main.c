/* sipslb: parses and checks the configuration, builds the TLS contexts (so a bad
 * certificate or key stops us before any socket opens), starts one worker per core, then
 * waits for signals on the main thread: SIGINT/SIGTERM stop the workers (they stop
 * accepting and flush), SIGUSR1 writes the counters. Exit: 0 after a clean stop, 1 on a
 * runtime failure, 2 on bad usage. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "balancer/config.h"
#include "balancer/health.h"
#include "balancer/maglev.h"
#include "balancer/router.h"
#include "balancer/worker.h"
#include "core/log.h"
#include "io/worker.h"
#include "tls/tls.h"

static const char *const counter_names[] = {
#define SLB_X_NAME(name) #name,
    SLB_WORKER_COUNTERS(SLB_X_NAME)
#undef SLB_X_NAME
};

static struct slb_health *health;

static void write_stats(const struct slb_config *cfg, struct slb_worker **w, unsigned n)
{
    struct slb_worker_counters sum = {0};
    for (unsigned i = 0; i < n; i++)
        slb_worker_add_counters(w[i], &sum);
    const uint64_t *v = (const uint64_t *)&sum;
    size_t count = sizeof(sum) / sizeof(uint64_t);
    FILE *f = cfg->stats_file ? fopen(cfg->stats_file, "w") : NULL;
    if (cfg->stats_file && !f)
        slb_log(SLB_LOG_WARN, "--stats-file %s: %s", cfg->stats_file, strerror(errno));
    for (size_t i = 0; i < count; i++)
        if (f)
            fprintf(f, "%s %llu\n", counter_names[i], (unsigned long long)v[i]);
    if (f) {
        slb_health_report(health, f);
        fclose(f);
    }
    slb_log(SLB_LOG_INFO,
            "clients accepted %llu, handshakes ok %llu failed %llu; requests in %llu forwarded "
            "%llu; responses in %llu forwarded %llu; replies 400:%llu 483:%llu 503:%llu 513:%llu",
            (unsigned long long)sum.client_accepted, (unsigned long long)sum.handshakes_ok,
            (unsigned long long)sum.handshakes_failed, (unsigned long long)sum.requests_in,
            (unsigned long long)sum.requests_forwarded, (unsigned long long)sum.responses_in,
            (unsigned long long)sum.responses_forwarded, (unsigned long long)sum.replied_400,
            (unsigned long long)sum.replied_483, (unsigned long long)sum.replied_503,
            (unsigned long long)sum.replied_513);
}

static enum slb_tls_version tls_min(const struct slb_config *cfg)
{
    return cfg->tls_min == SLB_TLS_MIN_13 ? SLB_TLS_VERSION_1_3 : SLB_TLS_VERSION_1_2;
}

static struct slb_tls_server_opts server_opts(const struct slb_config *cfg)
{
    static const enum slb_tls_verify verify_client[] = {
        [SLB_VERIFY_CLIENT_NONE] = SLB_TLS_VERIFY_NONE,
        [SLB_VERIFY_CLIENT_OPTIONAL] = SLB_TLS_VERIFY_OPTIONAL,
        [SLB_VERIFY_CLIENT_REQUIRE] = SLB_TLS_VERIFY_REQUIRE,
    };
    return (struct slb_tls_server_opts){
        .cert_file = cfg->cert,
        .key_file = cfg->key,
        .ca_file = cfg->ca,
        .verify_client = verify_client[cfg->verify_client],
        .min_version = tls_min(cfg),
        .ciphers = cfg->ciphers,
    };
}

/* One server and one client context per worker (and a client one for the health
 * checker, at index n), built here on the main thread. */
static int make_contexts(const struct slb_config *cfg, unsigned n, struct slb_tls_ctx **sctx,
                         struct slb_tls_ctx **cctx)
{
    struct slb_tls_server_opts so = server_opts(cfg);
    struct slb_tls_client_opts co = {
        .ca_file = cfg->backend_ca,
        .verify_server = cfg->backend_verify == SLB_BACKEND_VERIFY_NONE ? SLB_TLS_VERIFY_NONE
                                                                         : SLB_TLS_VERIFY_REQUIRE,
        .cert_file = cfg->backend_cert,
        .key_file = cfg->backend_key,
        .min_version = tls_min(cfg),
        .ciphers = cfg->ciphers,
    };
    char err[512];
    for (unsigned i = 0; i <= n; i++) {
        if (i < n && !(sctx[i] = slb_tls_server_ctx_new(&so, err, sizeof(err)))) {
            fprintf(stderr, "sipslb: %s\n", err);
            return -EINVAL;
        }
        if (!(cctx[i] = slb_tls_client_ctx_new(&co, err, sizeof(err)))) {
            fprintf(stderr, "sipslb: %s\n", err);
            return -EINVAL;
        }
    }
    return 0;
}

/* SIGHUP: the certificate and key again (ACME renewals), for new clients of every
 * worker; all or nothing. Then the backends file, when there is one. */
static struct slb_backend_attrs in_force; /* the backends as last handed to the health checker */

static void reload(struct slb_config *cfg, struct slb_worker **w, unsigned n)
{
    struct slb_tls_server_opts so = server_opts(cfg);
    struct slb_tls_ctx *fresh[SLB_MAX_WORKERS] = {0};
    char err[512];
    unsigned made = 0;
    for (; made < n; made++)
        if (!(fresh[made] = slb_tls_server_ctx_new(&so, err, sizeof(err))))
            break;
    if (made < n) {
        slb_log(SLB_LOG_ERROR, "SIGHUP: certificate reload rejected, current one kept: %s", err);
        for (unsigned i = 0; i < made; i++)
            slb_tls_ctx_free(fresh[i]);
    } else {
        for (unsigned i = 0; i < n; i++)
            slb_worker_set_server_ctx(w[i], fresh[i]);
        slb_log(SLB_LOG_INFO, "SIGHUP: re-read --cert %s and --key %s", cfg->cert, cfg->key);
    }
    if (!cfg->backends_file)
        return;
    struct slb_backend_attrs *a = malloc(sizeof(*a));
    if (a && slb_config_reload_attrs(cfg, &in_force, a, err, sizeof(err)) == 0) {
        slb_log(SLB_LOG_INFO, "SIGHUP: re-read %s", cfg->backends_file);
        in_force = *a;
        slb_health_reload(health, a);
    } else {
        slb_log(SLB_LOG_ERROR, "SIGHUP: backends reload rejected, running configuration kept: %s",
                a ? err : "out of memory");
        free(a);
    }
}

int main(int argc, char **argv)
{
    static struct slb_config cfg;
    int rc = slb_config_load(&cfg, argc, argv);
    if (rc == 1)
        return 0;
    if (rc != 0)
        return rc;
    if (cfg.print_config) {
        slb_config_print(&cfg, stdout);
        return 0;
    }
    slb_log_level_max = (enum slb_log_level)cfg.log_level;
    if (cfg.backend_verify == SLB_BACKEND_VERIFY_NONE)
        slb_log(SLB_LOG_WARN, "--backend-verify none: backend certificates are NOT checked; "
                              "anyone on the path can impersonate a backend (labs only)");
    if (slb_tls_init() < 0) {
        fprintf(stderr, "sipslb: TLS library initialisation failed\n");
        return 1;
    }
    unsigned n = cfg.n_workers;
    struct slb_tls_ctx **sctx = calloc(n + 1, sizeof(*sctx)), **cctx = calloc(n + 1, sizeof(*cctx));
    struct slb_worker **w = calloc(n, sizeof(*w));
    if (!sctx || !cctx || !w)
        return 1;
    if (make_contexts(&cfg, n, sctx, cctx) < 0)
        return 2;

    slb_config_attrs(&cfg, &in_force);
    static struct slb_router router;
    if (slb_router_init(&router, &cfg, n) < 0)
        return 1;
    health = slb_health_new(&cfg, &router, cctx[n], n);
    if (!health)
        return 1;
    static struct slb_shared sh;
    sh.cfg = &cfg;
    sh.router = &router;
    sh.health = health;
    sh.workers = w;
    snprintf(sh.self.via_sent_by, sizeof(sh.self.via_sent_by), "%s", cfg.advertise_hostport);
    sh.self.via_sent_by_len = strlen(sh.self.via_sent_by);
    snprintf(sh.self.tcp_sent_by, sizeof(sh.self.tcp_sent_by), "%s", cfg.advertise_tcp);
    sh.self.tcp_sent_by_len = strlen(sh.self.tcp_sent_by);
    if (getrandom(&sh.self.mac_key, sizeof(sh.self.mac_key), 0) != sizeof(sh.self.mac_key)) {
        fprintf(stderr, "sipslb: getrandom failed: %s\n", strerror(errno));
        return 1;
    }
    for (unsigned i = 0; i < n; i++) {
        w[i] = slb_worker_new(&sh, i, sctx[i], cctx[i]);
        if (!w[i]) {
            fprintf(stderr, "sipslb: out of memory creating worker %u\n", i);
            return 1;
        }
    }

    /* Signals go to this thread only: block them before the workers inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct slb_workers workers;
    void **args = calloc(n, sizeof(void *));
    for (unsigned i = 0; i < n; i++)
        args[i] = w[i];
    slb_log(SLB_LOG_INFO, "sipslb starting: %u workers, %u listen addresses, %u backends, "
                          "wolfSSL %s%s",
            n, cfg.n_listen, cfg.n_backends, slb_tls_library_version(),
            slb_tls_library_has_asm() ? " (assembly)" : " (no assembly: slow)");
    struct slb_workers control;
    void *harg[1] = {health};
    if (slb_workers_start(&control, 1, false, slb_health_main, harg) != 0) {
        slb_log(SLB_LOG_ERROR, "cannot start the health checker");
        return 1;
    }
    rc = slb_workers_start(&workers, n, cfg.pin, slb_worker_main, args);
    if (rc != 0) {
        slb_log(SLB_LOG_ERROR, "cannot start workers: %s", strerror(rc < 0 ? -rc : rc));
        for (unsigned i = 0; i < n; i++)
            slb_worker_stop(w[i]);
        slb_workers_join(&workers, NULL);
        slb_health_stop(health);
        slb_workers_join(&control, NULL);
        return 1;
    }
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR1) {
            write_stats(&cfg, w, n);
            continue;
        }
        if (sig == SIGHUP) {
            reload(&cfg, w, n);
            continue;
        }
        slb_log(SLB_LOG_INFO, "signal %d: stopping", sig);
        break;
    }
    for (unsigned i = 0; i < n; i++)
        slb_worker_stop(w[i]);
    void **results = calloc(n, sizeof(void *));
    slb_workers_join(&workers, results);
    slb_health_stop(health);
    void *hres = NULL;
    slb_workers_join(&control, &hres);
    int status = 0;
    for (unsigned i = 0; i < n; i++)
        if (results[i])
            status = 1;
    write_stats(&cfg, w, n);
    for (unsigned i = 0; i < n; i++) {
        slb_tls_ctx_free(slb_worker_server_ctx_leftover(w[i]));
        slb_tls_ctx_free(slb_worker_server_ctx(w[i])); /* sctx[i], or its replacement */
        slb_worker_free(w[i]);
        slb_tls_ctx_free(cctx[i]);
    }
    slb_tls_ctx_free(cctx[n]);
    slb_health_free(health);
    slb_router_deinit(&router);
    if (hres)
        status = 1;
    slb_tls_cleanup();
    free(results);
    free(args);
    free(w);
    free(sctx);
    free(cctx);
    return status;
}
