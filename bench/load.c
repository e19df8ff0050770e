/* sipslb-load: a SIP-over-TLS load generator, built on the same engine as sipslb (io_uring
 * loop, wolfSSL over memory buffers, the zero-copy SIP scanner) so that it is never the
 * bottleneck of a measurement. It opens TLS connections to a target, runs OPTIONS, REGISTER
 * or INVITE/ACK/BYE units (or a weighted mix) in a closed loop (N in flight per connection)
 * or an open loop (a fixed rate with a ramp), optionally over a new TLS connection per unit
 * (--handshake, with --resume for session tickets), records every transaction's latency in
 * log-linear histograms, and reports throughput, failures, latency percentiles and its own
 * CPU time per call.
 *
 * This file: flags, checks, the main thread (starts workers, prints a progress line a
 * second to stderr, turns SIGINT/SIGTERM into drain then abort) and the final report. The
 * workers are in load_worker.c, the messages in load_sip.c.
 *
 * "Call" in the counters means one unit of load, whatever its kind: a whole INVITE..BYE
 * call, or one OPTIONS or REGISTER transaction. --rate and --count count these units.
 *
 * Exit status: 0 every unit succeeded; 1 a unit failed or timed out, nothing completed,
 * the target could not be reached, or a worker could not start; 2 bad usage.
 *
 * JSON (--json: one object on stdout at the end; stable keys, new keys may be added):
 *   version               1
 *   target, scenario      as given ("options", "register", "call", "mixed")
 *   mix                   {"options": w, "register": w, "call": w} weights in use
 *   mode                  "closed" or "open"
 *   handshake, resume     booleans
 *   workers, conns        counts; outstanding (closed loop, per connection), rate (open
 *                         loop, calls/s), ramp_s, timeout_s
 *   tls                   {"version", "cipher", "group"} of the first handshake
 *   elapsed_s             from the start of the load to the end of the last call
 *   calls                 {"started", "ok", "failed", "per_s" (ok / elapsed_s),
 *                          "ok_by_kind": {"options", "register", "call"}}
 *   transactions          {"sent", "ok", "failed", "per_s"} (INVITE, BYE, OPTIONS,
 *                          REGISTER; ACK is not a transaction)
 *   messages              {"sent", "received", "provisional", "unmatched",
 *                          "retransmitted_2xx", "bad", "requests_received"}
 *   failures              calls failed, by kind: {"timeout", "status", "connection",
 *                          "tls", "local", "aborted"}
 *   status                final responses received by code: {"200": n, "503": n, ...}
 *   connections           {"attempts", "handshakes", "resumed", "connect_failed",
 *                          "tls_failed", "lost"}
 *   latency_us            per histogram {"count", "min", "mean", "p50", "p90", "p99",
 *                          "p99_9", "max"} for "invite" (INVITE -> 200), "bye", "options",
 *                          "register", "transactions" (those four merged), "call" (a whole
 *                          successful unit) and "handshake" (TCP connect -> TLS done)
 *   cpu                   {"user_s", "system_s", "total_s" (this process, whole run,
 *                          connection set-up included), "workers_s" (worker threads, whole
 *                          run), "load_s" (worker threads from the start of the load to the
 *                          end of the last call), and per call / transaction / SIP message
 *                          (sent + received) of load_s: "us_per_call",
 *                          "us_per_transaction", "us_per_message"}
 *   gave_up               true when no connection could be kept open
 *   exit_status           what the process returns
 */
#include "bench/load.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "balancer/config.h"
#include "core/flags.h"
#include "core/log.h"
#include "io/threads.h"
#include "tls/tls.h"

static const char *const verify_names[] = {"require", "none", NULL};
static const char *const tls_names[] = {"any", "1.2", "1.3", NULL};
static const char *const scenario_names[] = {"options", "register", "call", "mixed", NULL};
static const char *const kind_names[LOAD_KIND__COUNT] = {"options", "register", "call"};
static const char *const fail_names[LOAD_FAIL__COUNT] = {"timeout", "status", "connection",
                                                         "tls",     "local",  "aborted"};

#define F(n, t, f, d, lo, hi, ch, a, h)                                                            \
    {                                                                                              \
        n, t, offsetof(struct load_cfg, f), d, lo, hi, ch, a, h                                    \
    }
