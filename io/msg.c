/*
 * Messages between loops: two small integers (a, b) from one worker to another.
 *
 * Preferred transport: IORING_OP_MSG_RING on the sender's ring, aimed at the target's ring
 * fd, submitted with the sender's next batch. The target's CQE carries a in user_data (56
 * bits under our tag byte), b's low 32 bits in res and its next 16 bits in the upper half
 * of the CQE flags (IORING_MSG_RING_FLAGS_PASS). The low 16 flag bits stay 0: the kernel
 * reads some of them itself (measured on 6.18: IORING_CQE_F_32 passed to a plain ring
 * reorders messages once its CQ overflows). SQEs of one ring are issued in order, so one
 * sender's messages arrive in order. Successful sends post no CQE on the sender
 * (CQE_SKIP_SUCCESS).
 *
 * Fallback (kernel refuses MSG_RING or PASS, or opts.msg_fallback): the target owns one
 * bounded single-producer single-consumer queue per possible sender loop id, and an
 * eventfd read armed in its ring. A sender pushes, then writes the eventfd only if the
 * target has not been notified since it last drained (mq_notified), so bursts cost one
 * syscall.
 *
 * Thread: slb_loop_post runs on the sender's thread; everything else on the target's.
 * Shared state is only the queues' head/tail and mq_notified (atomics).
 */
#include "io/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/loop-priv.h"

#define PROBE_FLAGS 0x5a000000u

_Thread_local struct slb_loop *slb_io_thread_loop;

struct slb_msg_ent {
    uint64_t a;
    uint64_t b;
};

/* Producer and consumer indexes on separate cache lines; entries live in loop->mq_ents. */
struct slb_msg_queue {
    _Alignas(64) atomic_uint tail; /* written by the sender */
    _Alignas(64) atomic_uint head; /* written by the target */
};

/* Sends one MSG_RING with passed flags to our own ring and checks both ends. */
static bool probe_msg_ring(struct slb_loop *loop)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(loop->ring);
    if (!sqe)
        return false;
    io_uring_prep_msg_ring(sqe, loop->ring->ring_fd, 0, slb_io_ud(SLB_IO_UD_PROBE, 1), 0);
    sqe->msg_ring_flags = IORING_MSG_RING_FLAGS_PASS;
    sqe->file_index = PROBE_FLAGS;
    io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_PROBE, 0));
    if (io_uring_submit(loop->ring) < 1)
        return false;
    bool sent = false, failed = false, got = false;
    for (int i = 0; i < 2 && !failed && !(sent && got); i++) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 1, .tv_nsec = 0};
        if (io_uring_wait_cqe_timeout(loop->ring, &cqe, &ts) < 0)
            break;
        if (cqe->user_data == slb_io_ud(SLB_IO_UD_PROBE, 0)) {
            sent = cqe->res >= 0;
            failed = cqe->res < 0;
        } else if (cqe->user_data == slb_io_ud(SLB_IO_UD_PROBE, 1)) {
            got = cqe->flags == PROBE_FLAGS;
        }
        io_uring_cqe_seen(loop->ring, cqe);
    }
    return sent && got;
}

int slb_io_msg_init(struct slb_loop *loop, const struct slb_loop_opts *o)
{
    loop->msg_ring_ok = probe_msg_ring(loop);
    loop->msg_fallback = o->msg_fallback || !loop->msg_ring_ok;
    if (!loop->msg_fallback)
        return 0;
    loop->mq_peers = o->msg_peers;
    loop->mq_len = o->msg_queue_len;
    loop->mq = aligned_alloc(64, (size_t)o->msg_peers * sizeof(*loop->mq));
    loop->mq_ents = calloc((size_t)o->msg_peers * o->msg_queue_len, sizeof(*loop->mq_ents));
    if (!loop->mq || !loop->mq_ents)
        return -ENOMEM;
    for (uint32_t i = 0; i < o->msg_peers; i++) {
        atomic_init(&loop->mq[i].tail, 0);
        atomic_init(&loop->mq[i].head, 0);
    }
    return 0;
}

