/* sipslb-uas: a mock SIPS backend for tests and benchmarks, on the same engine as sipslb
 * (io_uring loop, wolfSSL over memory buffers, the zero-copy scanner). Answers 200 to
 * OPTIONS, REGISTER, BYE and anything else, 100 + 180 + 200 (with SDP) to INVITE, absorbs
 * ACK, answers keepalive pings. Counts what it received per Call-ID and writes that report
 * at exit and on SIGUSR1: one line "CALL-ID REQUESTS METHODS" per Call-ID. For failover
 * tests: SIGUSR2 turns it into a black hole, SIGHUP resets all its connections.
 * One loop on one thread, or --workers N loops. Not a product: bounded by its flags. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "balancer/config.h"
#include "balancer/sip_stream.h"
#include "core/flags.h"
#include "core/log.h"
#include "core/siphash.h"
#include "core/sip.h"
#include "io/conn.h"
#include "io/loop.h"
#include "io/timer.h"
#include "io/threads.h"
#include "tls/tls.h"

struct uas_cfg {
    struct slb_flag_list listen;
    const char *cert, *key, *ca;
    int verify_client;
    int64_t workers;
    const char *report;
    const char *name;
    int64_t max_calls;
    bool no_sdp;
};

static const char *const verify_names[] = {"none", "optional", "require", NULL};

#define F(n, t, f, d, lo, hi, ch, a, h)                                                            \
    {                                                                                              \
        n, t, offsetof(struct uas_cfg, f), d, lo, hi, ch, a, h                                     \
    }
static const struct slb_flag flags[] = {
    F("listen", SLB_FLAG_LIST, listen, "127.0.0.1:5071", 0, 8, NULL, "ADDR:PORT", "listen here"),
    F("cert", SLB_FLAG_STR, cert, NULL, 0, 0, NULL, "FILE", "certificate chain (required)"),
    F("key", SLB_FLAG_STR, key, NULL, 0, 0, NULL, "FILE", "its key (required)"),
    F("ca", SLB_FLAG_STR, ca, NULL, 0, 0, NULL, "FILE", "CAs for client certificates"),
    F("verify-client", SLB_FLAG_ENUM, verify_client, "none", 0, 0, verify_names, "MODE",
      "mutual TLS"),
    F("workers", SLB_FLAG_INT, workers, "1", 1, 64, NULL, "N", "loops (threads)"),
    F("report", SLB_FLAG_STR, report, NULL, 0, 0, NULL, "FILE",
      "write per-Call-ID counts here at exit and on SIGUSR1"),
    F("name", SLB_FLAG_STR, name, "uas", 0, 0, NULL, "NAME", "this backend's name, in Contact"),
    F("max-calls", SLB_FLAG_INT, max_calls, "1000000", 16, 50000000, NULL, "N",
      "distinct Call-IDs remembered per worker for the report"),
    F("no-sdp", SLB_FLAG_BOOL, no_sdp, "false", 0, 0, NULL, NULL, "200 to INVITE without SDP"),
};

/* Per-Call-ID tally: open addressing over a fixed table, keys copied into an arena. */
struct call {
    uint64_t hash;
    uint32_t key_off, key_len;
    uint32_t requests;
    uint32_t methods; /* bit per enum slb_sip_method */
};

struct uas {
    struct slb_loop loop;
    const struct uas_cfg *cfg;
    struct slb_tls_ctx *ctx;
    unsigned index;
    atomic_int running, stop;
    atomic_int failed;          /* its set-up failed (logged): main stops everything */
    struct slb_stream *streams; /* per io slot */
    struct slb_stream_env env;
    char out[3][8192]; /* an INVITE's three answers, sent as one write */
    struct call *calls;
    uint32_t calls_cap, calls_n;
    char *arena;
    size_t arena_len, arena_cap;
    uint64_t requests, responses_sent, dropped_calls, dropped_responses;
    struct slb_timer poll; /* looks at the signals' flags below */
    unsigned seen_resets;
};

/* Failure modes for failover tests, set by signals on the main thread and read by every
 * loop: SIGUSR2 makes the backend a black hole (it reads and answers nothing, probes
 * included); SIGHUP resets every connection it has (TCP RST) and goes on answering. */
