/* sipslb-bench-handoff: the cost of handing a message from one worker to another, as
 * sipslb does for a request toward a client whose connection lives on another worker: a
 * copy of a ~1 KB SIP message into the sender's outbox slot plus an IORING_OP_MSG_RING post,
 * and a post back to free the slot. Two io/ loops on two threads play ping-pong; the figures
 * are the one-way latency (half a round trip: p50, p99) and the CPU per hand-over (both
 * threads' CPU over the hand-overs). A benchmark: it asserts nothing. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/loop.h"
#include "io/timer.h"

enum { ROUNDS = 200000, MSG_BYTES = 1000 };

struct side {
    struct slb_loop loop;
    struct side *peer;
    atomic_int running;
    char outbox[MSG_BYTES];
    char inbox[MSG_BYTES];
    uint64_t count;
    double cpu_ns;
    struct slb_timer kick;
};

static struct side a, b;
static double *rtt_ns;
static double t_sent;

static double now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void post(struct side *s, uint64_t n)
{
    memcpy(s->outbox, s->inbox, MSG_BYTES); /* the message copy a hand-over makes */
    while (slb_loop_post(&s->peer->loop, n, MSG_BYTES) == -EAGAIN)
        ;
}

static void on_msg(struct slb_loop *loop, uint64_t n, uint64_t len)
{
    struct side *s = slb_loop_user(loop);
    (void)len;
    memcpy(s->inbox, s->peer->outbox, MSG_BYTES); /* the receiver reads it */
    if (s == &a) {
        double t = now_ns(CLOCK_MONOTONIC);
        rtt_ns[s->count++] = t - t_sent;
        if (s->count == ROUNDS) {
            slb_loop_stop(&a.loop);
            slb_loop_stop(&b.loop);
            return;
        }
        t_sent = now_ns(CLOCK_MONOTONIC);
    } else {
        s->count++;
    }
    post(s, n + 1);
}

static void on_kick(struct slb_timer *t)
{
    (void)t;
    if (!atomic_load(&b.running)) {
        slb_timer_arm(slb_loop_wheel(&a.loop), &a.kick, 1);
        return;
    }
    t_sent = now_ns(CLOCK_MONOTONIC);
    post(&a, 0);
}

static int on_data(struct slb_loop *l, struct slb_conn *c, const void *d, size_t n)
{
    (void)l, (void)c, (void)d, (void)n;
    return 0;
}

static void *run(void *arg)
{
    struct side *s = arg;
    struct slb_loop_opts o = {.loop_id = (uint8_t)(s == &a ? 0 : 1), .max_conns = 16};
    struct slb_loop_cbs cbs = {.on_data = on_data, .on_msg = on_msg};
    if (slb_loop_init(&s->loop, &o, &cbs, s) < 0) {
        fprintf(stderr, "io_uring set-up failed\n");
        exit(1);
    }
    atomic_store(&s->running, 1);
    if (s == &a) {
        slb_timer_init(&a.kick, on_kick);
        slb_timer_arm(slb_loop_wheel(&a.loop), &a.kick, 1);
    }
    double c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    slb_loop_run(&s->loop);
    s->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    return NULL;
}

static int cmp(const void *x, const void *y)
{
    double p = *(const double *)x, q = *(const double *)y;
    return p < q ? -1 : p > q;
}

int main(void)
{
    rtt_ns = calloc(ROUNDS, sizeof(double));
    a.peer = &b;
    b.peer = &a;
    pthread_t ta, tb;
    pthread_create(&tb, NULL, run, &b);
    pthread_create(&ta, NULL, run, &a);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    qsort(rtt_ns, ROUNDS, sizeof(double), cmp);
    printf("cross-worker hand-over (MSG_RING%s), %d-byte message, %d round trips:\n",
           slb_loop_msg_fallback(&a.loop) ? " refused: queue fallback" : "", MSG_BYTES, ROUNDS);
    printf("  one-way latency: p50 %.1f us, p99 %.1f us\n", rtt_ns[ROUNDS / 2] / 2e3,
           rtt_ns[ROUNDS * 99 / 100] / 2e3);
    printf("  CPU per hand-over (both threads): %.2f us\n",
           (a.cpu_ns + b.cpu_ns) / (2.0 * ROUNDS) / 1e3);
    return 0;
}
