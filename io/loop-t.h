/* Loop types: options, consumer callbacks, counters and the per-worker loop itself. */
#ifndef SLB_IO_LOOP_T_H
#define SLB_IO_LOOP_T_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/pool-t.h"
#include "io/conn-t.h"
#include "io/timer-t.h"

#define SLB_LOOP_LISTENERS_MAX 16
#define SLB_LOOP_SEND_IOV_MAX  16   /* chunks gathered into one sendmsg */
#define SLB_LOOP_SPIN_US_MAX   1000 /* bound on slb_loop_opts.spin_us */
#define SLB_MSG_A_BITS         56   /* a message's `a` travels in a CQE's user_data */
#define SLB_MSG_A_MAX          (((uint64_t)1 << SLB_MSG_A_BITS) - 1)
#define SLB_MSG_B_BITS         48 /* `b` in a CQE's res and the high half of its flags */
#define SLB_MSG_B_MAX          (((uint64_t)1 << SLB_MSG_B_BITS) - 1)

struct io_uring; /* only io/ sees liburing */
struct io_uring_buf_ring;
struct slb_msg_queue; /* fallback message queues, private to io/msg.c */
struct slb_msg_ent;
struct slb_loop;

/* Loop ids are 8 bits (they go into every connection id): at most this many loops. */
#define SLB_LOOPS_MAX 256u

/* Boot-time options. Zero means "default" for every field. */
struct slb_loop_opts {
    uint32_t max_conns;           /* connection slots (1024; at most 2^24) */
    uint32_t ring_entries;        /* SQ entries (256); the CQ gets 4x */
    uint32_t recv_bufs;           /* provided receive buffers, power of two (256, max 32768) */
    uint32_t recv_buf_bytes;      /* size of each (16384) */
    uint32_t out_cap_bytes;       /* output queue capacity per connection (65536) */
    uint32_t out_low_bytes;       /* on_drained when the queue falls to this (out_cap / 4) */
    uint32_t out_chunk_bytes;     /* output pool chunk (4096) */
    uint32_t out_chunks;          /* chunks in the pool (2 * max_conns, at least cap / chunk) */
    uint32_t out_reserve_chunks;  /* of those, only for connections marked reserved (0) */
    uint32_t cqe_batch;           /* CQEs handled per turn (256) */
    uint32_t stop_grace_ms;       /* slb_loop_stop waits this long for output to flush (5000) */
    uint32_t linger_ms;           /* bound on a close after flush, flush and FIN wait (5000) */
    uint32_t msg_peers;           /* fallback only: loop ids that may post here (256) */
    uint32_t msg_queue_len;       /* fallback only: entries per sender, power of two (256) */
    uint32_t accept_rcvbuf_bytes; /* SO_RCVBUF of accepted sockets, which bounds what still
                                   * arrives after a pause (0: the kernel's autotuning) */
    uint32_t keepalive_idle_s;    /* TCP keepalive on every socket after this idle time (0:
                                   * off); probes every idle/3 s (at least 1), 3 of them */
    uint32_t spin_us;             /* before sleeping, watch for work this long when recent
                                   * idle gaps were that short (0: always sleep at once) */
    uint8_t loop_id;              /* worker index, goes into every connection id */
    bool plain_setup;             /* skip SINGLE_ISSUER/DEFER_TASKRUN (tests, old kernels) */
    bool msg_fallback;            /* receive messages by queue + eventfd even if MSG_RING works */
};

/* The consumer's hooks. All run on the loop's thread, inside slb_loop_run (on_close and
 * on_connect also inside slb_loop_deinit, with -ECANCELED). Any may be NULL except on_data.
 * A conn pointer passed in is valid for the call; the conn's id stays valid until
 * on_close. */
