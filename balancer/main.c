/* sipslb: parses and checks the configuration, builds the TLS contexts (so a bad
 * certificate or key stops us before any socket opens), starts one worker per core, then
 * waits for signals on the main thread: SIGINT/SIGTERM stop the workers (they stop
 * accepting and flush), SIGUSR1 writes the counters. Exit: 0 after a clean stop, 1 on a
 * runtime failure, 2 on bad usage. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "balancer/about.h"
#include "balancer/admin.h"
#include "balancer/config.h"
#include "balancer/dns_watch.h"
#include "balancer/handover.h"
#include "balancer/health.h"
#include "balancer/maglev.h"
#include "balancer/router.h"
#include "balancer/sd_notify.h"
#include "balancer/secrets.h"
#include "balancer/worker.h"
#include "core/limit.h"
#include "core/log.h"
#include "core/siphash.h"
#include "io/threads.h"
#include "tls/tls.h"

static struct slb_health *health;
static const struct slb_backends *in_force; /* the backends as last handed to the health checker */
static struct slb_dns_watch *dns_watch;     /* NULL without DNS backends, and once stopped */
static uint64_t dns_ok_final, dns_failed_final; /* its counts as it stopped */
/* Changes of the backends (SIGHUP on this thread, admin calls on the admin thread) and
 * reads of in_force from another thread go one at a time. Control plane only. */
static pthread_mutex_t control_lock = PTHREAD_MUTEX_INITIALIZER;

static void write_stats(const struct slb_config *cfg, struct slb_worker **w, unsigned n)
{
    struct slb_worker_counters sum = {0};
    for (unsigned i = 0; i < n; i++)
        slb_worker_add_counters(w[i], &sum);
    const uint64_t *v = (const uint64_t *)&sum;
    size_t count = sizeof(sum) / sizeof(uint64_t);
    /* Written beside and renamed over: a reader never sees half a file. */
    char tmp[4096];
    FILE *f = NULL;
    if (cfg->stats_file && snprintf(tmp, sizeof(tmp), "%s.tmp", cfg->stats_file) < (int)sizeof(tmp))
        f = fopen(tmp, "w");
    if (cfg->stats_file && !f)
        slb_log(SLB_LOG_WARN, "--stats-file %s: %s", cfg->stats_file, strerror(errno));
    for (size_t i = 0; i < count; i++)
        if (f)
            fprintf(f, "%s %llu\n", slb_worker_counter_names[i], (unsigned long long)v[i]);
    uint64_t dns_ok = dns_ok_final, dns_failed = dns_failed_final;
    if (dns_watch)
        slb_dns_watch_counts(dns_watch, &dns_ok, &dns_failed);
    if (f)
        fprintf(f, "dns_resolutions %llu\ndns_failures %llu\n", (unsigned long long)dns_ok,
                (unsigned long long)dns_failed);
    if (f) {
        pthread_mutex_lock(&control_lock);
        slb_health_report(health, in_force, f);
        pthread_mutex_unlock(&control_lock);
        if (fclose(f) != 0 || rename(tmp, cfg->stats_file) != 0)
            slb_log(SLB_LOG_WARN, "--stats-file %s: %s", cfg->stats_file, strerror(errno));
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
        .cert_files = cfg->cert.v,
        .key_files = cfg->key.v,
        .n_certs = cfg->cert.n,
        .strict_sni = cfg->strict_sni,
        .ca_file = cfg->ca,
        .crl_file = cfg->crl,
        .verify_client = verify_client[cfg->verify_client],
        .min_version = tls_min(cfg),
        .ciphers = cfg->ciphers,
        .groups = cfg->groups,
    };
}

/* The files the server contexts are built from, by content: a SIGHUP rebuilds the contexts
 * (a new certificate generation in every worker) only when one of them changed. */
#define TLS_FILES_MAX (2 * SLB_MAX_CERTS + 2)
struct tls_files {
    const char *flag[TLS_FILES_MAX], *path[TLS_FILES_MAX];
    uint64_t hash[TLS_FILES_MAX]; /* SipHash of the bytes; 0 with !readable */
    bool readable[TLS_FILES_MAX];
    unsigned n;
};
static struct tls_files tls_in_force; /* what the server contexts in force were built from */

