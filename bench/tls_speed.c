/* tls_speed.c — CPU cost of the TLS layer, built once per wolfSSL (optimized and Debian's).
 *
 * Everything goes through tls/ (slb_tls_*), the same path the balancer takes: two in-memory
 * sessions pumped into each other, one thread, CPU time from CLOCK_THREAD_CPUTIME_ID.
 *  - AES-128-GCM: one 1 KiB record per slb_tls_write on a TLS 1.3 session pinned to
 *    TLS_AES_128_GCM_SHA256 (record layer included: header, nonce, tag), and the decryption
 *    of such records fed 64 at a time.
 *  - Handshakes: full TLS 1.3 with P-256 ECDHE and an ECDSA P-256 certificate, verified by
 *    the client against its CA, including session create/free; server-side CPU and both
 *    sides. Also a ticket resumption (still P-256 ECDHE).
 *  - Memory: heap bytes in use per idle session after the handshake (glibc mallinfo2).
 *
 * Usage: sipslb-tls-speed [-t seconds_per_row] [-d certs_dir]
 * Certificates come from tests/tls/gen-certs.sh (the build makes them next to this binary).
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tls/tls.h"

#define REC_BYTES  1024
#define DEC_BATCH  64
#define WIRE_BYTES (4u << 20)

static const char *certs_dir = SLB_BENCH_TLS_CERTS;
static double seconds_per_row = 1.0;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *path(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, sizeof(bufs[0]), "%s/%s", certs_dir, name);
    return b;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "sipslb-tls-speed: %s: %s\n", what, why);
    exit(1);
}

/* Ciphertext captured from one side, or discarded when `discard` is set. */
struct wire {
    unsigned char *buf;
    size_t len;
    bool discard;
};

static int wire_out(void *arg, const void *data, size_t len)
{
    struct wire *w = arg;
    if (w->discard)
        return (int)len;
    if (w->len + len > WIRE_BYTES)
        return -ENOBUFS;
    memcpy(w->buf + w->len, data, len);
    w->len += len;
    return (int)len;
}

struct side {
    struct slb_tls_conn conn;
    struct wire out;
};

static unsigned char plain[64 * 1024];
static unsigned char inbox[WIRE_BYTES];

/* Feeds what `from` wrote into `to`, `pieces` feeds of equal size (1: all at once);
 * returns bytes moved, or -1 on failure. The clock is read once around all the feeds:
 * a thread CPU clock is a system call, dearer than the feed of one small record. */
static long move_in(struct side *from, struct side *to, double *cpu_to, size_t pieces)
{
    size_t n = from->out.len;
    if (n == 0)
        return 0;
    memcpy(inbox, from->out.buf, n);
    from->out.len = 0;
    double t0 = cpu_to ? cpu_now() : 0;
    size_t got = 0, step = n / pieces > 0 ? n / pieces : n;
    int rc = 0;
    for (size_t off = 0; off < n && rc >= 0; off += step) {
        size_t len = n - off < 2 * step ? n - off : step;
        got = 0;
        rc = slb_tls_feed(&to->conn, inbox + off, len, plain, sizeof(plain), &got);
        while (rc >= 0 && (rc & SLB_TLS_EV_MORE))
            rc = slb_tls_read(&to->conn, plain, sizeof(plain), &got);
        if (len != step)
            break;
    }
    if (cpu_to)
        *cpu_to += cpu_now() - t0;
    if (rc < 0) {
        char why[200];
        fprintf(stderr, "feed failed: %s\n", slb_tls_error_string(&to->conn, why, sizeof(why)));
        return -1;
    }
    return (long)n;
}

static long move(struct side *from, struct side *to, double *cpu_to)
{
    return move_in(from, to, cpu_to, 1);
}

struct bench {
    struct slb_tls_ctx *sctx, *cctx;
    struct side s, c;
};

/* One connection from init to handshake done. cpu_server (if set) accumulates the server's
 * share: its session init, every feed it gets, its deinit (done by the caller). */