static const struct slb_flag flags[] = {
    F("target", SLB_FLAG_STR, target, NULL, 0, 0, NULL, "HOST:PORT",
      "the SIPS server or balancer to load (required)"),
    F("server-name", SLB_FLAG_STR, server_name, NULL, 0, 0, NULL, "NAME",
      "name for SNI and the certificate check (default: the target's host)"),
    F("ca", SLB_FLAG_STR, ca, NULL, 0, 0, NULL, "FILE",
      "CAs (PEM) the server certificate must chain to"),
    F("verify", SLB_FLAG_ENUM, verify, "require", 0, 0, verify_names, "MODE",
      "check the server certificate"),
    F("cert", SLB_FLAG_STR, cert, NULL, 0, 0, NULL, "FILE",
      "client certificate chain (mutual TLS)"),
    F("key", SLB_FLAG_STR, key, NULL, 0, 0, NULL, "FILE", "its private key"),
    F("tls", SLB_FLAG_ENUM, tls, "any", 0, 0, tls_names, "VERSION", "TLS versions offered"),
    F("conns", SLB_FLAG_INT, conns, "1", 1, 1000000, NULL, "C",
      "TLS connections, spread over the workers (--handshake, closed loop: calls in"
      " parallel, each on a new connection of its own)"),
    F("scenario", SLB_FLAG_ENUM, scenario, "call", 0, 0, scenario_names, "NAME",
      "what a call is: an OPTIONS ping, a REGISTER, INVITE/ACK/BYE, or a --mix of them"),
    F("mix", SLB_FLAG_STR, mix, "options=1,register=1,call=8", 0, 0, NULL, "KIND=W,...",
      "weights for --scenario mixed"),
    F("rate", SLB_FLAG_INT, rate, "0", 0, 10000000, NULL, "R",
      "open loop: start R calls per second in all (0: closed loop)"),
    F("ramp", SLB_FLAG_MS, ramp_ms, "0", 0, 3600000, NULL, "DURATION",
      "open loop: rise linearly from 0 to --rate over this time"),
    F("outstanding", SLB_FLAG_INT, outstanding, "0", 0, 100000, NULL, "N",
      "closed loop: calls in flight per connection (1 when --rate is not given)"),
    F("duration", SLB_FLAG_MS, duration_ms, "0", 0, 86400000, NULL, "DURATION",
      "start calls for this long (0: no limit; --duration and/or --count is required)"),
    F("count", SLB_FLAG_INT, count, "0", 0, INT64_C(1000000000000), NULL, "N",
      "start this many calls in all (0: no limit)"),
    F("max-duration", SLB_FLAG_MS, max_duration_ms, "10m", 1000, 86400000, NULL, "DURATION",
      "hard cap on the time calls are started"),
    F("timeout", SLB_FLAG_MS, timeout_ms, "5s", 1, 3600000, NULL, "DURATION",
      "per transaction, and per TCP connect + TLS handshake"),
    F("workers", SLB_FLAG_INT, workers, "1", 1, 64, NULL, "N",
      "threads, each with its own io_uring"),
    F("max-inflight", SLB_FLAG_INT, max_inflight, "0", 0, 100000000, NULL, "N",
      "open loop: call slots in all (0: rate x (timeout + 1 s)); more fail as 'local'"),
    F("json", SLB_FLAG_BOOL, json, "false", 0, 0, NULL, NULL,
      "print one JSON object on stdout at the end instead of the summary"),
    F("progress", SLB_FLAG_BOOL, progress, "false", 0, 0, NULL, NULL,
      "a progress line a second on stderr even when it is not a terminal"),
    F("handshake", SLB_FLAG_BOOL, handshake, "false", 0, 0, NULL, NULL,
      "a new TLS connection for every call (closed after it)"),
    F("resume", SLB_FLAG_BOOL, resume, "false", 0, 0, NULL, NULL,
      "resume TLS sessions with tickets on new connections"),
    F("wss", SLB_FLAG_BOOL, wss, "false", 0, 0, NULL, NULL,
      "SIP over secure WebSocket (RFC 7118) to a wss:// listener: the Upgrade after TLS, each "
      "message in a frame, as browsers do"),
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

static const char usage[] =
    "usage: sipslb-load --target HOST:PORT (--ca FILE | --verify none)\n"
    "                   (--duration DURATION | --count N) [flags]\n"
    "A SIP-over-TLS load generator: OPTIONS, REGISTER or INVITE/ACK/BYE calls, closed loop\n"
    "(--outstanding per connection) or open loop (--rate, --ramp), over persistent\n"
    "connections or a new one per call (--handshake, --resume). Prints a summary (or --json)\n"
    "with calls/s, failures by kind and status, latency percentiles and its own CPU per call.\n"
    "Exit status: 0 all calls succeeded, 1 some failed, 2 usage.\n"
    "Durations: 500ms, 10s, 5m, 1h (plain numbers are seconds).";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line naming the flag and the problem; returns the usage exit status. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sipslb-load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    return 2;
}

