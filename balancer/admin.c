/* The admin listener (admin.h), on libmicrohttpd: a well-kept HTTP/1.1 server that does
 * its own I/O on its own thread, bounds connections, their memory and their idle time, so
 * no HTTP parser of ours faces the network and an admin client can only ever slow this
 * thread, never a worker.
 *
 * Invariants: reads worker and health state only through their any-thread accessors;
 * changes go through main's ops (new backends object, published like a reload).
 * Thread: libmicrohttpd's internal thread for every request; start/stop on main's. */
#include "balancer/admin.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "balancer/health.h"
#include "balancer/metrics.h"
#include "balancer/textbuf.h"
#include "balancer/worker.h"
#include "core/log.h"

#define ADMIN_CONNS       32u         /* admin connections at once */
#define ADMIN_IDLE_S      10u         /* an idle admin connection is closed after this */
#define ADMIN_CONN_MEMORY (32u << 10) /* libmicrohttpd's memory per connection */
#define ADMIN_BEARER      "Bearer "

/* Owned by main (slb_admin_start / slb_admin_stop). */
struct slb_admin {
    struct MHD_Daemon *d;
    struct slb_admin_cfg c;
    char *token;
    int unix_fd; /* the Unix socket's listener, or -1 */
};

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *type,
                               const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result text(struct MHD_Connection *conn, unsigned status, const char *msg)
{
    return respond(conn, status, "text/plain; charset=utf-8", msg, strlen(msg));
}

static enum MHD_Result buffer(struct MHD_Connection *conn, const char *type, struct slb_textbuf *b)
{
    enum MHD_Result r = b->failed ? text(conn, 500, "out of memory\n")
                                  : respond(conn, 200, type, b->p ? b->p : "", b->len);
    slb_textbuf_free(b);
    return r;
}

/* The caller's address, for the log line of a change. */
static void peer_of(struct MHD_Connection *conn, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, cap, "?");
    if (!ci || !ci->client_addr)
        return;
    if (ci->client_addr->sa_family == AF_UNIX) {
        snprintf(out, cap, "unix");
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    uint16_t port;
    slb_sockaddr_text(ci->client_addr, ip, sizeof(ip), &port);
    snprintf(out, cap, "%s:%u", ip, port);
}

/* The decoded URL as a log line may show it: control bytes (a %0A would start a forged
 * line in a text log) and bytes past ASCII become '?', and it is cut to cap. */
static const char *printable(const char *url, char *out, size_t cap)
{
    size_t i = 0;
    for (; url[i] && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)url[i];
        out[i] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
    }
    out[i] = 0;
    return out;
}

/* Constant time: the token must not leak through how fast a wrong one is refused. */
static bool authorized(const struct slb_admin *a, struct MHD_Connection *conn)
{
    if (a->unix_fd >= 0)
        return true; /* the socket file's mode says who may connect */
    if (!a->token)
        return false;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, ADMIN_BEARER, strlen(ADMIN_BEARER)))
        return false;
    h += strlen(ADMIN_BEARER);
    size_t n = strlen(a->token), m = strlen(h);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a->token[i] ^ (i < m ? h[i] : 0));
    return diff == 0;
}

static enum MHD_Result metrics(struct slb_admin *a, struct MHD_Connection *conn)
{
    const struct slb_backends *bs = a->c.ops.backends(a->c.ops.ctx);
    struct slb_metrics_src src = {a->c.cfg, a->c.workers,      a->c.n_workers, a->c.health,
                                  bs,       a->c.start_time_s, a->c.dns};
    struct slb_textbuf b = {0};
    slb_metrics_render(&src, &b);
    slb_backends_unref(bs);
    return buffer(conn, "text/plain; version=0.0.4; charset=utf-8", &b);
}

static enum MHD_Result backends_json(struct slb_admin *a, struct MHD_Connection *conn)
{
    const struct slb_backends *bs = a->c.ops.backends(a->c.ops.ctx);
    struct slb_textbuf b = {0};
    slb_textbuf_printf(&b, "{\"backends\":[");
    bool first = true;
    for (unsigned i = 0; i < bs->attrs.n; i++) {
        struct slb_health_backend hb;
        slb_health_backend(a->c.health, i, &hb);
        if (!bs->attrs.present[i] && !strcmp(hb.state, "removed"))
            continue;
        struct slb_worker_backend_stats ws = {0};
        for (unsigned w = 0; w < a->c.n_workers; w++)
            slb_worker_add_backend_stats(a->c.workers[w], i, &ws);
        slb_textbuf_printf(&b, "%s{\"name\":\"", first ? "" : ",");
        slb_textbuf_quoted(&b, bs->spec[i].name);
        slb_textbuf_printf(&b,
                           "\",\"state\":\"%s\",\"weight\":%u,\"drain\":%s,\"links_up\":%u,"
                           "\"requests\":%llu,\"responses\":%llu,\"probe_rtt_seconds\":%.6f,"
                           "\"probes_ok\":%llu,\"probe_failures\":{",
                           hb.state, bs->attrs.weight[i], bs->attrs.drain[i] ? "true" : "false",
                           ws.links_up, (unsigned long long)ws.requests,
                           (unsigned long long)ws.responses, hb.probe_rtt_s,
                           (unsigned long long)hb.probes_ok);
        for (unsigned k = 0; k < SLB_PROBE_FAIL_KINDS; k++)
            slb_textbuf_printf(&b, "%s\"%s\":%llu", k ? "," : "", slb_probe_fail_names[k],
                               (unsigned long long)hb.fails[k]);
        slb_textbuf_printf(&b, "}}");
        first = false;
    }
    slb_textbuf_printf(&b, "]}\n");
    slb_backends_unref(bs);
    return buffer(conn, "application/json", &b);
}