static void tls_file_add(struct tls_files *f, const char *flag, const char *path)
{
    static const struct slb_siphash_key key; /* change detection only: any fixed key */
    unsigned i = f->n++;
    f->flag[i] = flag;
    f->path[i] = path;
    f->hash[i] = 0;
    f->readable[i] = false;
    FILE *in = fopen(path, "rb");
    if (in == NULL)
        return;
    size_t len = 0, cap = 0;
    char *buf = NULL;
    bool ok = true;
    while (ok) {
        if (len == cap) {
            char *b = cap < (64u << 20) ? realloc(buf, cap ? 2 * cap : 65536) : NULL;
            ok = b != NULL;
            if (!ok)
                break;
            buf = b;
            cap = cap ? 2 * cap : 65536;
        }
        size_t got = fread(buf + len, 1, cap - len, in);
        len += got;
        if (got == 0)
            break;
    }
    ok = ok && !ferror(in);
    fclose(in);
    if (ok) {
        f->hash[i] = slb_siphash(&key, buf, len);
        f->readable[i] = true;
    }
    free(buf);
}

static void tls_files_read(const struct slb_config *cfg, struct tls_files *f)
{
    f->n = 0;
    for (unsigned i = 0; i < cfg->cert.n; i++) {
        tls_file_add(f, "--cert", cfg->cert.v[i]);
        tls_file_add(f, "--key", cfg->key.v[i]);
    }
    if (cfg->ca)
        tls_file_add(f, "--ca", cfg->ca);
    if (cfg->crl)
        tls_file_add(f, "--crl", cfg->crl);
}

/* "--cert a.pem, --crl c.pem": the files of now that differ from was (at most len bytes). */
static bool tls_files_changed(const struct tls_files *was, const struct tls_files *now, char *out,
                              size_t len)
{
    bool any = false;
    size_t used = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < now->n; i++) {
        if (i < was->n && was->readable[i] && now->readable[i] && was->hash[i] == now->hash[i])
            continue;
        any = true;
        if (used < len) {
            int k = snprintf(out + used, len - used, "%s%s %s%s", used ? ", " : "", now->flag[i],
                             now->path[i], now->readable[i] ? "" : " (unreadable)");
            used += k > 0 ? (size_t)k : 0;
        }
    }
    return any;
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
        .groups = cfg->groups,
    };
    /* Before the contexts read them: a file replaced meanwhile counts as changed later. */
    tls_files_read(cfg, &tls_in_force);
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

/* SIGHUP, TLS part: when a --cert, --key, --ca or --crl file changed (ACME renewals, a new
 * CRL), new server contexts for new clients of every worker; all or nothing. Established
 * sessions keep the context they started on. */
static void reload_tls(const struct slb_config *cfg, struct slb_worker **w, unsigned n)
{
    struct tls_files now;
    tls_files_read(cfg, &now);
    char changed[512];
    if (!tls_files_changed(&tls_in_force, &now, changed, sizeof(changed))) {
        slb_log(SLB_LOG_INFO, "SIGHUP: certificate, key, CA and CRL files unchanged: TLS "
                              "contexts kept");
        return;
    }
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
        return;
    }
    for (unsigned i = 0; i < n; i++)
        slb_worker_set_server_ctx(w[i], fresh[i]);
    tls_in_force = now;
    slb_log(SLB_LOG_INFO, "SIGHUP: re-read --cert %s and --key %s%s (changed: %s)", cfg->cert.v[0],
            cfg->key.v[0], cfg->cert.n > 1 ? " and the other pairs" : "", changed);
}

/* SIGHUP: TLS files, then the backends file when there is one. */

#define FAILURE_POLL_MS 200L
#define READY_WAIT_MS   5000u /* READY=1 at the latest this long after start, probed or not */
#define HUNG_MIN_MS     500u  /* a worker whose loop has not turned for this long is hung */

/* systemd's view (sd_notify.h): READY=1 once every worker runs and the first probe round
 * is done, then WATCHDOG=1 every half interval but only while every worker's loop turns,
 * so a hung worker stops the pings and systemd restarts the service. */
struct sd_state {
    bool ready;
    uint64_t start_ms, watchdog_ms, last_ping_ms, hung_logged_ms;
};

static void sd_tick(struct sd_state *sd, struct slb_worker **w, unsigned n)
{
    uint64_t now = slb_clock_ms();
    if (!sd->ready) {
        bool running = true;
        for (unsigned i = 0; i < n; i++)
            running = running && slb_worker_running(w[i]);
        pthread_mutex_lock(&control_lock);
        bool probed = slb_health_first_round_done(health, in_force);
        pthread_mutex_unlock(&control_lock);
        if (running && (probed || now - sd->start_ms >= READY_WAIT_MS)) {
            slb_sd_notify("READY=1\nSTATUS=relaying");
            sd->ready = true;
        }
    }
    if (!sd->watchdog_ms || now - sd->last_ping_ms < sd->watchdog_ms / 2)
        return;
    uint64_t hung_after = sd->watchdog_ms / 2 > HUNG_MIN_MS ? sd->watchdog_ms / 2 : HUNG_MIN_MS;
    for (unsigned i = 0; i < n; i++) {
        uint64_t beat = slb_worker_heartbeat_ms(w[i]);
        if (beat && now > beat + hung_after) {
            if (now - sd->hung_logged_ms >= 1000) {
                slb_log(SLB_LOG_ERROR,
                        "worker %u has not made progress for %llu ms: no "
                        "watchdog ping",
                        i, (unsigned long long)(now - beat));
                sd->hung_logged_ms = now;
            }
            return;
        }
    }
    slb_sd_notify("WATCHDOG=1");
    sd->last_ping_ms = now;
}

