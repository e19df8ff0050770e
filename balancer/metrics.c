/* /metrics: the Prometheus text exposition (format 0.0.4) of everything sipslb counts,
 * summed over workers when scraped (metrics.h).
 *
 * Invariants: reads only what other threads publish for reading (relaxed atomic counters,
 * the health checker's atomics, the backends object the caller holds); writes nothing
 * they read. Thread: the admin server's. */
#include "balancer/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "balancer/dns_watch.h"
#include "balancer/health.h"
#include "balancer/textbuf.h"
#include "balancer/worker.h"
#include "tls/tls.h"

#ifdef SLB_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

static void family(struct slb_textbuf *b, const char *name, const char *type, const char *help)
{
    slb_textbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The counters' own names, as in the stats file: sipslb_NAME_total. */
static void worker_counters(struct slb_textbuf *b, const struct slb_worker_counters *sum)
{
    const uint64_t *v = (const uint64_t *)(const void *)sum;
    for (size_t i = 0; i < SLB_WORKER_N_COUNTERS; i++) {
        char name[96], help[128];
        snprintf(name, sizeof(name), "sipslb_%s_total", slb_worker_counter_names[i]);
        snprintf(help, sizeof(help), "Worker counter %s, summed over workers.",
                 slb_worker_counter_names[i]);
        family(b, name, "counter", help);
        slb_textbuf_printf(b, "%s %llu\n", name, (unsigned long long)v[i]);
    }
}

/* The same counters grouped by label, the way dashboards want them. */
static void labelled(struct slb_textbuf *b, const struct slb_worker_counters *s)
{
    family(b, "sipslb_replies_total", "counter",
           "Responses sipslb generated itself, by status code.");
    const struct {
        const char *code;
        uint64_t v;
    } replies[] = {{"400", s->replied_400}, {"483", s->replied_483}, {"503", s->replied_503},
                   {"505", s->replied_505}, {"513", s->replied_513}, {"other", s->replied_other}};
    for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++)
        slb_textbuf_printf(b, "sipslb_replies_total{code=\"%s\"} %llu\n", replies[i].code,
                           (unsigned long long)replies[i].v);
    family(b, "sipslb_dropped_messages_total", "counter", "Messages dropped, by reason.");
    const struct {
        const char *reason;
        uint64_t v;
    } drops[] = {{"response_not_ours", s->drop_response_not_ours},
                 {"response_stale_client", s->drop_response_stale_client},
                 {"response_client_full", s->drop_response_client_full},
                 {"response_forged", s->drop_response_forged},
                 {"ack_unroutable", s->drop_ack_unroutable},
                 {"backend_request", s->drop_backend_request},
                 {"pong", s->pongs_dropped}};
    for (size_t i = 0; i < sizeof(drops) / sizeof(drops[0]); i++)
        slb_textbuf_printf(b, "sipslb_dropped_messages_total{reason=\"%s\"} %llu\n",
                           drops[i].reason, (unsigned long long)drops[i].v);
    family(b, "sipslb_handshake_failures_total", "counter",
           "Client TLS handshakes that failed, by reason.");
    const struct {
        const char *reason;
        uint64_t v;
    } hs[] = {{"protocol", s->handshake_fail_protocol},
              {"bad_cert", s->handshake_fail_bad_cert},
              {"no_shared_cipher", s->handshake_fail_no_shared_cipher},
              {"peer_closed", s->handshake_fail_peer_closed},
              {"timeout", s->handshake_timeouts},
              {"other", s->handshake_fail_other}};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        slb_textbuf_printf(b, "sipslb_handshake_failures_total{reason=\"%s\"} %llu\n", hs[i].reason,
                           (unsigned long long)hs[i].v);
}

static const char *const states[] = {"up", "down", "draining", "drained", "removed"};