void slb_io_msg_deinit(struct slb_loop *loop)
{
    free(loop->mq);
    free(loop->mq_ents);
    loop->mq = NULL;
    loop->mq_ents = NULL;
}

static void deliver(struct slb_loop *loop, uint64_t a, uint64_t b)
{
    loop->counters.msgs_received++;
    if (!loop->tearing_down && loop->cbs.on_msg)
        loop->cbs.on_msg(loop, a, b);
}

void slb_io_msg_cqe(struct slb_loop *loop, uint64_t ud, int32_t res, uint32_t flags)
{
    if (slb_io_ud_kind(ud) == SLB_IO_UD_MSG_SENT) {
        loop->counters.msgs_failed++; /* only failures post a CQE here */
        if (loop->cbs.on_msg_failed)
            loop->cbs.on_msg_failed(loop, ud & SLB_MSG_A_MAX, res);
        return;
    }
    deliver(loop, ud & SLB_MSG_A_MAX, (uint64_t)(uint32_t)res | ((uint64_t)(flags >> 16) << 32));
}

void slb_io_msg_drain(struct slb_loop *loop)
{
    /* Clear first: a push that lands after our look at its tail will ring again. */
    atomic_exchange(&loop->mq_notified, 0);
    uint32_t mask = loop->mq_len - 1;
    for (uint32_t p = 0; p < loop->mq_peers; p++) {
        struct slb_msg_queue *q = &loop->mq[p];
        unsigned head = atomic_load_explicit(&q->head, memory_order_relaxed);
        unsigned tail = atomic_load(&q->tail);
        /* At most mq_len entries: bounded even if senders keep pushing. */
        for (unsigned n = tail - head; n > 0; n--, head++) {
            struct slb_msg_ent e = loop->mq_ents[(size_t)p * loop->mq_len + (head & mask)];
            atomic_store_explicit(&q->head, head + 1, memory_order_release);
            deliver(loop, e.a, e.b);
        }
    }
}

static int post_queue(struct slb_loop *src, struct slb_loop *dst, uint64_t a, uint64_t b)
{
    if (src->id >= dst->mq_peers)
        return -EINVAL;
    struct slb_msg_queue *q = &dst->mq[src->id];
    unsigned tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    unsigned head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail - head >= dst->mq_len)
        return -EAGAIN;
    struct slb_msg_ent *e =
        &dst->mq_ents[(size_t)src->id * dst->mq_len + (tail & (dst->mq_len - 1))];
    e->a = a;
    e->b = b;
    atomic_store(&q->tail, tail + 1);
    if (!atomic_exchange(&dst->mq_notified, 1))
        slb_io_kick(dst);
    src->counters.msgs_sent++;
    return 0;
}

int slb_loop_post(struct slb_loop *dst, uint64_t a, uint64_t b)
{
    struct slb_loop *src = slb_io_thread_loop;
    if (a > SLB_MSG_A_MAX || b > SLB_MSG_B_MAX)
        return -EINVAL;
    if (!src)
        return -EPERM;
    if (dst->msg_fallback)
        return post_queue(src, dst, a, b);
    if (!src->msg_ring_ok)
        return -EOPNOTSUPP;
    struct io_uring_sqe *sqe = slb_io_get_sqe(src);
    if (!sqe)
        return -EAGAIN;
    io_uring_prep_msg_ring(sqe, dst->ring->ring_fd, (uint32_t)b, slb_io_ud(SLB_IO_UD_MSG, a), 0);
    sqe->msg_ring_flags = IORING_MSG_RING_FLAGS_PASS;
    sqe->file_index = (uint32_t)(b >> 32) << 16;
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, slb_io_ud(SLB_IO_UD_MSG_SENT, a)); /* a failure names it */
    src->counters.msgs_sent++;
    return 0;
}