static bool any_thread_failed(struct slb_worker **w, unsigned n, struct slb_health *h)
{
    for (unsigned i = 0; i < n; i++)
        if (slb_worker_failed(w[i]))
            return true;
    return slb_health_failed(h);
}

/* Hands new backends to the health checker (which publishes them) and makes them the
 * ones in force. Under control_lock. */
static void put_in_force(struct slb_backends *fresh)
{
    slb_health_reload(health, slb_backends_ref(fresh));
    slb_backends_unref(in_force);
    in_force = fresh;
}

/* ---- keys: --secret-file, or random ------------------------------------------------------ */

/* The secrets in force (main thread only), to tell a re-read that changed nothing. */
static struct slb_secrets secrets_in_force;

/* What the secrets become: MAC keys for the proxy (self) and TLS ticket keys. */
static int derive_keys(const struct slb_secrets *sec, struct slb_siphash_key *mac)
{
    uint8_t tickets[SLB_SECRETS_MAX][SLB_TLS_TICKET_KEY_BYTES];
    int rc = 0;
    for (unsigned i = 0; i < sec->n && rc == 0; i++) {
        rc = slb_secret_mac_key(sec->key[i], &mac[i]);
        if (rc == 0)
            rc = slb_secret_ticket_key(sec->key[i], tickets[i]);
    }
    if (rc == 0)
        rc = slb_tls_set_ticket_keys(tickets, sec->n);
    explicit_bzero(tickets, sizeof(tickets));
    return rc;
}

/* SIGHUP: a changed --secret-file goes to every worker (they take it within a refresh);
 * an unreadable or invalid one keeps the keys in force. */
static void reload_secrets(const struct slb_config *cfg, struct slb_worker **w, unsigned n,
                           const char *who)
{
    if (!cfg->secret_file)
        return;
    static struct slb_secrets fresh;
    char err[512];
    if (slb_secrets_read(cfg->secret_file, &fresh, err, sizeof(err)) < 0) {
        slb_log(SLB_LOG_ERROR, "%s: --secret-file rejected, keys in force kept: %s", who, err);
        return;
    }
    if (!memcmp(&fresh, &secrets_in_force, sizeof(fresh))) {
        explicit_bzero(&fresh, sizeof(fresh));
        return;
    }
    struct slb_siphash_key mac[SLB_SECRETS_MAX];
    if (derive_keys(&fresh, mac) < 0) {
        slb_log(SLB_LOG_ERROR, "%s: --secret-file: cannot derive keys, keys in force kept", who);
        return;
    }
    for (unsigned i = 0; i < n; i++)
        if (slb_worker_set_keys(w[i], mac, fresh.n) < 0)
            slb_log(SLB_LOG_ERROR, "%s: out of memory handing new keys to worker %u", who, i);
    explicit_bzero(mac, sizeof(mac));
    secrets_in_force = fresh;
    explicit_bzero(&fresh, sizeof(fresh));
    slb_log(SLB_LOG_INFO, "%s: re-read --secret-file %s: %u keys, the first signs", who,
            cfg->secret_file, secrets_in_force.n);
}

/* At start: the keys of --secret-file, or one random key. Returns 0, or 2 (bad usage, the
 * reason printed). */
static int boot_keys(const struct slb_config *cfg, struct slb_proxy_self *self)
{
    struct slb_siphash_key mac[SLB_SECRETS_MAX];
    unsigned n = 1;
    uint32_t boot_id;
    if (getrandom(&boot_id, sizeof(boot_id), 0) != sizeof(boot_id))
        return 1;
    if (cfg->secret_file) {
        char err[512];
        if (slb_secrets_read(cfg->secret_file, &secrets_in_force, err, sizeof(err)) < 0) {
            fprintf(stderr, "sipslb: --secret-file %s\n", err);
            return 2;
        }
        if (derive_keys(&secrets_in_force, mac) < 0) {
            fprintf(stderr, "sipslb: --secret-file: cannot derive keys\n");
            return 1;
        }
        n = secrets_in_force.n;
        slb_log(SLB_LOG_INFO, "--secret-file %s: %u keys, the first signs", cfg->secret_file, n);
    } else {
        if (getrandom(&mac[0], sizeof(mac[0]), 0) != sizeof(mac[0]))
            return 1;
        if (cfg->advertise)
            slb_log(SLB_LOG_WARN,
                    "--advertise without --secret-file: keys are random, so the Path and "
                    "Record-Route tokens registrars and dialogs hold will not verify after a "
                    "restart (403), and no other instance accepts them or resumes our TLS "
                    "sessions");
    }
    slb_proxy_self_set_keys(self, mac, n, boot_id);
    explicit_bzero(mac, sizeof(mac));
    return 0;
}