static enum MHD_Result status_json(struct slb_admin *a, struct MHD_Connection *conn)
{
    const struct slb_config *cfg = a->c.cfg;
    struct slb_textbuf b = {0};
    uint64_t now = (uint64_t)time(NULL);
    slb_textbuf_printf(&b, "{\"version\":\"%s\",\"uptime_seconds\":%llu,\"workers\":[", SLB_VERSION,
                       (unsigned long long)(now > a->c.start_time_s ? now - a->c.start_time_s : 0));
    for (unsigned w = 0; w < a->c.n_workers; w++)
        slb_textbuf_printf(&b, "%s{\"index\":%u,\"client_connections\":%u,\"failed\":%s}",
                           w ? "," : "", w, slb_worker_clients_open(a->c.workers[w]),
                           slb_worker_failed(a->c.workers[w]) ? "true" : "false");
    slb_textbuf_printf(&b, "],\"listen\":[");
    for (unsigned i = 0; i < cfg->n_listen; i++) {
        slb_textbuf_printf(&b, "%s\"", i ? "," : "");
        slb_textbuf_quoted(&b, cfg->listen_addrs[i].text);
        slb_textbuf_printf(&b, "\"");
    }
    slb_textbuf_printf(&b, "],\"advertise\":\"");
    slb_textbuf_quoted(&b, cfg->advertise_hostport);
    slb_textbuf_printf(&b,
                       "\",\"max_conns_per_worker\":%lld,\"backend_conns\":%lld,"
                       "\"max_message_size\":%lld,\"backends_file\":%s}\n",
                       (long long)cfg->max_conns, (long long)cfg->backend_conns,
                       (long long)cfg->max_message_size, cfg->backends_file ? "true" : "false");
    return buffer(conn, "application/json", &b);
}

/* Ready: every worker runs and at least one backend is up (routes new dialogs). */
static bool ready(struct slb_admin *a)
{
    for (unsigned w = 0; w < a->c.n_workers; w++)
        if (slb_worker_failed(a->c.workers[w]))
            return false;
    const struct slb_backends *bs = a->c.ops.backends(a->c.ops.ctx);
    bool any = false;
    for (unsigned i = 0; i < bs->attrs.n && !any; i++) {
        struct slb_health_backend hb;
        slb_health_backend(a->c.health, i, &hb);
        any = bs->attrs.present[i] && !strcmp(hb.state, "up");
    }
    slb_backends_unref(bs);
    return any;
}

static bool live(struct slb_admin *a)
{
    for (unsigned w = 0; w < a->c.n_workers; w++)
        if (slb_worker_failed(a->c.workers[w]))
            return false;
    return !slb_health_failed(a->c.health);
}

