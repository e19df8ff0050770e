/* Cross-loop messages: two loops on two threads, MSG_RING and the queue fallback. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

enum { N_MSGS = 50000, PER_TICK = 400 };

static struct h_srv g_rx, g_tx;

struct rx_ctx {
    uint64_t next;
    int order_errors;
    atomic_int done;
};

struct tx_ctx {
    struct slb_loop *dst;
    struct slb_timer tick;
    uint64_t sent;
    uint64_t eagain;
    int errors;
};

static uint64_t mix(uint64_t seq)
{
    return (seq * 0x9E3779B97F4A7C15ull) & SLB_MSG_B_MAX; /* all 48 bits of b */
}

static void rx_msg(struct slb_loop *loop, uint64_t a, uint64_t b)
{
    struct h_srv *s = slb_loop_user(loop);
    struct rx_ctx *cx = s->ctx;
    if (a != cx->next || b != mix(a))
        cx->order_errors++;
    cx->next = a + 1;
    if (cx->next == N_MSGS)
        atomic_store(&cx->done, 1);
}

static void tx_tick(struct slb_timer *t)
{
    struct tx_ctx *cx = slb_timer_entry(t, struct tx_ctx, tick);
    for (int i = 0; i < PER_TICK && cx->sent < N_MSGS; i++) {
        int rc = slb_loop_post(cx->dst, cx->sent, mix(cx->sent));
        if (rc == -EAGAIN) {
            cx->eagain++;
            break; /* queue full: the receiver catches up, retry next tick */
        }
        if (rc < 0) {
            cx->errors++;
            return;
        }
        cx->sent++;
    }
    if (cx->sent < N_MSGS)
        slb_timer_arm(slb_loop_wheel(&g_tx.loop), t, 1);
}

static int tx_setup(struct h_srv *s)
{
    struct tx_ctx *cx = s->ctx;
    slb_timer_init(&cx->tick, tx_tick);
    slb_timer_arm(slb_loop_wheel(&s->loop), &cx->tick, 1);
    return 0;
}

static int no_listen(struct h_srv *s)
{
    (void)s;
    return 0;
}

static void run_pair(bool fallback, bool plain)
{
    static struct rx_ctx rx;
    static struct tx_ctx tx;
    h_echo_cbs(&g_rx.cbs);
    g_rx.cbs.on_msg = rx_msg;
    g_rx.setup = no_listen;
    g_rx.ctx = &rx;
    g_rx.opts.loop_id = 0;
    g_rx.opts.msg_fallback = fallback;
    g_rx.opts.plain_setup = plain;
    g_rx.opts.msg_queue_len = 128; /* small: exercise -EAGAIN */
    int rc = h_srv_start(&g_rx);
    if (h_refused(rc))
        cr_skip_test("kernel refused io_uring setup: %s", strerror(-rc));
    cr_assert_eq(rc, 0);
    if (!fallback && slb_loop_msg_fallback(&g_rx.loop)) {
        h_srv_stop(&g_rx);
        cr_skip_test("kernel refused MSG_RING with passed flags");
    }
    cr_assert_eq(slb_loop_msg_fallback(&g_rx.loop), fallback);
    h_echo_cbs(&g_tx.cbs);
    g_tx.setup = tx_setup;
    g_tx.ctx = &tx;
    g_tx.opts.loop_id = 1;
    g_tx.opts.msg_fallback = fallback;
    g_tx.opts.plain_setup = plain;
    tx.dst = &g_rx.loop;
    cr_assert_eq(h_srv_start(&g_tx), 0);
    cr_assert(h_wait_atomic(&rx.done, 1, 8000), "received %lu of %d", (unsigned long)rx.next,
              N_MSGS);
    h_srv_stop(&g_tx);
    h_srv_stop(&g_rx);
    cr_assert_eq(tx.errors, 0);
    cr_assert_eq(rx.order_errors, 0);
    cr_assert_eq(rx.next, N_MSGS);
    cr_assert_eq(g_tx.loop.counters.msgs_sent, N_MSGS);
    cr_assert_eq(g_tx.loop.counters.msgs_failed, 0);
    cr_assert_eq(g_rx.loop.counters.msgs_received, N_MSGS);
    cr_log_info("%s%s: %lu EAGAIN", fallback ? "fallback" : "MSG_RING",
                plain ? " (plain rings)" : "", (unsigned long)tx.eagain);
}

Test(msg, msg_ring_post_between_two_loop_threads_delivers_every_message_in_order, .timeout = 15)
{
    run_pair(false, false);
}

Test(msg, msg_ring_post_between_plain_rings_delivers_every_message_in_order, .timeout = 15)
{
    run_pair(false, true);
}

Test(msg, fallback_queue_post_between_two_loop_threads_delivers_every_message_in_order,
     .timeout = 15)
{
    run_pair(true, false);
}

static void noop_msg(struct slb_loop *loop, uint64_t a, uint64_t b)
{
    (void)loop, (void)a, (void)b;
}

static int noop_data(struct slb_loop *loop, struct slb_conn *conn, const void *d, size_t n)
{
    (void)loop, (void)conn, (void)d, (void)n;
    return 0;
}

Test(msg, post_checks_its_arguments_and_caller)
{
    static struct slb_loop loop;
    struct slb_loop_cbs cbs = {.on_data = noop_data, .on_msg = noop_msg};
    int rc = slb_loop_init(&loop, NULL, &cbs, NULL);
    if (h_refused(rc))
        cr_skip_test("kernel refused io_uring setup");
    cr_assert_eq(rc, 0);
    cr_assert_eq(slb_loop_post(&loop, SLB_MSG_A_MAX + 1, 0), -EINVAL);
    cr_assert_eq(slb_loop_post(&loop, 0, SLB_MSG_B_MAX + 1), -EINVAL);
    cr_assert_eq(slb_loop_post(&loop, SLB_MSG_A_MAX, SLB_MSG_B_MAX), 0);
    slb_loop_deinit(&loop);
    cr_assert_eq(slb_loop_post(&loop, 1, 2), -EPERM, "no loop on this thread any more");
}