/* SIGHUP, or POST /reload (who names the caller). Returns 0, or -EINVAL with err set. */
static int reload(const struct slb_config *cfg, struct slb_worker **w, unsigned n, const char *who,
                  char *err, size_t errlen)
{
    pthread_mutex_lock(&control_lock);
    reload_tls(cfg, w, n);
    reload_secrets(cfg, w, n, who);
    int rc = 0;
    /* A new backends object, never an edit of the one the workers read. */
    struct slb_backends *fresh;
    if (!cfg->backends_file) {
        snprintf(err, errlen, "no --backends-file: certificates only");
    } else if (slb_config_reload_backends(cfg, in_force, &fresh, err, errlen) < 0) {
        slb_log(SLB_LOG_ERROR, "%s: backends reload rejected, running configuration kept: %s", who,
                err);
        rc = -EINVAL;
    } else {
        slb_log(SLB_LOG_INFO, "%s: re-read %s", who, cfg->backends_file);
        put_in_force(fresh);
    }
    pthread_mutex_unlock(&control_lock);
    return rc;
}

/* ---- the admin listener's calls (admin.h), on its thread ----------------------------------- */

struct admin_ctx {
    const struct slb_config *cfg;
    struct slb_worker **w;
    unsigned n;
};

static const struct slb_backends *admin_backends(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&control_lock);
    const struct slb_backends *b = slb_backends_ref(in_force);
    pthread_mutex_unlock(&control_lock);
    return b;
}

/* Drain or weight of one backend, by name: a new backends object like a reload's (new
 * table, no dialog moved). A later backends-file reload sets what the file says. */
static int admin_change(const char *name, int drain, long weight, const char *who)
{
    if (weight != -1 && (weight < 1 || weight > SLB_MAX_WEIGHT))
        return -EINVAL;
    pthread_mutex_lock(&control_lock);
    int slot = -1;
    for (unsigned i = 0; i < in_force->attrs.n; i++)
        if (in_force->attrs.present[i] && !strcmp(in_force->spec[i].name, name))
            slot = (int)i;
    struct slb_backends *fresh = slot < 0 ? NULL : malloc(sizeof(*fresh));
    if (fresh) {
        memcpy(fresh, in_force, sizeof(*fresh));
        atomic_init(&fresh->refs, 1);
        if (drain >= 0)
            fresh->attrs.drain[slot] = drain;
        if (weight != -1)
            fresh->attrs.weight[slot] = (uint32_t)weight;
        put_in_force(fresh);
        if (drain >= 0)
            slb_log(SLB_LOG_INFO, "admin: %s %s backend %s", who, drain ? "drains" : "undrains",
                    name);
        else
            slb_log(SLB_LOG_INFO, "admin: %s sets the weight of backend %s to %ld", who, name,
                    weight);
    }
    pthread_mutex_unlock(&control_lock);
    return slot < 0 ? -ENOENT : fresh ? 0 : -ENOMEM;
}

static int admin_set_drain(void *ctx, const char *name, bool drain, const char *who)
{
    (void)ctx;
    return admin_change(name, drain, -1, who);
}

static int admin_set_weight(void *ctx, const char *name, long weight, const char *who)
{
    (void)ctx;
    return admin_change(name, -1, weight, who);
}

static int admin_reload(void *ctx, const char *who, char *err, size_t errlen)
{
    struct admin_ctx *a = ctx;
    char by[96];
    snprintf(by, sizeof(by), "admin %s", who);
    slb_sd_notify("RELOADING=1");
    int rc = reload(a->cfg, a->w, a->n, by, err, errlen);
    slb_sd_notify("READY=1");
    return rc;
}

/* The token of --admin-token-file: its first line. Returns 0, or -1 with the reason logged. */
static int read_token(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "sipslb: --admin-token-file %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!fgets(out, (int)cap, f))
        out[0] = 0;
    fclose(f);
    out[strcspn(out, "\r\n")] = 0;
    if (strlen(out) < 16) {
        fprintf(stderr,
                "sipslb: --admin-token-file %s: the token must be at least 16 "
                "characters on the first line\n",
                path);
        return -1;
    }
    return 0;
}