static void backends(struct slb_textbuf *b, const struct slb_metrics_src *src)
{
    const struct slb_backends *bs = src->backends;
    struct slb_health_backend hb[SLB_MAX_BACKENDS];
    struct slb_worker_backend_stats ws[SLB_MAX_BACKENDS];
    for (unsigned i = 0; i < bs->attrs.n; i++) {
        slb_health_backend(src->health, i, &hb[i]);
        ws[i] = (struct slb_worker_backend_stats){0};
        for (unsigned w = 0; w < src->n_workers; w++)
            slb_worker_add_backend_stats(src->workers[w], i, &ws[i]);
    }
#define EACH_BACKEND(i)                                                                            \
    for (unsigned i = 0; i < bs->attrs.n; i++)                                                     \
        if (bs->attrs.present[i] || strcmp(hb[i].state, "removed"))
#define LABEL(metric, i)                                                                           \
    slb_textbuf_printf(b, "%s{backend=\"", metric), slb_textbuf_quoted(b, bs->spec[i].name)
    family(b, "sipslb_backend_state", "gauge",
           "1 for the state each backend is in (up, down, draining, drained, removed).");
    EACH_BACKEND(i)
    {
        for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
            LABEL("sipslb_backend_state", i);
            slb_textbuf_printf(b, "\",state=\"%s\"} %d\n", states[k],
                               !strcmp(hb[i].state, states[k]));
        }
    }
    family(b, "sipslb_backend_weight", "gauge", "Maglev weight.");
    EACH_BACKEND(i)
    {
        LABEL("sipslb_backend_weight", i);
        slb_textbuf_printf(b, "\"} %u\n", bs->attrs.weight[i]);
    }
    family(b, "sipslb_backend_links_up", "gauge", "Workers' TLS links to it that are ready.");
    EACH_BACKEND(i)
    {
        LABEL("sipslb_backend_links_up", i);
        slb_textbuf_printf(b, "\"} %u\n", ws[i].links_up);
    }
    family(b, "sipslb_backend_requests_total", "counter", "Requests forwarded to it.");
    EACH_BACKEND(i)
    {
        LABEL("sipslb_backend_requests_total", i);
        slb_textbuf_printf(b, "\"} %llu\n", (unsigned long long)ws[i].requests);
    }
    family(b, "sipslb_backend_responses_total", "counter", "Responses relayed from it.");
    EACH_BACKEND(i)
    {
        LABEL("sipslb_backend_responses_total", i);
        slb_textbuf_printf(b, "\"} %llu\n", (unsigned long long)ws[i].responses);
    }
    family(b, "sipslb_backend_probe_rtt_seconds", "gauge",
           "Round trip of the last answered health probe (OPTIONS).");
    EACH_BACKEND(i)
    {
        LABEL("sipslb_backend_probe_rtt_seconds", i);
        slb_textbuf_printf(b, "\"} %.6f\n", hb[i].probe_rtt_s);
    }
    family(b, "sipslb_backend_probes_ok_total", "counter", "Health probes answered as alive.");
    EACH_BACKEND(i)
    {
        LABEL("sipslb_backend_probes_ok_total", i);
        slb_textbuf_printf(b, "\"} %llu\n", (unsigned long long)hb[i].probes_ok);
    }
    family(b, "sipslb_backend_probe_failures_total", "counter",
           "Health probe failures, by kind (connect, handshake, reset, timeout, status, other).");
    EACH_BACKEND(i)
    {
        for (unsigned k = 0; k < SLB_PROBE_FAIL_KINDS; k++) {
            LABEL("sipslb_backend_probe_failures_total", i);
            slb_textbuf_printf(b, "\",kind=\"%s\"} %llu\n", slb_probe_fail_names[k],
                               (unsigned long long)hb[i].fails[k]);
        }
    }
    family(b, "sipslb_backend_response_seconds", "histogram",
           "Time from a request leaving sipslb to its final response coming back (from the "
           "send time our Via carries), per backend.");
    EACH_BACKEND(i)
    {
        uint64_t cum = 0;
        for (unsigned k = 0; k <= SLB_LATENCY_BUCKETS; k++) {
            cum += ws[i].latency_buckets[k];
            LABEL("sipslb_backend_response_seconds_bucket", i);
            if (k < SLB_LATENCY_BUCKETS)
                slb_textbuf_printf(b, "\",le=\"%g\"} %llu\n", slb_latency_bounds_us[k] / 1e6,
                                   (unsigned long long)cum);
            else
                slb_textbuf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        LABEL("sipslb_backend_response_seconds_sum", i);
        slb_textbuf_printf(b, "\"} %.6f\n", ws[i].latency_sum_us / 1e6);
        LABEL("sipslb_backend_response_seconds_count", i);
        slb_textbuf_printf(b, "\"} %llu\n", (unsigned long long)ws[i].latency_count);
    }
#undef LABEL
#undef EACH_BACKEND
}

static void process(struct slb_textbuf *b, const struct slb_metrics_src *src)
{
    family(b, "sipslb_build_info", "gauge", "Version and wolfSSL version, as labels.");
    slb_textbuf_printf(b, "sipslb_build_info{version=\"%s\",wolfssl=\"%s\"} 1\n", SLB_VERSION,
                       slb_tls_library_version());
    family(b, "sipslb_start_time_seconds", "gauge", "Start time (Unix epoch).");
    slb_textbuf_printf(b, "sipslb_start_time_seconds %llu\n",
                       (unsigned long long)src->start_time_s);
    if (src->dns) {
        uint64_t ok, failed;
        slb_dns_watch_counts(src->dns, &ok, &failed);
        family(b, "sipslb_dns_resolutions_total", "counter",
               "Re-resolutions of --backend sips:NAME that answered.");
        slb_textbuf_printf(b, "sipslb_dns_resolutions_total %llu\n", (unsigned long long)ok);
        family(b, "sipslb_dns_failures_total", "counter",
               "Re-resolutions that failed (the last good backends kept).");
        slb_textbuf_printf(b, "sipslb_dns_failures_total %llu\n", (unsigned long long)failed);
    }
    family(b, "sipslb_workers", "gauge", "Worker threads.");
    slb_textbuf_printf(b, "sipslb_workers %u\n", src->n_workers);
    family(b, "sipslb_client_connections", "gauge", "Client connections open, per worker.");
    for (unsigned w = 0; w < src->n_workers; w++)
        slb_textbuf_printf(b, "sipslb_client_connections{worker=\"%u\"} %u\n", w,
                           slb_worker_clients_open(src->workers[w]));
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    family(b, "sipslb_process_resident_memory_bytes", "gauge", "Resident memory.");
    slb_textbuf_printf(b, "sipslb_process_resident_memory_bytes %lld\n",
                       (long long)rss * sysconf(_SC_PAGESIZE));
    unsigned fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            fds += e->d_name[0] != '.';
        closedir(d);
        fds--; /* the directory's own descriptor */
    }
    family(b, "sipslb_process_open_fds", "gauge", "Open file descriptors.");
    slb_textbuf_printf(b, "sipslb_process_open_fds %u\n", fds);