struct slb_loop_cbs {
    /* A connection was accepted on a listener (conn->tag is the listener's tag). Return < 0
     * to refuse it: it is closed and on_close is not called. */
    int (*on_accept)(struct slb_loop *loop, struct slb_conn *conn);
    /* Result of slb_loop_connect: res 0 connected (return < 0 to close it without
     * on_close), or a negative errno (-ECONNREFUSED, -ETIMEDOUT from slb_conn_set_timeout,
     * -ECANCELED on close or teardown): then the conn is gone when this returns. */
    int (*on_connect)(struct slb_loop *loop, struct slb_conn *conn, int res);
    /* Bytes received. data is borrowed for the call only (its buffer goes back to the
     * kernel on return). Return < 0 to close the connection now with that reason. */
    int (*on_data)(struct slb_loop *loop, struct slb_conn *conn, const void *data, size_t len);
    /* The output queue went from above the low-water mark (or a refused write) to at or
     * below it: writing can resume. */
    void (*on_drained)(struct slb_loop *loop, struct slb_conn *conn);
    /* Exactly once per connection reported open. reason: 0 peer EOF or local close,
     * negative errno otherwise (-ECONNRESET, -ETIMEDOUT, -ECANCELED on teardown, or what
     * on_data returned). The id is stale when this returns. */
    void (*on_close)(struct slb_loop *loop, struct slb_conn *conn, int reason);
    /* A message posted by slb_loop_post from some loop (possibly this one). */
    void (*on_msg)(struct slb_loop *loop, uint64_t a, uint64_t b);
    /* On the sender: the MSG_RING carrying `a` was not delivered (res: the kernel's error,
     * e.g. -EOVERFLOW when the receiver's ring was full), so whatever `a` names is still
     * the sender's to reclaim. Not called for the fallback queues (their post fails at
     * once instead). */
    void (*on_msg_failed)(struct slb_loop *loop, uint64_t a, int res);
    /* The peer shut its write side (TCP FIN) while the connection was open. With this hook
     * the connection stays open for writing (a half-close: responses may still be owed)
     * and the consumer decides when to close; without it the connection is closed after
     * flush, as on any EOF. */
    void (*on_eof)(struct slb_loop *loop, struct slb_conn *conn);
};

/* Per-loop counters, written only by the loop's thread; other threads may read them
 * (plain aligned loads, approximate while the loop runs) and sum them. */
struct slb_loop_counters {
    uint64_t accepted;
    uint64_t accept_rejected_full; /* accepted then closed: table full */
    uint64_t accept_errors;
    uint64_t accept_no_fds; /* accept failed with EMFILE/ENFILE: out of descriptors */
    uint64_t connect_ok;
    uint64_t connect_failed;
    uint64_t closed; /* on_close calls */
    uint64_t recv_bytes;
    uint64_t sent_bytes;
    uint64_t sends;          /* send/sendmsg SQEs */
    uint64_t sleeps;         /* waits that blocked (or would have: a timed-out wait) */
    uint64_t spins;          /* idle moments spent watching for work instead */
    uint64_t spin_hits;      /* ... that found work within spin_us */
    uint64_t enobufs_rearms; /* multishot recv ended on -ENOBUFS and was re-armed */
    uint64_t out_full;       /* slb_conn_write refused: capacity */
    uint64_t out_pool_empty; /* slb_conn_write refused: the loop's chunk pool ran dry */
    uint64_t pool_wakeups;   /* on_drained calls for connections that waited for chunks */
    uint64_t msgs_sent;
    uint64_t msgs_received;
    uint64_t msgs_failed; /* MSG_RING completions with an error, on the sender */
};

/* One listening socket of a loop. Owned by the loop. */
struct slb_listener {
    struct slb_loop *loop;
    int fd; /* -1: slot unused */
    uint32_t tag;
    uint16_t index;
    uint16_t inflight;      /* accept + cancels in flight */
    bool armed;             /* multishot accept in flight */
    bool need_arm;          /* arm at the next flush */
    bool closing;           /* close once nothing is in flight */
    struct slb_timer retry; /* re-arm delay after an accept error (EMFILE...) */
};