/* Every worker may hold --max-conns clients plus its backend links and a few spares, and
 * the process needs some descriptors of its own. The soft limit is raised as far as the
 * hard one allows; if that is still short, --max-conns is lowered to fit (said loudly):
 * running out of descriptors at run time would refuse clients and look like backend
 * failures. */
static void fit_descriptors(struct slb_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    uint64_t links = (uint64_t)SLB_MAX_BACKENDS * (uint64_t)cfg->backend_conns;
    uint64_t per_worker = (uint64_t)cfg->max_conns + links + 16;
    uint64_t need = per_worker * cfg->n_workers + 64 + links;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        struct rlimit raised = {want, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl.rlim_cur = want;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    uint64_t spare = rl.rlim_cur > 64 + links ? rl.rlim_cur - 64 - links : 0;
    uint64_t fit = spare / cfg->n_workers > links + 16 ? spare / cfg->n_workers - links - 16 : 16;
    slb_log(SLB_LOG_WARN,
            "RLIMIT_NOFILE is %llu but --max-conns %lld x %u workers needs %llu descriptors: "
            "--max-conns lowered to %llu per worker (raise the limit, e.g. LimitNOFILE=)",
            (unsigned long long)rl.rlim_cur, (long long)cfg->max_conns, cfg->n_workers,
            (unsigned long long)need, (unsigned long long)fit);
    cfg->max_conns = (int64_t)(fit < 16 ? 16 : fit);
}

/* The per-source table, shared by the workers. */
static int make_limits(const struct slb_config *cfg, struct slb_limit_table *t)
{
    struct slb_limit_conf lc = {
        .conns = (uint32_t)cfg->limit_conns,
        .conn_rate = (uint32_t)cfg->limit_conn_rate,
        .handshake_rate = (uint32_t)cfg->limit_handshake_rate,
        .ban_after = (uint32_t)cfg->ban_after,
        .ban_ms = (uint32_t)cfg->ban_time_ms,
    };
    struct slb_siphash_key key;
    if (getrandom(&key, sizeof(key), 0) != sizeof(key))
        return -EIO;
    /* Room for every client of every worker to come from its own address. */
    uint64_t entries = 2 * (uint64_t)cfg->max_conns * cfg->n_workers;
    return slb_limit_table_init(t, &lc, &key,
                                entries > (1u << 22) ? (1u << 22) : (uint32_t)entries);
}

/* ---- backends from DNS ------------------------------------------------------------------- */

/* A DNS answer for group g (the watch thread): applied like a backends-file reload. */
static void dns_apply(void *ctx, unsigned g, const struct slb_dns_result *r)
{
    const struct slb_config *cfg = ctx;
    char err[512] = "";
    pthread_mutex_lock(&control_lock);
    struct slb_backends *fresh;
    int rc = slb_config_dns_backends(in_force, g, r, &fresh, err, sizeof(err));
    if (rc > 0) {
        put_in_force(fresh);
        slb_log(SLB_LOG_INFO, "DNS %s: %u targets from %s records: backends changed",
                cfg->dns_names[g], r->n, r->from_srv ? "SRV" : "A/AAAA");
    }
    pthread_mutex_unlock(&control_lock);
    if (err[0])
        slb_log(rc < 0 ? SLB_LOG_ERROR : SLB_LOG_WARN, "DNS %s: %s", cfg->dns_names[g], err);
}

/* At start, before the health checker: every DNS group resolved once (a failure stops the
 * start: there would be nothing to route to), its first TTL kept for the watch. */
static int dns_boot(const struct slb_config *cfg, uint32_t *ttl_s)
{
    static struct slb_dns_result r;
    for (unsigned g = 0; g < cfg->n_dns; g++) {
        char err[512] = "";
        int rc = slb_dns_resolve_group(cfg, g, &r, err, sizeof(err));
        struct slb_backends *fresh = NULL;
        if (rc >= 0)
            rc = slb_config_dns_backends(in_force, g, &r, &fresh, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "sipslb: --backend sips:%s: %s\n", cfg->dns_names[g], err);
            return -1;
        }
        if (fresh) {
            slb_backends_unref(in_force);
            in_force = fresh;
        }
        ttl_s[g] = r.ttl_s;
        slb_log(SLB_LOG_INFO, "DNS %s: %u targets from %s records (TTL %u s)", cfg->dns_names[g],
                r.n, r.from_srv ? "SRV" : "A/AAAA", r.ttl_s);
    }
    return 0;
}

/* ---- upgrades: listening sockets handed over, graceful drain ------------------------------ */

static bool same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
    }
    return false;
}

