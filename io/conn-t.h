/* Connection types: ids, states and the per-connection record kept in a loop's table. */
#ifndef SLB_IO_CONN_T_H
#define SLB_IO_CONN_T_H

#include <stdint.h>
#include <sys/socket.h>

#include "io/timer-t.h"

struct slb_loop;

/* A connection id packs loop id (bits 56-63), slot (bits 32-55) and generation (bits 0-31).
 * The generation changes every time a slot is freed, so a stale id never names the slot's
 * next connection. v == 0 names no connection. Safe to copy, compare and send to other
 * loops; only the owning loop may resolve it (slb_conn_get). */
struct slb_conn_id {
    uint64_t v;
};

#define SLB_CONN_ID_LOOP_SHIFT 56
#define SLB_CONN_ID_SLOT_SHIFT 32
#define SLB_CONN_ID_SLOT_MASK  0xffffffu
#define SLB_CONN_SLOTS_MAX     (1u << 24) /* the slot field is 24 bits */

enum slb_conn_state {
    SLB_CONN_FREE = 0,   /* slot in the loop's free pool */
    SLB_CONN_CONNECTING, /* outbound connect in flight */
    SLB_CONN_OPEN,       /* bytes flow both ways */
    SLB_CONN_CLOSING,    /* close after flush: sending what is queued */
    SLB_CONN_LINGER,     /* all sent, write side shut: reading until peer EOF */
    SLB_CONN_ZOMBIE,     /* closed and reported; waiting for in-flight ops to end */
};

enum slb_conn_flag {
    SLB_CONN_F_RECV_ARMED = 1u << 0,     /* a multishot recv is in flight */
    SLB_CONN_F_SEND_ARMED = 1u << 1,     /* a send is in flight (never more than one) */
    SLB_CONN_F_PAUSED = 1u << 2,         /* consumer paused receiving */
    SLB_CONN_F_PENDING = 1u << 3,        /* on the loop's list of work for the next flush */
    SLB_CONN_F_REPORTED = 1u << 4,       /* reported open: on_close is owed */
    SLB_CONN_F_PEER_EOF = 1u << 5,       /* peer's FIN seen */
    SLB_CONN_F_OUT_HIGH = 1u << 6,       /* queue went above the low-water mark or was full */
    SLB_CONN_F_CANCEL_RECV = 1u << 7,    /* cancel the recv at the next flush (pause) */
    SLB_CONN_F_RECV_CANCELING = 1u << 8, /* that cancel is in flight */
    SLB_CONN_F_CANCEL_ALL = 1u << 9,     /* cancel every op at the next flush (close) */
    SLB_CONN_F_OUT_RESERVE = 1u << 10,   /* may take the pool's reserved chunks */
    SLB_CONN_F_POOL_WAIT = 1u << 11,     /* refused for lack of chunks: on the wait list */
};

/* Output bytes in a chain of pool chunks; every chunk but the tail is full. */
struct slb_outq {
    uint32_t head;     /* first chunk index, or UINT32_MAX when empty */
    uint32_t tail;     /* last chunk index */
    uint32_t head_off; /* first unsent byte in the head chunk */
    uint32_t tail_len; /* bytes used in the tail chunk */
    uint32_t bytes;    /* queued bytes, including those of the send in flight */
};

/* One slot of a loop's connection table. Owned by the loop: allocated at init, never
 * freed before slb_loop_deinit. The consumer reads id, owner, tag, fd and peer and may set
 * owner; everything else is io/'s. A pointer is valid only until on_close returns: keep
 * the id and resolve it with slb_conn_get instead of keeping the pointer. */
struct slb_conn {
    struct slb_conn_id id;
    void *owner;           /* the consumer's, never touched by io/ */
    struct slb_loop *loop; /* the loop owning this slot */
    uint32_t tag;          /* tag of the listener or connect call that made it */
    int fd;
    socklen_t peer_len;
    uint8_t state;                 /* enum slb_conn_state */
    uint16_t flags;                /* enum slb_conn_flag */
    uint16_t inflight;             /* SQEs in flight for it, plus callbacks running on it */
    int close_reason;              /* what on_close will report */
    uint32_t next;                 /* pending-list link (slot index) */
    uint32_t out_cap;              /* this connection's output bound (the loop's default at open) */
    uint32_t wait_prev, wait_next; /* pool wait list links (slot indexes), when POOL_WAIT */
    struct slb_outq out;
    struct slb_timer timer; /* handshake/idle timeout, then the close linger bound */
    struct sockaddr_storage peer;
};

#endif
