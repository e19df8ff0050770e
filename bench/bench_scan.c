/* sipslb-bench-scan: what the SIP message layer costs per message on one core, set beside
 * the memory-touch floor measured in the same run: one memchr pass for '\n' over the same
 * bytes. A benchmark, not a test: it prints figures and asserts nothing about speed.
 *
 * The mix is a realistic call plus registration traffic (1 KB INVITE with SDP, 200 OK with
 * SDP, ACK, BYE, REGISTER, OPTIONS) taken from tests/corpus, laid back to back in one
 * buffer as a TLS stream would deliver them. Single-threaded. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/sip.h"
#include "core/sip_edit.h"

#ifndef SLB_CORPUS_DIR
#define SLB_CORPUS_DIR "tests/corpus"
#endif

static const char *mix_files[] = {
    "valid/invite-sdp.sip", "valid/200-ok-invite.sip", "valid/ack.sip",
    "valid/bye.sip",        "valid/register.sip",      "valid/options.sip",
};
#define MIX_N (sizeof(mix_files) / sizeof(mix_files[0]))

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static char *load(const char *dir, const char *rel, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "sipslb-bench-scan: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    static char tmp[65536];
    *len = fread(tmp, 1, sizeof(tmp), f);
    fclose(f);
    char *p = malloc(*len);
    memcpy(p, tmp, *len);
    return p;
}

static struct slb_sip_msg msg;
static struct slb_sip_header hdrs[SLB_SIP_MAX_HEADERS_DEFAULT];
static volatile size_t sink;

/* One pass of the floor: find every '\n' with memchr. */
static size_t memchr_pass(const char *buf, size_t len)
{
    size_t lines = 0;
    const char *p = buf, *end = buf + len;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return lines;
}

/* One pass of the framer + scanner over the stream. Returns messages seen. */
static size_t frame_pass(const char *buf, size_t len, const struct slb_sip_limits *lim)
{
    size_t n = 0, at = 0;
    while (at < len) {
        struct slb_sip_frame fr = {0};
        slb_sip_frame(buf + at, len - at, lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
        if (fr.kind != SLB_FRAME_MESSAGE)
            abort(); /* the mix is valid */
        at += fr.frame_len;
        n++;
    }
    return n;
}

/* Frame + scan + the edits the proxy makes on each message, ending in an iovec list. */
static size_t proxy_pass(const char *buf, size_t len, const struct slb_sip_limits *lim)
{
    static struct slb_sip_edit ed;
    static const char via[] = "SIP/2.0/TLS lb.example.com:5061;branch=z9hG4bKslb1.0a1b2c3d4e5f";
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    size_t n = 0, at = 0, bytes = 0;
    while (at < len) {
        struct slb_sip_frame fr = {0};
        slb_sip_frame(buf + at, len - at, lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
        slb_sip_edit_init(&ed, buf + at, fr.frame_len);
        if (msg.is_request) {
            slb_sip_edit_via_received(&ed, &msg, "192.0.2.10", 10, 40312);
            slb_sip_edit_max_forwards(&ed, &msg);
            slb_sip_edit_push_via(&ed, &msg, via, sizeof(via) - 1);
        } else {
            slb_sip_edit_pop_via(&ed, &msg);
        }
        int k = slb_sip_edit_iov(&ed, iov, (int)SLB_SIP_EDIT_MAX_IOV);
        bytes += (size_t)k + iov[0].iov_len;
        at += fr.frame_len;
        n++;
    }
    sink += bytes;
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define RUNS 15

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

/* CPU ns per pass of expr, averaged over reps passes. */
#define TIME_NS(expr, reps)                                                                \
    ({                                                                                     \
        double t0_ = cpu_ns();                                                             \
        for (long i_ = 0; i_ < (reps); i_++)                                               \
            sink += (expr);                                                                \
        (cpu_ns() - t0_) / (double)(reps);                                                 \
    })

int main(int argc, char **argv)
{
    const char *dir = SLB_CORPUS_DIR;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--corpus") && i + 1 < argc)
            dir = argv[++i];
        else {
            fprintf(stderr, "usage: sipslb-bench-scan [--corpus DIR] [--json]\n");
            return 2;
        }
    }
    /* The stream: the mix repeated to about 64 KB, hot in cache as after decryption. */
    size_t lens[MIX_N], mix_bytes = 0;
    char *msgs[MIX_N];
    for (size_t i = 0; i < MIX_N; i++) {
        msgs[i] = load(dir, mix_files[i], &lens[i]);
        mix_bytes += lens[i];
    }
    size_t copies = 65536 / mix_bytes, len = 0;
    char *buf = malloc(copies * mix_bytes);
    for (size_t c = 0; c < copies; c++)
        for (size_t i = 0; i < MIX_N; i++) {
            memcpy(buf + len, msgs[i], lens[i]);
            len += lens[i];
        }
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    size_t n_msgs = frame_pass(buf, len, &lim);
    long reps = 100;

    /* The three are interleaved within each run and the ratio taken per run, so a burst
     * of noise from the other core hits the floor and the scan alike. */
    double t_floor[RUNS], t_scan[RUNS], t_proxy[RUNS], ratio[RUNS];
    for (int r = 0; r < RUNS; r++) {
        t_floor[r] = TIME_NS(memchr_pass(buf, len), reps);
        t_scan[r] = TIME_NS(frame_pass(buf, len, &lim), reps);
        t_proxy[r] = TIME_NS(proxy_pass(buf, len, &lim), reps);
        ratio[r] = t_scan[r] / t_floor[r];
    }
    double floor_ns = median(t_floor, RUNS), scan_ns = median(t_scan, RUNS);
    double proxy_ns = median(t_proxy, RUNS), scan_ratio = median(ratio, RUNS);
    double per_msg = scan_ns / (double)n_msgs, floor_per = floor_ns / (double)n_msgs;
    double proxy_per = proxy_ns / (double)n_msgs;
    double gbs = (double)len / scan_ns, floor_gbs = (double)len / floor_ns;
    if (json) {
        printf("{\"messages\":%zu,\"bytes\":%zu,\"avg_msg_bytes\":%.0f,"
               "\"memchr_ns_per_msg\":%.1f,\"memchr_gb_s\":%.2f,"
               "\"scan_ns_per_msg\":%.1f,\"scan_gb_s\":%.2f,\"scan_vs_memchr\":%.2f,"
               "\"scan_edit_ns_per_msg\":%.1f}\n",
               n_msgs, len, (double)len / (double)n_msgs, floor_per, floor_gbs, per_msg, gbs,
               scan_ratio, proxy_per);
        return 0;
    }
    printf("SIP message layer on one core: %zu messages, %zu bytes (%.0f B/message average)\n",
           n_msgs, len, (double)len / (double)n_msgs);
    printf("  mix: INVITE+SDP, 200 OK+SDP, ACK, BYE, REGISTER, OPTIONS; median of %d runs\n", RUNS);
    printf("  %-34s %8.1f ns/msg  %6.2f GB/s\n", "memchr('\\n') pass (floor)", floor_per, floor_gbs);
    printf("  %-34s %8.1f ns/msg  %6.2f GB/s  %.2fx the floor\n", "frame + full scan", per_msg,
           gbs, scan_ratio);
    printf("  %-34s %8.1f ns/msg\n", "frame + scan + proxy edits + iovec", proxy_per);
    return 0;
}