static void connect_pair(struct bench *b, struct slb_tls_session *resume, double *cpu_server)
{
    double t0 = cpu_server ? cpu_now() : 0;
    if (slb_tls_conn_init(&b->s.conn, b->sctx, NULL, wire_out, &b->s.out) != 0)
        die("server session", "init failed");
    if (cpu_server)
        *cpu_server += cpu_now() - t0;
    if (slb_tls_conn_init(&b->c.conn, b->cctx, "localhost", wire_out, &b->c.out) != 0)
        die("client session", "init failed");
    if (resume && slb_tls_conn_set_session(&b->c.conn, resume) != 0)
        die("client session", "cannot set the resumption session");
    if (slb_tls_start(&b->c.conn) < 0)
        die("client", "start failed");
    for (int round = 0; round < 20; round++) {
        long m1 = move(&b->c, &b->s, cpu_server);
        long m2 = move(&b->s, &b->c, NULL);
        if (m1 < 0 || m2 < 0)
            die("handshake", "failed");
        if (m1 == 0 && m2 == 0)
            break;
    }
    if (!slb_tls_handshake_done(&b->s.conn) || !slb_tls_handshake_done(&b->c.conn))
        die("handshake", "did not complete");
}

static void disconnect_pair(struct bench *b, double *cpu_server)
{
    double t0 = cpu_server ? cpu_now() : 0;
    slb_tls_conn_deinit(&b->s.conn);
    if (cpu_server)
        *cpu_server += cpu_now() - t0;
    slb_tls_conn_deinit(&b->c.conn);
    b->s.out.len = b->c.out.len = 0;
}

static void row(const char *what, double us, long ops)
{
    printf("| %-62s | %10.2f us | %8ld |\n", what, us, ops);
}

static void bench_records(struct bench *b)
{
    connect_pair(b, NULL, NULL);
    if (move(&b->s, &b->c, NULL) < 0) /* the TLS 1.3 ticket */
        die("ticket", "failed");
    if (strcmp(slb_tls_cipher_name(&b->c.conn), "TLS13-AES128-GCM-SHA256") != 0)
        die("cipher", slb_tls_cipher_name(&b->c.conn));

    static unsigned char msg[REC_BYTES];
    memset(msg, 'x', sizeof(msg));
    struct iovec iov = {.iov_base = msg, .iov_len = sizeof(msg)};

    /* Encrypt: the client's records go nowhere. */
    b->c.out.discard = true;
    long n = 0;
    double t0 = cpu_now(), t;
    do {
        for (int i = 0; i < 1000; i++)
            if (slb_tls_write(&b->c.conn, &iov, 1) != REC_BYTES)
                die("encrypt", "write failed");
        n += 1000;
        t = cpu_now() - t0;
    } while (t < seconds_per_row);
    row("AES-128-GCM encrypt, 1 KiB record (TLS 1.3 record layer)", t * 1e6 / (double)n, n);

    /* Decrypt: batches of records produced (untimed) then fed (timed), on a fresh connection
     * since the server must see every record of the client's sequence: all in one feed, or
     * one record per feed, the low-load case where every read brings one message. */
    b->c.out.discard = false;
    static const size_t pieces[] = {1, DEC_BATCH};
    for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
        disconnect_pair(b, NULL);
        connect_pair(b, NULL, NULL);
        if (move(&b->s, &b->c, NULL) < 0)
            die("ticket", "failed");
        n = 0;
        double spent = 0;
        do {
            for (int i = 0; i < DEC_BATCH; i++)
                if (slb_tls_write(&b->c.conn, &iov, 1) != REC_BYTES)
                    die("encrypt", "write failed");
            if (move_in(&b->c, &b->s, &spent, pieces[k]) < 0)
                die("decrypt", "feed failed");
            n += DEC_BATCH;
        } while (spent < seconds_per_row);
        row(pieces[k] > 1 ? "AES-128-GCM decrypt, 1 KiB record, one record per feed"
                          : "AES-128-GCM decrypt, 1 KiB record (TLS 1.3 record layer)",
            spent * 1e6 / (double)n, n);
    }
    disconnect_pair(b, NULL);
}

static void bench_handshakes(struct bench *b)
{
    long n = 0;
    double server = 0, t0 = cpu_now(), t;
    do {
        connect_pair(b, NULL, &server);
        disconnect_pair(b, &server);
        n++;
        t = cpu_now() - t0;
    } while (t < seconds_per_row * 2);
    row("TLS 1.3 full handshake (P-256 ECDHE, ECDSA P-256 cert): server", server * 1e6 / (double)n,
        n);
    row("TLS 1.3 full handshake (P-256 ECDHE, ECDSA P-256 cert): both", t * 1e6 / (double)n, n);

    /* Resumption: a ticket from one full handshake, reused (tickets stay valid for reuse
     * here; a real client would take the fresh one each time). */
    connect_pair(b, NULL, NULL);
    move(&b->s, &b->c, NULL);
    struct slb_tls_session *sess = slb_tls_session_get(&b->c.conn);
    disconnect_pair(b, NULL);
    if (sess == NULL)
        die("resumption", "no session");
    n = 0;
    server = 0;
    t0 = cpu_now();
    do {
        connect_pair(b, sess, &server);
        if (!slb_tls_resumed(&b->s.conn))
            die("resumption", "server did not resume");
        disconnect_pair(b, &server);
        n++;
        t = cpu_now() - t0;
    } while (t < seconds_per_row);
    row("TLS 1.3 ticket resumption (P-256 ECDHE): server", server * 1e6 / (double)n, n);
    row("TLS 1.3 ticket resumption (P-256 ECDHE): both", t * 1e6 / (double)n, n);
    slb_tls_session_free(sess);
}