/* "options=1,register=1,call=8" into cfg->weight. */
static int parse_mix(struct load_cfg *cfg)
{
    char buf[256];
    if (strlen(cfg->mix) >= sizeof(buf))
        return usage_error("--mix: '%s' is too long", cfg->mix);
    strcpy(buf, cfg->mix);
    memset(cfg->weight, 0, sizeof(cfg->weight));
    uint32_t total = 0;
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq)
            return usage_error("--mix: '%s' is not KIND=WEIGHT", item);
        *eq = '\0';
        int k = -1;
        for (int i = 0; i < LOAD_KIND__COUNT; i++)
            if (!strcmp(item, kind_names[i]))
                k = i;
        if (k < 0)
            return usage_error("--mix: unknown kind '%s' (options, register, call)", item);
        char *end;
        errno = 0;
        unsigned long v = strtoul(eq + 1, &end, 10);
        if (errno || end == eq + 1 || *end || v > 1000 || eq[1] == '-')
            return usage_error("--mix: weight '%s' is not 0..1000", eq + 1);
        cfg->weight[k] = (uint32_t)v;
        total += (uint32_t)v;
    }
    if (!total)
        return usage_error("--mix: '%s' gives every kind weight 0", cfg->mix);
    return 0;
}

/* Checks the whole configuration and derives the rest. Returns 0 or an exit status. */
static int check_config(struct load_cfg *cfg)
{
    if (!cfg->target)
        return usage_error("--target HOST:PORT is required");
    struct slb_addr a;
    uint16_t port;
    if (slb_config_parse_hostport(cfg->target, &a, cfg->host, sizeof(cfg->host), &port) < 0)
        return usage_error("--target: cannot resolve '%s' as HOST:PORT", cfg->target);
    memcpy(&cfg->addr, &a.sa, sizeof(a.sa));
    cfg->addr_len = a.len;
    snprintf(cfg->hostport, sizeof(cfg->hostport), strchr(cfg->host, ':') ? "[%s]:%u" : "%s:%u",
             cfg->host, port);
    cfg->sni = cfg->server_name ? cfg->server_name : cfg->host;
    if (cfg->verify == LOAD_VERIFY_REQUIRE && !cfg->ca)
        return usage_error("--verify require needs --ca FILE (or give --verify none)");
    if (!cfg->cert != !cfg->key)
        return usage_error("--cert and --key go together");
    if (!cfg->duration_ms && !cfg->count)
        return usage_error("give --duration and/or --count");
    cfg->open_loop = cfg->rate > 0;
    if (cfg->open_loop && cfg->outstanding)
        return usage_error("--outstanding is for the closed loop; --rate makes it open");
    if (!cfg->open_loop && cfg->ramp_ms)
        return usage_error("--ramp needs --rate");
    if (!cfg->open_loop && !cfg->outstanding)
        cfg->outstanding = 1;
    if (cfg->handshake && cfg->outstanding > 1)
        return usage_error("--handshake carries one call per connection: drop --outstanding");
    if (cfg->conns < cfg->workers)
        return usage_error("--conns must be at least --workers");
    if (cfg->duration_ms > cfg->max_duration_ms)
        return usage_error("--duration is longer than --max-duration");
    if (cfg->scenario == LOAD_SC_MIXED)
        return parse_mix(cfg);
    memset(cfg->weight, 0, sizeof(cfg->weight));
    cfg->weight[cfg->scenario == LOAD_SC_OPTIONS    ? LOAD_KIND_OPTIONS
                : cfg->scenario == LOAD_SC_REGISTER ? LOAD_KIND_REGISTER
                                                    : LOAD_KIND_CALL] = 1;
    return 0;
}