#ifdef SLB_HAVE_JEMALLOC
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch);
    mallctl("epoch", &epoch, &sz, &epoch, sz); /* refreshes the statistics below */
    const char *const stats[] = {"allocated", "active", "resident"};
    for (size_t i = 0; i < 3; i++) {
        char key[32], name[64], help[96];
        size_t v = 0, vsz = sizeof(v);
        snprintf(key, sizeof(key), "stats.%s", stats[i]);
        if (mallctl(key, &v, &vsz, NULL, 0) != 0)
            continue;
        snprintf(name, sizeof(name), "sipslb_jemalloc_%s_bytes", stats[i]);
        snprintf(help, sizeof(help), "jemalloc's stats.%s.", stats[i]);
        family(b, name, "gauge", help);
        slb_textbuf_printf(b, "%s %zu\n", name, v);
    }
#endif
}

static void listeners(struct slb_textbuf *b, const struct slb_metrics_src *src)
{
    const struct slb_config *cfg = src->cfg;
    struct slb_listener_stats ls[SLB_MAX_LISTEN];
    for (unsigned l = 0; l < cfg->n_listen; l++) {
        ls[l] = (struct slb_listener_stats){0};
        for (unsigned w = 0; w < src->n_workers; w++)
            slb_worker_add_listener_stats(src->workers[w], l, &ls[l]);
    }
#define EACH_LISTENER(l) for (unsigned l = 0; l < cfg->n_listen; l++)
#define LLABEL(metric, l)                                                                          \
    slb_textbuf_printf(b, "%s{listener=\"", metric),                                               \
        slb_textbuf_quoted(b, cfg->listen_addrs[l].text)
    family(b, "sipslb_listener_connections_accepted_total", "counter",
           "Client connections accepted, per listener.");
    EACH_LISTENER(l)
    {
        LLABEL("sipslb_listener_connections_accepted_total", l);
        slb_textbuf_printf(b, "\"} %llu\n", (unsigned long long)ls[l].accepted);
    }
    family(b, "sipslb_listener_connections_open", "gauge",
           "Client connections open, per listener.");
    EACH_LISTENER(l)
    {
        LLABEL("sipslb_listener_connections_open", l);
        slb_textbuf_printf(b, "\"} %u\n", ls[l].open);
    }
    family(b, "sipslb_listener_handshakes_total", "counter",
           "Client TLS handshakes per listener, by result (ok, failed; the reasons are in "
           "sipslb_handshake_failures_total).");
    EACH_LISTENER(l)
    {
        LLABEL("sipslb_listener_handshakes_total", l);
        slb_textbuf_printf(b, "\",result=\"ok\"} %llu\n", (unsigned long long)ls[l].handshakes_ok);
        LLABEL("sipslb_listener_handshakes_total", l);
        slb_textbuf_printf(b, "\",result=\"failed\"} %llu\n",
                           (unsigned long long)ls[l].handshakes_failed);
    }
    family(b, "sipslb_listener_tls_connections_open", "gauge",
           "Client connections open per listener, by TLS version in use.");
    EACH_LISTENER(l)
    {
        for (unsigned v = 0; v < SLB_TLS_VERSIONS_SEEN; v++) {
            LLABEL("sipslb_listener_tls_connections_open", l);
            slb_textbuf_printf(b, "\",version=\"%s\"} %u\n", slb_tls_versions_seen[v],
                               ls[l].tls_open[v]);
        }
    }
#undef LLABEL
#undef EACH_LISTENER
}

int slb_metrics_render(const struct slb_metrics_src *src, struct slb_textbuf *out)
{
    struct slb_worker_counters sum = {0};
    for (unsigned w = 0; w < src->n_workers; w++)
        slb_worker_add_counters(src->workers[w], &sum);
    process(out, src);
    worker_counters(out, &sum);
    labelled(out, &sum);
    backends(out, src);
    listeners(out, src);
    return out->failed ? -1 : 0;
}