/* Heap in use per idle session once the handshake is over: hold K server (then client)
 * sessions open and compare glibc's in-use byte count with the count before. */
static void bench_memory(struct bench *b)
{
    enum { K = 200 };
    static struct slb_tls_conn keep[K];
    for (int pass = 0; pass < 2; pass++) {
        bool server = pass == 0;
        size_t before = mallinfo2().uordblks;
        for (int i = 0; i < K; i++) {
            connect_pair(b, NULL, NULL);
            move(&b->s, &b->c, NULL); /* deliver the ticket: the client session is idle too */
            struct side *keep_side = server ? &b->s : &b->c;
            struct side *drop_side = server ? &b->c : &b->s;
            keep[i] = keep_side->conn; /* moving is fine: nothing uses the old address now */
            slb_tls_conn_deinit(&drop_side->conn);
            b->s.out.len = b->c.out.len = 0;
        }
        size_t after = mallinfo2().uordblks;
        for (int i = 0; i < K; i++)
            slb_tls_conn_deinit(&keep[i]);
        char what[100];
        snprintf(what, sizeof(what), "heap per idle %s session after handshake (bytes)",
                 server ? "server" : "client");
        if (after > before)
            printf("| %-62s | %10.0f B  | %8d |\n", what, (double)(after - before) / K, K);
        else /* sanitizer allocators do not feed mallinfo2 */
            printf("| %-62s | %13s | %8d |\n", what, "n/a", K);
    }
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "t:d:h")) != -1) {
        switch (opt) {
        case 't':
            seconds_per_row = atof(optarg);
            break;
        case 'd':
            certs_dir = optarg;
            break;
        default:
            fprintf(stderr, "usage: %s [-t seconds_per_row] [-d certs_dir]\n", argv[0]);
            return 2;
        }
    }
    if (seconds_per_row <= 0)
        seconds_per_row = 1.0;
    if (slb_tls_init() != 0)
        die("init", "wolfSSL init failed");

    char err[512];
    struct slb_tls_server_opts so = {
        .cert_file = path("server-ec.pem"),
        .key_file = path("server-ec.key"),
        .ciphers = "TLS13-AES128-GCM-SHA256",
        .groups = "P-256",
        .min_version = SLB_TLS_VERSION_1_3,
    };
    struct slb_tls_client_opts co = {
        .ca_file = path("ca.pem"),
        .verify_server = SLB_TLS_VERIFY_REQUIRE,
        .ciphers = "TLS13-AES128-GCM-SHA256",
        .groups = "P-256",
        .min_version = SLB_TLS_VERSION_1_3,
    };
    struct bench b = {0};
    b.sctx = slb_tls_server_ctx_new(&so, err, sizeof(err));
    if (b.sctx == NULL)
        die("server context", err);
    b.cctx = slb_tls_client_ctx_new(&co, err, sizeof(err));
    if (b.cctx == NULL)
        die("client context", err);
    b.s.out.buf = malloc(WIRE_BYTES);
    b.c.out.buf = malloc(WIRE_BYTES);
    if (!b.s.out.buf || !b.c.out.buf)
        die("memory", "out of memory");

    printf("sipslb-tls-speed: wolfSSL %s, %s; CPU time per operation, one thread\n\n",
           slb_tls_library_version(),
           slb_tls_library_has_asm() ? "with AES-NI + x86-64 SP assembly"
                                     : "without assembly speed-ups");
    printf("| %-62s | %13s | %8s |\n", "operation", "CPU time/op", "ops");
    printf("|%s|%s|%s|\n", "----------------------------------------------------------------",
           "---------------", "----------");
    bench_records(&b);
    bench_handshakes(&b);
    bench_memory(&b);

    slb_tls_ctx_free(b.sctx);
    slb_tls_ctx_free(b.cctx);
    free(b.s.out.buf);
    free(b.c.out.buf);
    slb_tls_cleanup();
    return 0;
}