static struct slb_tls_ctx *make_ctx(const struct load_cfg *cfg, char *err, size_t errlen)
{
    static const enum slb_tls_version vmin[] = {SLB_TLS_VERSION_DEFAULT, SLB_TLS_VERSION_1_2,
                                                SLB_TLS_VERSION_1_3};
    static const enum slb_tls_version vmax[] = {SLB_TLS_VERSION_DEFAULT, SLB_TLS_VERSION_1_2,
                                                SLB_TLS_VERSION_1_3};
    struct slb_tls_client_opts o = {
        .ca_file = cfg->ca,
        .verify_server =
            cfg->verify == LOAD_VERIFY_REQUIRE ? SLB_TLS_VERIFY_REQUIRE : SLB_TLS_VERIFY_NONE,
        .cert_file = cfg->cert,
        .key_file = cfg->key,
        .min_version = vmin[cfg->tls],
        .max_version = vmax[cfg->tls],
        .no_tickets = !cfg->resume,
    };
    return slb_tls_client_ctx_new(&o, err, errlen);
}

/* ---- the run ------------------------------------------------------------------------------ */

struct run {
    const struct load_cfg *cfg;
    unsigned n;
    struct load_worker **w;
    struct slb_tls_ctx **ctx; /* one per worker, freed after the workers */
    pthread_t main_thread;
    atomic_uint finished;
};

/* A worker's last act: wake the main thread. */
static void worker_done(void *arg)
{
    struct run *r = arg;
    atomic_fetch_add(&r->finished, 1);
    pthread_kill(r->main_thread, SIGUSR1);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rd(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Counts at the previous progress line, for per-second figures. */
struct progress_last {
    uint64_t done, lat_sum_us, lat_n;
};

static void progress_line(struct run *r, double t, struct progress_last *last)
{
    uint64_t started = 0, ok = 0, failed = 0, timeouts = 0, conns = 0, sum = 0, n = 0;
    for (unsigned i = 0; i < r->n; i++) {
        const struct load_progress *p = load_worker_progress(r->w[i]);
        started += rd(&p->started);
        ok += rd(&p->ok);
        failed += rd(&p->failed);
        timeouts += rd(&p->timeouts);
        conns += rd(&p->conns_open);
        sum += rd(&p->lat_sum_us);
        n += rd(&p->lat_n);
    }
    uint64_t done = ok + failed;
    uint64_t inflight = started > done ? started - done : 0;
    uint64_t dn = n - last->lat_n, dsum = sum - last->lat_sum_us;
    fprintf(stderr,
            "[%5.0fs] calls %" PRIu64 " ok %" PRIu64 " failed %" PRIu64 " (timeout %" PRIu64
            ") | %" PRIu64 "/s, mean %.0f us | in flight %" PRIu64 " | conns %" PRIu64 "\n",
            t, started, ok, failed, timeouts, done - last->done,
            dn ? (double)dsum / (double)dn : 0.0, inflight, r->cfg->handshake ? inflight : conns);
    *last = (struct progress_last){done, sum, n};
}

/* Waits for the workers, printing progress; SIGINT/SIGTERM: drain, a second one: abort. */
static void supervise(struct run *r, bool show, uint64_t t0)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    uint64_t next = t0 + 1000000000u;
    struct progress_last last = {0, 0, 0};
    int interrupts = 0;
    while (atomic_load(&r->finished) < r->n) {
        uint64_t now = mono_ns();
        if (now >= next) {
            if (show)
                progress_line(r, (double)(now - t0) / 1e9, &last);
            next += 1000000000u;
            continue;
        }
        uint64_t wait = next - now;
        struct timespec ts = {(time_t)(wait / 1000000000u), (long)(wait % 1000000000u)};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            interrupts++;
            for (unsigned i = 0; i < r->n; i++) {
                if (interrupts == 1)
                    load_worker_drain(r->w[i]);
                else
                    load_worker_abort(r->w[i]);
            }
            if (interrupts == 1)
                fputs("sipslb-load: stopping: finishing the calls in flight (again to abort)\n",
                      stderr);
        }
    }
}

/* ---- the report -------------------------------------------------------------------------- */

struct totals {
    struct load_stats s; /* summed; lat[] merged */
    struct slb_hist txn; /* invite + bye + options + register */
    double elapsed_s;
    double user_s, sys_s, workers_s; /* process, whole run; worker threads, whole run */
    double load_s;                   /* worker threads during the load: the per-call base */
    bool gave_up;
    int exit_status;
};