/* The sockets an older process handed over, each to the --listen address it is bound to,
 * spread over the workers; one that matches no --listen address is closed (its queued
 * connections are lost: the configuration changed). */
static void adopt_listeners(const struct slb_config *cfg, struct slb_worker **w, unsigned n,
                            const int *fds, unsigned nf)
{
    unsigned next[SLB_MAX_LISTEN] = {0}, taken = 0;
    for (unsigned k = 0; k < nf; k++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int idx = -1;
        if (getsockname(fds[k], (struct sockaddr *)&sa, &len) == 0)
            for (unsigned i = 0; i < cfg->n_listen && idx < 0; i++)
                if (same_address(&sa, &cfg->listen_addrs[i].sa))
                    idx = (int)i;
        if (idx < 0 || slb_worker_adopt_listener(w[next[idx]++ % n], fds[k], (unsigned)idx) < 0) {
            slb_log(SLB_LOG_WARN, "--handover-socket: a listening socket handed over matches no "
                                  "--listen address (or too many): closed");
            close(fds[k]);
            continue;
        }
        taken++;
    }
    slb_log(SLB_LOG_INFO, "--handover-socket %s: took over %u listening sockets",
            cfg->handover_socket, taken);
}

struct upgrade {
    int take_conn; /* to the older process, until we run ("ready") */
    int listen_fd; /* ours, for a newer process */
    int give_conn; /* to a newer process we handed our sockets to */
    bool draining;
    uint64_t drain_deadline_ms;
};

static void begin_drain(const struct slb_config *cfg, struct slb_worker **w, unsigned n,
                        struct upgrade *u, const char *why)
{
    if (u->draining)
        return;
    u->draining = true;
    u->drain_deadline_ms = slb_clock_ms() + cfg->drain_timeout_ms;
    slb_sd_notify("STOPPING=1\nSTATUS=draining");
    for (unsigned i = 0; i < n; i++)
        slb_worker_drain(w[i]);
    slb_log(SLB_LOG_INFO,
            "%s: not accepting any more; closing client connections as they go "
            "idle, for at most %llu ms",
            why, (unsigned long long)cfg->drain_timeout_ms);
}

/* While draining: true when every worker has closed every client connection, or the
 * timeout passed (what is cut is logged here and counted by the workers as they stop). */
static bool drain_done(struct slb_worker **w, unsigned n, const struct upgrade *u)
{
    uint32_t clients = 0, awaiting = 0;
    bool started = true;
    for (unsigned i = 0; i < n; i++) {
        uint32_t c, a;
        started = slb_worker_drain_status(w[i], &c, &a) && started;
        clients += c;
        awaiting += a;
    }
    if (started && clients == 0) {
        slb_log(SLB_LOG_INFO, "drained: every client connection closed idle");
        return true;
    }
    if (slb_clock_ms() < u->drain_deadline_ms)
        return false;
    slb_log(SLB_LOG_WARN,
            "--drain-timeout: cutting %u client connections with %u requests "
            "awaiting a final response",
            clients, awaiting);
    return true;
}

/* One look at the handover socket and the newer process we serve (main loop). */
static void upgrade_tick(const struct slb_config *cfg, struct slb_worker **w, unsigned n,
                         struct upgrade *u)
{
    if (u->listen_fd >= 0 && !u->draining && u->give_conn < 0) {
        int fds[SLB_HANDOVER_FDS_MAX];
        unsigned nf = 0;
        for (unsigned i = 0; i < n; i++)
            nf += slb_worker_listener_fds(w[i], fds + nf, SLB_HANDOVER_FDS_MAX - nf);
        char who[256] = "";
        int c = slb_handover_serve(u->listen_fd, fds, nf, who, sizeof(who));
        if (c >= 0) {
            u->give_conn = c;
            slb_log(SLB_LOG_INFO, "--handover-socket: %u listening sockets handed to %s", nf, who);
        } else if (c != -EAGAIN) {
            slb_log(SLB_LOG_WARN, "--handover-socket: %s", who[0] ? who : strerror(-c));
        }
    }
    if (u->give_conn >= 0) {
        int r = slb_handover_poll_ready(u->give_conn);
        if (r != 0) {
            close(u->give_conn);
            u->give_conn = -1;
        }
        if (r > 0)
            begin_drain(cfg, w, n, u, "the new process runs");
        else if (r < 0)
            slb_log(SLB_LOG_WARN, "--handover-socket: the new process went away before it ran; "
                                  "still serving");
    }
}