/* POST /backends/NAME/ACTION[?value=N] and POST /reload. */
static enum MHD_Result change(struct slb_admin *a, struct MHD_Connection *conn, const char *url)
{
    char who[INET6_ADDRSTRLEN + 8];
    peer_of(conn, who, sizeof(who));
    if (!authorized(a, conn)) {
        char shown[256];
        slb_log(SLB_LOG_WARN, "admin: %s refused for %s (no or wrong bearer token)",
                printable(url, shown, sizeof(shown)), who);
        return text(conn, 403,
                    a->token ? "forbidden: bearer token required\n"
                             : "forbidden: no --admin-token-file\n");
    }
    if (!strcmp(url, "/reload")) {
        char err[512];
        if (a->c.ops.reload(a->c.ops.ctx, who, err, sizeof(err)) < 0) {
            char msg[600];
            snprintf(msg, sizeof(msg), "reload rejected: %s\n", err);
            return text(conn, 409, msg);
        }
        return text(conn, 200, "reloaded\n");
    }
    const char *prefix = "/backends/";
    const char *slash = strrchr(url, '/');
    if (strncmp(url, prefix, strlen(prefix)) || !slash || slash <= url + strlen(prefix))
        return text(conn, 404, "not found\n");
    char name[sizeof(((struct slb_backend_spec *)0)->name)];
    size_t len = (size_t)(slash - (url + strlen(prefix)));
    if (len >= sizeof(name))
        return text(conn, 404, "no such backend\n");
    memcpy(name, url + strlen(prefix), len);
    name[len] = 0;
    const char *action = slash + 1;
    int rc;
    if (!strcmp(action, "drain") || !strcmp(action, "undrain")) {
        rc = a->c.ops.set_drain(a->c.ops.ctx, name, action[0] == 'd', who);
    } else if (!strcmp(action, "weight")) {
        const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "value");
        char *end = NULL;
        long weight = v ? strtol(v, &end, 10) : -1;
        if (!v || !*v || *end)
            return text(conn, 400, "weight needs ?value=N\n");
        rc = a->c.ops.set_weight(a->c.ops.ctx, name, weight, who);
    } else {
        return text(conn, 404, "not found\n");
    }
    if (rc == -ENOENT)
        return text(conn, 404, "no such backend\n");
    if (rc < 0)
        return text(conn, 400, "bad value\n");
    return text(conn, 200, "ok\n");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req)
{
    static int seen;
    struct slb_admin *a = cls;
    (void)version;
    (void)upload;
    if (!*req) { /* headers only so far: answer once the request is complete */
        *req = &seen;
        return MHD_YES;
    }
    if (*upload_size) { /* no call takes a body: it is read and ignored */
        *upload_size = 0;
        return MHD_YES;
    }
    bool get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    if (!strcmp(method, MHD_HTTP_METHOD_POST))
        return change(a, conn, url);
    if (!get)
        return text(conn, 405, "method not allowed\n");
    if (!strcmp(url, "/metrics"))
        return metrics(a, conn);
    if (!strcmp(url, "/backends"))
        return backends_json(a, conn);
    if (!strcmp(url, "/status"))
        return status_json(a, conn);
    if (!strcmp(url, "/ready"))
        return ready(a) ? text(conn, 200, "ready\n") : text(conn, 503, "not ready\n");
    if (!strcmp(url, "/live"))
        return live(a) ? text(conn, 200, "live\n") : text(conn, 503, "a thread failed\n");
    return text(conn, 404, "not found\n");
}

struct slb_admin *slb_admin_start(const struct slb_admin_cfg *c, char *err, size_t errlen)
{
    struct slb_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->c = *c;
    if (c->token && !(a->token = strdup(c->token))) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->unix_fd = -1;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (c->unix_path) {
        /* Owner and group may connect (0660), nobody else: the file is the access check. */
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        snprintf(su.sun_path, sizeof(su.sun_path), "%s", c->unix_path);
        a->unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        unlink(c->unix_path);
        mode_t old = umask(0117);
        int ok = a->unix_fd >= 0 && bind(a->unix_fd, (struct sockaddr *)&su, sizeof(su)) == 0 &&
                 chmod(c->unix_path, 0660) == 0 && listen(a->unix_fd, 64) == 0;
        umask(old);
        if (!ok) {
            snprintf(err, errlen, "cannot listen on unix:%s: %s", c->unix_path, strerror(errno));
            if (a->unix_fd >= 0)
                close(a->unix_fd);
            free(a->token);
            free(a);
            return NULL;
        }
        a->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, a, MHD_OPTION_LISTEN_SOCKET,
                                a->unix_fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_CONNS,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_IDLE_S,
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ADMIN_CONN_MEMORY,
                                MHD_OPTION_END);
        if (!a->d) {
            snprintf(err, errlen, "cannot serve on unix:%s", c->unix_path);
            close(a->unix_fd);
            free(a->token);
            free(a);
            return NULL;
        }
        return a;
    }
    if (c->addr->sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port = ntohs(c->addr->sa.ss_family == AF_INET6
                              ? ((const struct sockaddr_in6 *)(const void *)&c->addr->sa)->sin6_port
                              : ((const struct sockaddr_in *)(const void *)&c->addr->sa)->sin_port);
    a->d = MHD_start_daemon(flags, port, NULL, NULL, handle, a, MHD_OPTION_SOCK_ADDR,
                            (const struct sockaddr *)&c->addr->sa, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)ADMIN_CONNS, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)ADMIN_IDLE_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            (size_t)ADMIN_CONN_MEMORY, MHD_OPTION_END);
    if (!a->d) {
        snprintf(err, errlen, "cannot serve on %s (address in use, or not ours)", c->addr->text);
        free(a->token);
        free(a);
        return NULL;
    }
    return a;
}

void slb_admin_stop(struct slb_admin *a)
{
    if (!a)
        return;
    MHD_stop_daemon(a->d);
    if (a->unix_fd >= 0) {
        close(a->unix_fd);
        unlink(a->c.unix_path);
    }
    free(a->token);
    free(a);
}