static void sum_stats(struct totals *t, struct run *r)
{
    struct load_stats *s = &t->s;
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < LOAD_LAT__COUNT; i++)
        slb_hist_init(&s->lat[i]);
    slb_hist_init(&t->txn);
    uint64_t start = 0, end = 0, cpu = 0, cpu_load = 0;
    for (unsigned k = 0; k < r->n; k++) {
        const struct load_stats *w = load_worker_stats(r->w[k]);
#define ADD(f) s->f += w->f
        ADD(started), ADD(ok), ADD(failed), ADD(txn_sent), ADD(txn_ok), ADD(txn_failed);
        ADD(msgs_sent), ADD(msgs_recv), ADD(provisional), ADD(unmatched), ADD(retrans_2xx);
        ADD(bad_msgs), ADD(requests_in), ADD(conn_attempts), ADD(connect_failed);
        ADD(tls_failed), ADD(handshakes), ADD(resumed), ADD(conn_lost);
#undef ADD
        for (int i = 0; i < LOAD_FAIL__COUNT; i++)
            s->fail[i] += w->fail[i];
        for (int i = 0; i < LOAD_KIND__COUNT; i++)
            s->ok_by_kind[i] += w->ok_by_kind[i];
        for (size_t i = 0; i < sizeof(s->status) / sizeof(s->status[0]); i++)
            s->status[i] += w->status[i];
        for (int i = 0; i < LOAD_LAT__COUNT; i++)
            slb_hist_merge(&s->lat[i], &w->lat[i]);
        if (w->load_start_ns && (!start || w->load_start_ns < start))
            start = w->load_start_ns;
        if (w->load_end_ns > end)
            end = w->load_end_ns;
        cpu += w->cpu_ns;
        cpu_load += w->cpu_load_ns;
        t->gave_up |= w->gave_up;
        if (!s->tls_version && w->tls_version) {
            s->tls_version = w->tls_version;
            s->tls_cipher = w->tls_cipher;
            s->tls_group = w->tls_group;
        }
    }
    for (int i = LOAD_LAT_INVITE; i <= LOAD_LAT_REGISTER; i++)
        slb_hist_merge(&t->txn, &s->lat[i]);
    t->elapsed_s = start && end > start ? (double)(end - start) / 1e9 : 0.0;
    t->workers_s = (double)cpu / 1e9;
    t->load_s = (double)cpu_load / 1e9;
}

static double per(double cpu_s, uint64_t n)
{
    return n ? cpu_s * 1e6 / (double)n : 0.0;
}

static double rate_of(uint64_t n, double s)
{
    return s > 0 ? (double)n / s : 0.0;
}

struct lat_row {
    const char *name;
    const struct slb_hist *h;
};

static int lat_rows(const struct totals *t, struct lat_row *rows)
{
    const struct load_stats *s = &t->s;
    int n = 0;
    rows[n++] = (struct lat_row){"invite", &s->lat[LOAD_LAT_INVITE]};
    rows[n++] = (struct lat_row){"bye", &s->lat[LOAD_LAT_BYE]};
    rows[n++] = (struct lat_row){"options", &s->lat[LOAD_LAT_OPTIONS]};
    rows[n++] = (struct lat_row){"register", &s->lat[LOAD_LAT_REGISTER]};
    rows[n++] = (struct lat_row){"transactions", &t->txn};
    rows[n++] = (struct lat_row){"call", &s->lat[LOAD_LAT_UNIT]};
    rows[n++] = (struct lat_row){"handshake", &s->lat[LOAD_LAT_HANDSHAKE]};
    return n;
}