int main(int argc, char **argv)
{
    static struct slb_config cfg;
    if (argc == 2 && !strcmp(argv[1], "--help-man")) { /* hidden: the package build's */
        slb_about_man(stdout);
        return 0;
    }
    int rc = slb_config_load(&cfg, argc, argv);
    if (rc == 1) {
        if (cfg.version)
            slb_about_version(stdout);
        return 0;
    }
    if (rc != 0)
        return rc;
    if (cfg.print_config) {
        slb_config_print(&cfg, stdout);
        return 0;
    }
    slb_log_level_max = (enum slb_log_level)cfg.log_level;
    slb_log_setup((enum slb_log_format)cfg.log_format, (enum slb_log_target)cfg.log_target,
                  fileno(stderr));
    fit_descriptors(&cfg);
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
    if (make_contexts(&cfg, n, sctx, cctx) < 0) {
        for (unsigned i = 0; i <= n; i++) {
            slb_tls_ctx_free(sctx[i]);
            slb_tls_ctx_free(cctx[i]);
        }
        free(sctx);
        free(cctx);
        free(w);
        slb_tls_cleanup();
        return 2;
    }

    in_force = slb_backends_new(&cfg);
    uint32_t dns_ttl_s[SLB_MAX_DNS_GROUPS];
    if (!in_force || dns_boot(&cfg, dns_ttl_s) < 0)
        return 1;
    static struct slb_router router;
    if (slb_router_init(&router, &cfg, in_force, n) < 0)
        return 1;
    health = slb_health_new(&cfg, &router, in_force, cctx[n], n);
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
    snprintf(sh.self.ws_sent_by, sizeof(sh.self.ws_sent_by), "%s", cfg.advertise_ws);
    sh.self.ws_sent_by_len = strlen(sh.self.ws_sent_by);
    sh.self.ws_plain = cfg.advertise_ws_plain;
    static struct slb_limit_table limits;
    static char admin_token[256];
    if (cfg.admin_token_file &&
        read_token(cfg.admin_token_file, admin_token, sizeof(admin_token)) < 0)
        return 2;
    int status_early = 0;
    if (make_limits(&cfg, &limits) < 0) {
        fprintf(stderr, "sipslb: cannot set up the per-source limits table\n");
        return 1;
    }
    sh.limits = &limits;
    if (getrandom(&sh.pending_key, sizeof(sh.pending_key), 0) != sizeof(sh.pending_key)) {
        fprintf(stderr, "sipslb: getrandom failed: %s\n", strerror(errno));
        return 1;
    }
    if ((rc = boot_keys(&cfg, &sh.self)) != 0)
        return rc;
    for (unsigned i = 0; i < n; i++) {
        w[i] = slb_worker_new(&sh, i, sctx[i], cctx[i]);
        if (!w[i]) {
            fprintf(stderr, "sipslb: out of memory creating worker %u\n", i);
            return 1;
        }
    }
    static struct upgrade up = {.take_conn = -1, .listen_fd = -1, .give_conn = -1};
    if (cfg.handover_socket) {
        int fds[SLB_HANDOVER_FDS_MAX];
        char herr[512] = "";
        int k = slb_handover_take(cfg.handover_socket, fds, SLB_HANDOVER_FDS_MAX, &up.take_conn,
                                  5000, herr, sizeof(herr));
        if (k >= 0)
            adopt_listeners(&cfg, w, n, fds, (unsigned)k);
        else if (k != -ENOENT && k != -ECONNREFUSED)
            slb_log(SLB_LOG_WARN, "--handover-socket: %s: opening our own listeners", herr);
    }

    /* Signals go to this thread only: block them before the workers inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct slb_threads workers;
    void **args = calloc(n, sizeof(void *));
    for (unsigned i = 0; i < n; i++)
        args[i] = w[i];
    slb_log(SLB_LOG_INFO,
            "sipslb starting: %u workers, %u listen addresses, %u backends, "
            "wolfSSL %s%s",
            n, cfg.n_listen, in_force->attrs.n, slb_tls_library_version(),
            slb_tls_library_has_asm() ? " (assembly)" : " (no assembly: slow)");
    if (cfg.n_dns && !(dns_watch = slb_dns_watch_start(&cfg, dns_ttl_s, dns_apply, &cfg))) {
        slb_log(SLB_LOG_ERROR, "cannot start the DNS thread");
        return 1;
    }
    struct slb_threads control;
    void *harg[1] = {health};
    if (slb_threads_start(&control, 1, false, slb_health_main, harg) != 0) {
        slb_log(SLB_LOG_ERROR, "cannot start the health checker");
        return 1;
    }
    rc = slb_threads_start(&workers, n, cfg.pin, slb_worker_main, args);
    if (rc != 0) {
        slb_log(SLB_LOG_ERROR, "cannot start workers: %s", strerror(rc < 0 ? -rc : rc));
        for (unsigned i = 0; i < n; i++)
            slb_worker_stop(w[i]);
        slb_threads_join(&workers, NULL);
        slb_health_stop(health);
        slb_threads_join(&control, NULL);
        return 1;
    }
    struct slb_admin *admin = NULL;
    static struct admin_ctx actx;
    actx = (struct admin_ctx){&cfg, w, n};
    if (cfg.admin) {
        char aerr[256];
        struct slb_admin_cfg ac = {
            .cfg = &cfg,
            .addr = &cfg.admin_addr,
            .unix_path = !strncmp(cfg.admin, "unix:", 5) ? cfg.admin + 5 : NULL,
            .token = admin_token[0] ? admin_token : NULL,
            .workers = w,
            .n_workers = n,
            .health = health,
            .start_time_s = (uint64_t)time(NULL),
            .dns = dns_watch,
            .ops = {&actx, admin_backends, admin_set_drain, admin_set_weight, admin_reload},
        };
        admin = slb_admin_start(&ac, aerr, sizeof(aerr));
        if (!admin) {
            slb_log(SLB_LOG_ERROR, "--admin %s: %s", cfg.admin, aerr);
            status_early = 1;
        } else {
            slb_log(SLB_LOG_INFO, "admin listener on %s%s", cfg.admin,
                    admin_token[0] ? "" : " (read-only: no --admin-token-file)");
        }
    }
    struct sd_state sd = {.start_ms = slb_clock_ms(), .watchdog_ms = slb_sd_watchdog_usec() / 1000};
    for (; !status_early;) {
        sd_tick(&sd, w, n);
        if (sd.ready && cfg.handover_socket && up.listen_fd < 0 && !up.draining) {
            /* We run: our own handover socket first (so the next upgrade finds us), then the
             * older process is told, and drains. */
            char herr[512];
            up.listen_fd = slb_handover_listen(cfg.handover_socket, herr, sizeof(herr));
            if (up.listen_fd < 0) {
                slb_log(SLB_LOG_ERROR, "--handover-socket %s", herr);
                cfg.handover_socket = NULL;
            }
            if (up.take_conn >= 0 && slb_handover_ready(up.take_conn) == 0)
                slb_log(SLB_LOG_INFO, "--handover-socket: told the older process we run");
            up.take_conn = -1;
        }
        upgrade_tick(&cfg, w, n, &up);
        if (up.draining && drain_done(w, n, &up))
            break;
        /* Signals, and every FAILURE_POLL_MS a look at whether a thread stopped on an error
         * of its own (it logged why): then everything stops and the exit code is 1. */
        const struct timespec poll = {0, FAILURE_POLL_MS * 1000000L};
        int sig = sigtimedwait(&set, NULL, &poll);
        if (sig < 0) {
            if (errno == EAGAIN && any_thread_failed(w, n, health)) {
                slb_log(SLB_LOG_ERROR, "a worker or the health checker failed: stopping");
                break;
            }
            continue;
        }
        if (sig == SIGUSR1) {
            write_stats(&cfg, w, n);
            continue;
        }
        if (sig == SIGHUP) {
            char err[512];
            slb_sd_notify("RELOADING=1");
            reload(&cfg, w, n, "SIGHUP", err, sizeof(err));
            slb_sd_notify("READY=1");
            continue;
        }
        if ((sig == SIGTERM || sig == SIGINT) && !up.draining && cfg.drain_timeout_ms) {
            begin_drain(&cfg, w, n, &up, sig == SIGTERM ? "SIGTERM" : "SIGINT");
            continue;
        }
        slb_log(SLB_LOG_INFO, "signal %d: stopping%s", sig, up.draining ? " at once" : "");
        break;
    }
    if (up.listen_fd >= 0)
        close(up.listen_fd);
    if (up.give_conn >= 0)
        close(up.give_conn);
    if (up.take_conn >= 0)
        close(up.take_conn);
    slb_sd_notify("STOPPING=1");
    slb_admin_stop(admin); /* before the DNS thread: /metrics reads its counts */
    slb_dns_watch_counts(dns_watch, &dns_ok_final, &dns_failed_final);
    slb_dns_watch_stop(dns_watch);
    dns_watch = NULL;
    for (unsigned i = 0; i < n; i++)
        slb_worker_stop(w[i]);
    void **results = calloc(n, sizeof(void *));
    slb_threads_join(&workers, results);
    slb_health_stop(health);
    void *hres = NULL;
    slb_threads_join(&control, &hres);
    int status = status_early;
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
    slb_backends_unref(in_force);
    slb_limit_table_deinit(&limits);
    if (hres)
        status = 1;
    slb_tls_cleanup();
    free(results);
    free(args);
    free(w);
    free(sctx);
    free(cctx);
    slb_config_free(&cfg);
    return status;
}
