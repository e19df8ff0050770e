/* Private to the files of io/: user_data encoding and the functions its files share. Includes
 * liburing, so nothing outside io/ may include it. */
#ifndef SLB_IO_LOOP_PRIV_H
#define SLB_IO_LOOP_PRIV_H

#include <liburing.h>
#include <stdint.h>

#include "io/conn.h"
#include "io/loop.h"

#define SLB_IO_NONE UINT32_MAX

/* liburing 2.3 predates it; the kernel ABI value (6.3+): the CQE posted on the target ring
 * carries sqe->file_index as its flags, which lets a message carry 64 + 32 + 32 bits. */
#ifndef IORING_MSG_RING_FLAGS_PASS
#define IORING_MSG_RING_FLAGS_PASS (1U << 1)
#endif

/* What a CQE is about: the top byte of user_data. The low 24 bits name a connection slot
 * or a listener; a message's `a` uses all 56 low bits. */
enum slb_io_ud {
    SLB_IO_UD_ACCEPT = 1, /* index: listener */
    SLB_IO_UD_LCANCEL,    /* cancel of a listener's accept; index: listener */
    SLB_IO_UD_RECV,       /* index: slot */
    SLB_IO_UD_SEND,       /* index: slot */
    SLB_IO_UD_CONNECT,    /* index: slot */
    SLB_IO_UD_CANCEL,     /* cancel for a connection; index: slot */
    SLB_IO_UD_EVENTFD,
    SLB_IO_UD_EFD_CANCEL,
    SLB_IO_UD_MSG,      /* a message from a loop; low 56 bits: a */
    SLB_IO_UD_MSG_SENT, /* our MSG_RING failed (successes are skipped) */
    SLB_IO_UD_PROBE,    /* init-time MSG_RING probe */
};

static inline uint64_t slb_io_ud(enum slb_io_ud kind, uint64_t index)
{
    return ((uint64_t)kind << SLB_MSG_A_BITS) | index;
}

static inline enum slb_io_ud slb_io_ud_kind(uint64_t ud)
{
    return (enum slb_io_ud)(ud >> SLB_MSG_A_BITS);
}

static inline uint32_t slb_io_ud_index(uint64_t ud)
{
    return (uint32_t)(ud & SLB_CONN_ID_SLOT_MASK);
}

/* The queue level at which on_drained says "write again": the loop's low-water mark for
 * a queue of the default size, a quarter of the bound for one given its own. */
static inline uint32_t slb_io_out_low(const struct slb_loop *loop, const struct slb_conn *c)
{
    return c->out_cap == loop->out_cap ? loop->out_low : c->out_cap / 4;
}

/* loop.c */
struct io_uring_sqe *slb_io_get_sqe(struct slb_loop *loop);
void slb_io_pending_add(struct slb_loop *loop, struct slb_conn *conn);
void slb_io_kick(struct slb_loop *loop);

/* conn.c */
int slb_io_conns_init(struct slb_loop *loop, const struct slb_loop_opts *opts);
void slb_io_conns_deinit(struct slb_loop *loop);
struct slb_conn *slb_io_conn_alloc(struct slb_loop *loop, int fd, uint32_t tag,
                                   enum slb_conn_state state);
void slb_io_conn_hold(struct slb_conn *conn);
void slb_io_conn_put(struct slb_loop *loop, struct slb_conn *conn);
void slb_io_conn_finalize(struct slb_loop *loop, struct slb_conn *conn);
void slb_io_conn_close_now(struct slb_loop *loop, struct slb_conn *conn, int reason);
void slb_io_conn_close_graceful(struct slb_loop *loop, struct slb_conn *conn, int reason);
void slb_io_conn_abort(struct slb_loop *loop, struct slb_conn *conn);
void slb_io_pool_wait_remove(struct slb_loop *loop, struct slb_conn *conn);
void slb_io_outq_consume(struct slb_loop *loop, struct slb_conn *conn, uint32_t n);
unsigned slb_io_outq_iov(const struct slb_loop *loop, const struct slb_conn *conn,
                         struct iovec *iov, unsigned max);

/* msg.c */
extern _Thread_local struct slb_loop *slb_io_thread_loop;
int slb_io_msg_init(struct slb_loop *loop, const struct slb_loop_opts *opts);
void slb_io_msg_deinit(struct slb_loop *loop);
void slb_io_msg_cqe(struct slb_loop *loop, uint64_t ud, int32_t res, uint32_t flags);
void slb_io_msg_drain(struct slb_loop *loop);

#endif