static void print_summary(const struct load_cfg *cfg, const struct totals *t, FILE *f)
{
    const struct load_stats *s = &t->s;
    double cpu = t->user_s + t->sys_s;
    fprintf(f, "sipslb-load: %s to %s, %s loop", scenario_names[cfg->scenario], cfg->target,
            cfg->open_loop ? "open" : "closed");
    if (cfg->open_loop)
        fprintf(f, " at %" PRId64 " calls/s (ramp %.1f s)", cfg->rate,
                (double)cfg->ramp_ms / 1000.0);
    else
        fprintf(f, ", %" PRId64 " in flight per connection", cfg->outstanding);
    fprintf(f, ", %" PRId64 " %sconnections, %" PRId64 " worker%s\n", cfg->conns,
            cfg->handshake ? (cfg->resume ? "new resumed " : "new ") : "", cfg->workers,
            cfg->workers > 1 ? "s" : "");
    fprintf(f, "  tls           %s %s %s\n", s->tls_version ? s->tls_version : "-",
            s->tls_cipher ? s->tls_cipher : "", s->tls_group ? s->tls_group : "");
    fprintf(f, "  elapsed       %.3f s\n", t->elapsed_s);
    fprintf(f,
            "  calls         %" PRIu64 " started, %" PRIu64 " ok, %" PRIu64
            " failed; %.1f calls/s\n",
            s->started, s->ok, s->failed, rate_of(s->ok, t->elapsed_s));
    if (cfg->scenario == LOAD_SC_MIXED)
        fprintf(f, "    ok by kind  options %" PRIu64 ", register %" PRIu64 ", call %" PRIu64 "\n",
                s->ok_by_kind[0], s->ok_by_kind[1], s->ok_by_kind[2]);
    fprintf(f, "  transactions  %" PRIu64 " sent, %" PRIu64 " ok, %" PRIu64 " failed; %.1f/s\n",
            s->txn_sent, s->txn_ok, s->txn_failed, rate_of(s->txn_ok, t->elapsed_s));
    fprintf(f,
            "  messages      %" PRIu64 " sent, %" PRIu64 " received (%" PRIu64
            " provisional, %" PRIu64 " unmatched, %" PRIu64 " bad)\n",
            s->msgs_sent, s->msgs_recv, s->provisional, s->unmatched, s->bad_msgs);
    fputs("  failures     ", f);
    for (int i = 0; i < LOAD_FAIL__COUNT; i++)
        fprintf(f, "%s %s %" PRIu64, i ? "," : "", fail_names[i], s->fail[i]);
    fputc('\n', f);
    fputs("  statuses     ", f);
    for (size_t i = 0; i < sizeof(s->status) / sizeof(s->status[0]); i++)
        if (s->status[i])
            fprintf(f, " %zu: %" PRIu64, i + LOAD_STATUS_MIN, s->status[i]);
    fputc('\n', f);
    fprintf(f,
            "  connections   %" PRIu64 " attempts, %" PRIu64 " handshakes (%" PRIu64
            " resumed), %" PRIu64 " connect failed, %" PRIu64 " TLS failed, %" PRIu64 " lost\n",
            s->conn_attempts, s->handshakes, s->resumed, s->connect_failed, s->tls_failed,
            s->conn_lost);
    fprintf(f, "  latency (us)  %12s %9s %9s %9s %9s %9s %9s %9s\n", "count", "min", "p50", "p90",
            "p99", "p99.9", "max", "mean");
    struct lat_row rows[8];
    int n = lat_rows(t, rows);
    for (int i = 0; i < n; i++) {
        const struct slb_hist *h = rows[i].h;
        if (slb_hist_empty(h))
            continue;
        fprintf(f,
                "    %-12s%12" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64
                " %9" PRIu64 " %9" PRIu64 " %9.1f\n",
                rows[i].name, h->count, h->min, slb_hist_percentile(h, 50),
                slb_hist_percentile(h, 90), slb_hist_percentile(h, 99),
                slb_hist_percentile(h, 99.9), h->max, slb_hist_mean(h));
    }
    fprintf(f,
            "  own cpu       %.3f s in the load (%.1f%% of one core): %.2f us per call, %.2f us"
            " per transaction, %.2f us per message\n"
            "                whole run %.3f s (user %.3f, system %.3f), connection set-up"
            " included\n",
            t->load_s, t->elapsed_s > 0 ? 100.0 * t->load_s / t->elapsed_s : 0.0,
            per(t->load_s, s->ok + s->failed), per(t->load_s, s->txn_ok + s->txn_failed),
            per(t->load_s, s->msgs_sent + s->msgs_recv), cpu, t->user_s, t->sys_s);
    if (t->gave_up)
        fputs("  gave up: no connection to the target could be kept open\n", f);
    fprintf(f, "  result        %s\n", t->exit_status == 0 ? "PASS" : "FAIL");
}

static void json_hist(FILE *f, const char *name, const struct slb_hist *h, bool comma)
{
    fprintf(f,
            "\"%s\":{\"count\":%" PRIu64 ",\"min\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%" PRIu64
            ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"p99_9\":%" PRIu64 ",\"max\":%" PRIu64 "}%s",
            name, h->count, slb_hist_empty(h) ? 0 : h->min, slb_hist_mean(h),
            slb_hist_percentile(h, 50), slb_hist_percentile(h, 90), slb_hist_percentile(h, 99),
            slb_hist_percentile(h, 99.9), h->max, comma ? "," : "");
}