static atomic_int blackhole;
static atomic_uint resets;

static const struct slb_siphash_key tally_key = {0x75617374616c6c79ull, 0x6b65792e2e2e2e2eull};

static void tally(struct uas *u, const struct slb_sip_msg *m)
{
    uint64_t h = slb_siphash(&tally_key, m->call_id.ptr, m->call_id.len);
    uint32_t mask = u->calls_cap - 1, i = (uint32_t)h & mask;
    for (;;) {
        struct call *c = &u->calls[i];
        if (c->requests == 0)
            break;
        if (c->hash == h && c->key_len == m->call_id.len &&
            !memcmp(u->arena + c->key_off, m->call_id.ptr, c->key_len)) {
            c->requests++;
            c->methods |= 1u << m->method_id;
            return;
        }
        i = (i + 1) & mask;
    }
    if (u->calls_n >= u->calls_cap / 2 || u->arena_len + m->call_id.len > u->arena_cap) {
        u->dropped_calls++;
        return;
    }
    memcpy(u->arena + u->arena_len, m->call_id.ptr, m->call_id.len);
    u->calls[i] =
        (struct call){h, (uint32_t)u->arena_len, (uint32_t)m->call_id.len, 1, 1u << m->method_id};
    u->arena_len += m->call_id.len;
    u->calls_n++;
}

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *s, size_t n)
{
    if (n <= b->cap - b->len) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static void puts_(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

static const char sdp[] = "v=0\r\n"
                          "o=uas 2890844527 2890844527 IN IP4 127.0.0.1\r\n"
                          "s=-\r\n"
                          "c=IN IP4 127.0.0.1\r\n"
                          "t=0 0\r\n"
                          "m=audio 49174 RTP/SAVP 0 8 101\r\n"
                          "a=rtpmap:0 PCMU/8000\r\n"
                          "a=rtpmap:8 PCMA/8000\r\n"
                          "a=rtpmap:101 telephone-event/8000\r\n"
                          "a=ptime:20\r\n"
                          "a=sendrecv\r\n";

/* A response to the request m (RFC 3261 8.2.6), with Record-Route copied for a
 * dialog-forming request (12.1.1), a To tag, and Contact and SDP on a 200 to INVITE. */
static size_t build(struct uas *u, char *out, size_t cap, const char *base,
                    const struct slb_sip_msg *m, int status, const char *reason)
{
    struct buf b = {out, 0, cap};
    char line[128];
    snprintf(line, sizeof(line), "SIP/2.0 %d %s\r\n", status, reason);
    puts_(&b, line);
    for (uint32_t i = 0; i < m->header_count; i++) {
        const struct slb_sip_header *h = &m->headers[i];
        bool rr = h->id == SLB_HDR_RECORD_ROUTE && status > 100;
        if (h->id == SLB_HDR_VIA || h->id == SLB_HDR_FROM || h->id == SLB_HDR_CALL_ID ||
            h->id == SLB_HDR_CSEQ || rr)
            put(&b, base + h->line_off, h->line_len);
        if (h->id == SLB_HDR_TO && (int16_t)i == m->first[SLB_HDR_TO]) {
            if (m->to_tag.ptr || status == 100) {
                put(&b, base + h->line_off, h->line_len);
            } else {
                puts_(&b, "To: ");
                put(&b, h->value.ptr, h->value.len);
                snprintf(line, sizeof(line), ";tag=%s%08x\r\n", u->cfg->name,
                         (unsigned)slb_siphash(&tally_key, m->call_id.ptr, m->call_id.len));
                puts_(&b, line);
            }
        }
    }
    bool body = status == 200 && m->method_id == SLB_METHOD_INVITE && !u->cfg->no_sdp;
    if (status >= 180 && m->method_id == SLB_METHOD_INVITE) {
        snprintf(line, sizeof(line), "Contact: <sips:%s@127.0.0.1>\r\n", u->cfg->name);
        puts_(&b, line);
    }
    if (body) {
        snprintf(line, sizeof(line), "Content-Type: application/sdp\r\nContent-Length: %zu\r\n\r\n",
                 sizeof(sdp) - 1);
        puts_(&b, line);
        put(&b, sdp, sizeof(sdp) - 1);
    } else {
        puts_(&b, "Content-Length: 0\r\n\r\n");
    }
    return b.len;
}

/* The answers to m, with the statuses and reasons given, in one write: a crash (SIGKILL,
 * SIGHUP's reset) then loses all of them or none, never leaving 100 Trying delivered and
 * the final response lost. That case is real (a server dying while a call rings), but it
 * is the backend losing a call it took, which no relay can undo; the failover tests
 * measure the requests a backend never answered. */
static void send_resps(struct uas *u, struct slb_stream *s, const char *base,
                       const struct slb_sip_msg *m, int n, const int *status,
                       const char *const *reason)
{
    struct iovec iov[3];
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = u->out[i];
        iov[i].iov_len = build(u, u->out[i], sizeof(u->out[i]), base, m, status[i], reason[i]);
        total += iov[i].iov_len;
    }
    if (slb_stream_send(s, iov, n, total) == 0) {
        u->responses_sent += (uint64_t)n;
    } else {
        /* Never silently: a peer that does not read gets its connection closed. */
        u->dropped_responses++;
        slb_stream_close(s, false);
    }
}

static struct uas *uas_of(struct slb_stream *s)
{
    return (struct uas *)(void *)((char *)s->env - offsetof(struct uas, env));
}

/* The stream's frames: requests answered, keepalive pings ponged, the rest ignored; a
 * frame that cannot be read closes the connection after what is queued. */
static bool uas_frame(struct slb_stream *s, const char *base, const struct slb_sip_frame *fr,
                      const struct slb_sip_msg *m)
{
    struct uas *u = uas_of(s);
    if (atomic_load_explicit(&blackhole, memory_order_relaxed))
        return true;
    if (fr->kind == SLB_FRAME_FATAL) {
        slb_stream_close(s, true);
        return false;
    }
    if (fr->kind == SLB_FRAME_PING) {
        struct iovec iov = {"\r\n", 2};
        (void)slb_stream_send(s, &iov, 1, 2);
        return true;
    }
    if (fr->kind != SLB_FRAME_MESSAGE || !m->is_request)
        return true;
    u->requests++;
    tally(u, m);
    switch (m->method_id) {
    case SLB_METHOD_ACK:
        break;
    case SLB_METHOD_INVITE:
        send_resps(u, s, base, m, 3, (const int[]){100, 180, 200},
                   (const char *const[]){"Trying", "Ringing", "OK"});
        break;
    default:
        send_resps(u, s, base, m, 1, (const int[]){200}, (const char *const[]){"OK"});
    }
    return true;
}

static const struct slb_stream_ops uas_ops = {.frame = uas_frame};

static int on_accept(struct slb_loop *loop, struct slb_conn *conn)
{
    struct uas *u = slb_loop_user(loop);
    struct slb_stream *s = &u->streams[slb_conn_id_slot(conn->id)];
    return slb_stream_open(&u->env, s, conn, u->ctx, NULL, s);
}

static int on_data(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len)
{
    struct slb_stream *s = conn->owner;
    (void)loop;
    if (s)
        slb_stream_input(s, data, len);
    return 0;
}

static void on_drained(struct slb_loop *loop, struct slb_conn *conn)
{
    struct slb_stream *s = conn->owner;
    (void)loop;
    if (!s)
        return;
    int ev = slb_stream_flush(s);
    if (ev > 0 && (ev & SLB_TLS_EV_MORE) && !(ev & SLB_TLS_EV_WANT_WRITE))
        slb_stream_input(s, NULL, 0); /* what TLS kept while the output was blocked */
}

static void on_close(struct slb_loop *loop, struct slb_conn *conn, int reason)
{
    struct slb_stream *s = conn->owner;
    (void)loop;
    (void)reason;
    if (!s)
        return;
    conn->owner = NULL;
    slb_stream_release(s);
}

#define MAX_CONNS 4096u
#define POLL_MS   10u

/* SIGHUP's reset: every connection closed with an RST (SO_LINGER 0), as a crashed or
 * rebooted server's peer sees it. */
static void on_poll(struct slb_timer *t)
{
    struct uas *u = slb_timer_entry(t, struct uas, poll);
    unsigned r = atomic_load(&resets);
    if (r != u->seen_resets) {
        u->seen_resets = r;
        for (uint32_t i = 0; i < MAX_CONNS; i++) {
            struct slb_stream *s = &u->streams[i];
            if (s->state == SLB_STREAM_FREE || !s->conn)
                continue;
            struct linger lg = {1, 0};
            (void)setsockopt(s->conn->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            slb_stream_close(s, false);
        }
    }
    slb_timer_arm(slb_loop_wheel(&u->loop), &u->poll, POLL_MS);
}

static void *run(void *arg)
{
    struct uas *u = arg;
    /* A deep output queue: a load generator with many calls in flight gets three responses
     * per INVITE in bursts, and a mock backend must not be the one dropping them. */
    struct slb_loop_opts opts = {.max_conns = MAX_CONNS,
                                 .loop_id = (uint8_t)u->index,
                                 .out_cap_bytes = 4u << 20,
                                 .out_chunks = 8192};
    struct slb_loop_cbs cbs = {
        .on_accept = on_accept, .on_data = on_data, .on_drained = on_drained, .on_close = on_close};
    if (slb_loop_init(&u->loop, &opts, &cbs, u) < 0) {
        slb_log(SLB_LOG_ERROR, "sipslb-uas: io_uring set-up failed");
        atomic_store(&u->failed, 1);
        return (void *)1;
    }
    for (unsigned i = 0; i < u->cfg->listen.n; i++) {
        struct slb_addr a;
        char host[256];
        uint16_t port;
        if (slb_config_parse_hostport(u->cfg->listen.v[i], &a, host, sizeof(host), &port) < 0 ||
            slb_loop_listen(&u->loop, (struct sockaddr *)&a.sa, a.len, 1024, 1) < 0) {
            slb_log(SLB_LOG_ERROR, "sipslb-uas: cannot listen on %s", u->cfg->listen.v[i]);
            atomic_store(&u->failed, 1);
            slb_loop_deinit(&u->loop);
            return (void *)1;
        }
    }
    slb_timer_init(&u->poll, on_poll);
    slb_timer_arm(slb_loop_wheel(&u->loop), &u->poll, POLL_MS);
    atomic_store(&u->running, 1);
    if (!atomic_load(&u->stop))
        slb_loop_run(&u->loop);
    slb_timer_cancel(&u->poll);
    slb_loop_deinit(&u->loop);
    slb_tls_thread_cleanup();
    return NULL;
}

/* Written to PATH.tmp then renamed, so a reader never sees half a report. */
static bool any_failed(struct uas **u, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (atomic_load(&u[i]->failed))
            return true;
    return false;
}

static void write_report(struct uas **u, unsigned n, const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        slb_log(SLB_LOG_WARN, "sipslb-uas: --report %s: %s", path, strerror(errno));
        return;
    }
    uint64_t req = 0, resp = 0, dropped = 0, lost = 0;
    for (unsigned k = 0; k < n; k++) {
        req += u[k]->requests;
        resp += u[k]->responses_sent;
        dropped += u[k]->dropped_calls;
        lost += u[k]->dropped_responses;
    }
    fprintf(f, "# requests %llu responses %llu untracked-calls %llu unsent-responses %llu\n",
            (unsigned long long)req, (unsigned long long)resp, (unsigned long long)dropped,
            (unsigned long long)lost);
    for (unsigned k = 0; k < n; k++)
        for (uint32_t i = 0; i < u[k]->calls_cap; i++) {
            const struct call *c = &u[k]->calls[i];
            if (c->requests)
                fprintf(f, "%.*s %u %x\n", (int)c->key_len, u[k]->arena + c->key_off, c->requests,
                        c->methods);
        }
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        slb_log(SLB_LOG_WARN, "sipslb-uas: --report %s: %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
    static struct uas_cfg cfg;
    char err[256];
    int rc = slb_flags_parse(flags, sizeof(flags) / sizeof(flags[0]), &cfg, argc, argv,
                             "usage: sipslb-uas --cert FILE --key FILE [--listen ADDR:PORT] "
                             "[--report FILE]\nA mock SIPS backend (see bench/README.md).",
                             err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc < 0 || !cfg.cert || !cfg.key) {
        fprintf(stderr, "sipslb-uas: %s\n", rc < 0 ? err : "--cert and --key are required");
        return 2;
    }
    slb_tls_init();
    static const enum slb_tls_verify vmap[] = {SLB_TLS_VERIFY_NONE, SLB_TLS_VERIFY_OPTIONAL,
                                               SLB_TLS_VERIFY_REQUIRE};
    struct slb_tls_server_opts so = {.cert_file = cfg.cert,
                                     .key_file = cfg.key,
                                     .ca_file = cfg.ca,
                                     .verify_client = vmap[cfg.verify_client]};
    unsigned n = (unsigned)cfg.workers;
    struct uas **u = calloc(n, sizeof(*u));
    void **args = calloc(n, sizeof(void *));
    for (unsigned i = 0; i < n; i++) {
        u[i] = calloc(1, sizeof(**u));
        u[i]->cfg = &cfg;
        u[i]->index = i;
        u[i]->ctx = slb_tls_server_ctx_new(&so, err, sizeof(err));
        if (!u[i]->ctx) {
            fprintf(stderr, "sipslb-uas: %s\n", err);
            return 2;
        }
        u[i]->streams = calloc(MAX_CONNS, sizeof(*u[i]->streams));
        if (slb_stream_env_init(&u[i]->env, &uas_ops, MAX_CONNS, SLB_SIP_MAX_MSG_BYTES_DEFAULT) < 0)
            return 1;
        u[i]->calls_cap = 1;
        while (u[i]->calls_cap < 2 * (uint64_t)cfg.max_calls)
            u[i]->calls_cap <<= 1;
        u[i]->calls = calloc(u[i]->calls_cap, sizeof(struct call));
        u[i]->arena_cap = (size_t)cfg.max_calls * 64;
        u[i]->arena = malloc(u[i]->arena_cap);
        if (!u[i]->calls || !u[i]->arena || !u[i]->streams)
            return 1;
        args[i] = u[i];
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct slb_threads workers;
    if (slb_threads_start(&workers, n, false, run, args) != 0)
        return 1;
    for (;;) {
        /* Signals, and a look every 200 ms at whether a loop failed (it logged why). */
        const struct timespec poll = {0, 200 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &poll);
        if (sig < 0) {
            if (errno == EAGAIN && any_failed(u, n))
                break;
            continue;
        }
        if (sig == SIGUSR2) {
            atomic_store(&blackhole, 1);
            slb_log(SLB_LOG_INFO, "sipslb-uas: SIGUSR2: answering nothing from now on");
            continue;
        }
        if (sig == SIGHUP) {
            atomic_fetch_add(&resets, 1);
            continue;
        }
        if (sig == SIGUSR1) {
            if (cfg.report)
                write_report(u, n, cfg.report);
            continue;
        }
        break;
    }
    for (unsigned i = 0; i < n; i++) {
        atomic_store(&u[i]->stop, 1);
        if (atomic_load(&u[i]->running))
            slb_loop_stop(&u[i]->loop);
    }
    void **results = calloc(n, sizeof(void *));
    slb_threads_join(&workers, results);
    if (cfg.report)
        write_report(u, n, cfg.report);
    int status = 0;
    for (unsigned i = 0; i < n; i++)
        status |= results[i] != NULL;
    /* Everything goes back, so a sanitizer build's leak check at exit speaks of real leaks. */
    for (unsigned i = 0; i < n; i++) {
        slb_stream_env_deinit(&u[i]->env);
        slb_tls_ctx_free(u[i]->ctx);
        free(u[i]->streams);
        free(u[i]->calls);
        free(u[i]->arena);
        free(u[i]);
    }
    free(u);
    free(args);
    free(results);
    slb_tls_cleanup();
    return status;
}