/* One per worker thread, embedded where the caller likes (malloc is fine: no alignment
 * beyond the natural one is required), initialised, run and deinitialised on that thread.
 * All fields are io/'s; read them through loop.h. */
struct slb_loop {
    struct io_uring *ring;
    struct slb_loop_cbs cbs;
    void *user;
    uint64_t now_ms; /* cached monotonic clock, refreshed once per turn */
    uint64_t now_us; /* the same reading in microseconds */

    struct slb_conn *conns;
    uint32_t max_conns;
    uint32_t nconns;           /* slots in use, zombies included */
    struct slb_pool conn_free; /* free connection slots */
    uint32_t pending_head;     /* connections with work for the next flush */
    uint32_t pending_tail;

    unsigned char *chunk_mem;   /* output pool */
    uint32_t *chunk_next;       /* next chunk of the same queue (SLB_IO_NONE: the tail) */
    struct slb_pool chunk_free; /* free chunks */
    uint32_t chunk_bytes;
    uint32_t nchunks;
    uint32_t out_cap;
    uint32_t out_low;
    uint32_t out_reserve;    /* chunks only reserved connections may take */
    uint32_t out_busy;       /* connections with queued output */
    uint32_t pool_wait_head; /* connections refused for lack of chunks (slot list) */
    uint32_t pool_wait_tail;
    uint32_t pool_waiters;

    struct msghdr *scratch_msg; /* sendmsg headers, valid until their SQE is submitted */
    struct iovec *scratch_iov;
    uint32_t scratch_msgs_used;
    uint32_t scratch_iov_used;
    uint32_t scratch_cap; /* msghdrs; iovecs are SLB_LOOP_SEND_IOV_MAX times that */

    struct io_uring_buf_ring *br; /* provided receive buffers */
    unsigned char *buf_mem;
    size_t br_bytes;
    size_t buf_mem_bytes;
    uint32_t nbufs;
    uint32_t buf_bytes;
    bool br_registered;

    uint32_t cqe_batch;
    uint32_t spin_us;    /* 0: never spin (or the ring cannot say when work is pending) */
    uint32_t spin_score; /* recent spins that found work, saturating (see loop.c) */
    uint32_t spin_probe; /* idle moments until the next probing spin while it does not pay */
    uint32_t spin_gap;   /* the current probe interval, doubled after each miss */
    uint32_t setup_flags;
    bool deferred; /* SINGLE_ISSUER|DEFER_TASKRUN accepted */
    uint32_t stop_grace_ms;
    uint32_t linger_ms;
    uint32_t accept_rcvbuf;
    uint32_t keepalive_idle_s;
    uint8_t id;
    bool msg_ring_ok;  /* this ring can send MSG_RING with passed CQE flags */
    bool msg_fallback; /* messages to this loop use queues + eventfd */
    bool stopping;
    bool tearing_down;
    bool efd_armed;
    bool efd_need_arm;
    uint64_t stop_deadline_ms;
    uint32_t nlisteners; /* listeners with an open socket */
    int efd;             /* wakes the loop for slb_loop_stop and fallback messages */
    uint64_t efd_val;    /* the eventfd read's buffer: kernel-owned while armed */

    struct slb_msg_queue *mq; /* fallback: one queue per sender loop id */
    struct slb_msg_ent *mq_ents;
    uint32_t mq_peers;
    uint32_t mq_len;

    bool accepting_stopped; /* slb_loop_stop_accepting: listeners closed, loop still runs */
    struct slb_listener listeners[SLB_LOOP_LISTENERS_MAX];
    struct slb_loop_counters counters;
    struct slb_timer_wheel wheel;

    /* Written by other threads: padded to a cache line of their own whatever the struct's
     * alignment, so senders never false-share with the loop's hot fields. */
    char pad_before[64];
    atomic_int stop_req;
    atomic_int mq_notified;
    atomic_uint efd_users; /* threads writing efd now; high bit: deinit closed it */
    char pad_after[64];
};

#endif