/* A string from our own flags or static TLS names, escaped for JSON. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void print_json(const struct load_cfg *cfg, const struct totals *t, FILE *f)
{
    const struct load_stats *s = &t->s;
    double cpu = t->user_s + t->sys_s;
    fputs("{\"version\":1,\"target\":", f);
    json_str(f, cfg->target);
    fprintf(f, ",\"scenario\":\"%s\",\"mix\":{", scenario_names[cfg->scenario]);
    for (int i = 0; i < LOAD_KIND__COUNT; i++)
        fprintf(f, "%s\"%s\":%u", i ? "," : "", kind_names[i], cfg->weight[i]);
    fprintf(f,
            "},\"mode\":\"%s\",\"handshake\":%s,\"resume\":%s,\"workers\":%" PRId64
            ",\"conns\":%" PRId64 ",\"outstanding\":%" PRId64 ",\"rate\":%" PRId64
            ",\"ramp_s\":%.3f,\"timeout_s\":%.3f,",
            cfg->open_loop ? "open" : "closed", cfg->handshake ? "true" : "false",
            cfg->resume ? "true" : "false", cfg->workers, cfg->conns, cfg->outstanding, cfg->rate,
            (double)cfg->ramp_ms / 1000.0, (double)cfg->timeout_ms / 1000.0);
    fputs("\"tls\":{\"version\":", f);
    json_str(f, s->tls_version);
    fputs(",\"cipher\":", f);
    json_str(f, s->tls_cipher);
    fputs(",\"group\":", f);
    json_str(f, s->tls_group);
    fprintf(f, "},\"elapsed_s\":%.6f,", t->elapsed_s);
    fprintf(f,
            "\"calls\":{\"started\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"failed\":%" PRIu64
            ",\"per_s\":%.1f,\"ok_by_kind\":{\"options\":%" PRIu64 ",\"register\":%" PRIu64
            ",\"call\":%" PRIu64 "}},",
            s->started, s->ok, s->failed, rate_of(s->ok, t->elapsed_s), s->ok_by_kind[0],
            s->ok_by_kind[1], s->ok_by_kind[2]);
    fprintf(f,
            "\"transactions\":{\"sent\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"failed\":%" PRIu64
            ",\"per_s\":%.1f},",
            s->txn_sent, s->txn_ok, s->txn_failed, rate_of(s->txn_ok, t->elapsed_s));
    fprintf(f,
            "\"messages\":{\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"provisional\":%" PRIu64
            ",\"unmatched\":%" PRIu64 ",\"retransmitted_2xx\":%" PRIu64 ",\"bad\":%" PRIu64
            ",\"requests_received\":%" PRIu64 "},",
            s->msgs_sent, s->msgs_recv, s->provisional, s->unmatched, s->retrans_2xx, s->bad_msgs,
            s->requests_in);
    fputs("\"failures\":{", f);
    for (int i = 0; i < LOAD_FAIL__COUNT; i++)
        fprintf(f, "%s\"%s\":%" PRIu64, i ? "," : "", fail_names[i], s->fail[i]);
    fputs("},\"status\":{", f);
    bool first = true;
    for (size_t i = 0; i < sizeof(s->status) / sizeof(s->status[0]); i++) {
        if (!s->status[i])
            continue;
        fprintf(f, "%s\"%zu\":%" PRIu64, first ? "" : ",", i + LOAD_STATUS_MIN, s->status[i]);
        first = false;
    }
    fprintf(f,
            "},\"connections\":{\"attempts\":%" PRIu64 ",\"handshakes\":%" PRIu64
            ",\"resumed\":%" PRIu64 ",\"connect_failed\":%" PRIu64 ",\"tls_failed\":%" PRIu64
            ",\"lost\":%" PRIu64 "},",
            s->conn_attempts, s->handshakes, s->resumed, s->connect_failed, s->tls_failed,
            s->conn_lost);
    fputs("\"latency_us\":{", f);
    struct lat_row rows[8];
    int n = lat_rows(t, rows);
    for (int i = 0; i < n; i++)
        json_hist(f, rows[i].name, rows[i].h, i + 1 < n);
    fprintf(f,
            "},\"cpu\":{\"user_s\":%.6f,\"system_s\":%.6f,\"total_s\":%.6f,\"workers_s\":%.6f,"
            "\"load_s\":%.6f,\"us_per_call\":%.3f,\"us_per_transaction\":%.3f,"
            "\"us_per_message\":%.3f},",
            t->user_s, t->sys_s, cpu, t->workers_s, t->load_s, per(t->load_s, s->ok + s->failed),
            per(t->load_s, s->txn_ok + s->txn_failed), per(t->load_s, s->msgs_sent + s->msgs_recv));
    fprintf(f, "\"gave_up\":%s,\"exit_status\":%d}\n", t->gave_up ? "true" : "false",
            t->exit_status);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* ---- main -------------------------------------------------------------------------------- */

/* Many connections need many descriptors: take the hard limit. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int start_run(struct run *r, struct load_cfg *cfg)
{
    char err[256];
    r->n = (unsigned)cfg->workers;
    r->w = calloc(r->n, sizeof(*r->w));
    r->ctx = calloc(r->n, sizeof(*r->ctx));
    if (!r->w || !r->ctx)
        return 1;
    for (unsigned i = 0; i < r->n; i++) {
        struct slb_tls_ctx *ctx = r->ctx[i] = make_ctx(cfg, err, sizeof(err));
        if (!ctx) {
            fprintf(stderr, "sipslb-load: %s\n", err);
            return 2;
        }
        uint32_t conns = (uint32_t)(cfg->conns / cfg->workers +
                                    ((int64_t)i < cfg->conns % cfg->workers ? 1 : 0));
        uint64_t count = 0;
        if (cfg->count) {
            count = (uint64_t)(cfg->count / cfg->workers +
                               ((int64_t)i < cfg->count % cfg->workers ? 1 : 0));
        }
        double rate = (double)cfg->rate / (double)cfg->workers;
        r->w[i] = load_worker_new(cfg, i, ctx, conns, rate, count);
        if (!r->w[i]) {
            fprintf(stderr, "sipslb-load: out of memory setting up worker %u\n", i);
            return 1;
        }
        load_worker_set_done(r->w[i], worker_done, r);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct load_cfg cfg;
    char err[256];
    int rc = slb_flags_parse(flags, N_FLAGS, &cfg, argc, argv, usage, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "sipslb-load: %s\n", err);
        return 2;
    }
    if ((rc = check_config(&cfg)) != 0)
        return rc;
    /* A count smaller than the workers would leave some with nothing to do. */
    if (cfg.count && cfg.count < cfg.workers)
        return usage_error("--count must be at least --workers");
    raise_nofile();
    if (slb_tls_init() < 0) {
        fputs("sipslb-load: TLS initialisation failed\n", stderr);
        return 1;
    }
    static struct run r;
    r.cfg = &cfg;
    r.main_thread = pthread_self();
    if ((rc = start_run(&r, &cfg)) != 0)
        return rc;

    /* Signals are taken by the main thread only (sigtimedwait); workers inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t t0 = mono_ns();
    struct slb_threads workers;
    void **args = calloc(r.n, sizeof(void *));
    if (!args)
        return 1;
    for (unsigned i = 0; i < r.n; i++)
        args[i] = r.w[i];
    bool start_failed = slb_threads_start(&workers, r.n, false, load_worker_main, args) != 0;
    if (start_failed)
        for (unsigned i = 0; i < r.n; i++)
            load_worker_abort(r.w[i]);
    else
        supervise(&r, cfg.progress || isatty(STDERR_FILENO), t0);
    void **results = calloc(r.n, sizeof(void *));
    slb_threads_join(&workers, results);
    getrusage(RUSAGE_SELF, &ru1);

    static struct totals t;
    sum_stats(&t, &r);
    t.user_s = tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime);
    t.sys_s = tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime);
    bool worker_failed = start_failed;
    for (unsigned i = 0; results && i < r.n; i++)
        worker_failed |= results[i] != NULL;
    t.exit_status = (t.s.failed || !t.s.ok || t.gave_up || worker_failed) ? 1 : 0;
    if (cfg.json)
        print_json(&cfg, &t, stdout);
    else
        print_summary(&cfg, &t, stdout);
    fflush(stdout);
    for (unsigned i = 0; i < r.n; i++) {
        load_worker_free(r.w[i]);
        slb_tls_ctx_free(r.ctx[i]);
    }
    free(r.w);
    free(r.ctx);
    free(args);
    free(results);
    slb_tls_cleanup();
    return t.exit_status;
}
