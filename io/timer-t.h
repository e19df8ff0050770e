/* Timer types: embedded millisecond timers on a per-loop hierarchical hashed wheel. */
#ifndef SLB_IO_TIMER_T_H
#define SLB_IO_TIMER_T_H

#include <stdint.h>

#define SLB_TIMER_LEVELS    4 /* 4 levels of 8 bits: 2^32 ms (49 days) before overflow */
#define SLB_TIMER_SLOT_BITS 8
#define SLB_TIMER_SLOTS     (1u << SLB_TIMER_SLOT_BITS)
#define SLB_TIMER_NEVER     UINT64_MAX /* "no deadline" */

struct slb_timer;
struct slb_timer_wheel;

/* Runs on the wheel's thread with the timer already disarmed; it may re-arm or cancel any
 * timer, including this one. Find the embedding struct with slb_timer_entry(). */
typedef void (*slb_timer_fn)(struct slb_timer *timer);

/* Circular doubly linked list node; each wheel slot has a sentinel node. */
struct slb_timer_link {
    struct slb_timer_link *next;
    struct slb_timer_link *prev;
};

/* Owned by whoever embeds it (a connection, a listener, a consumer struct). The wheel only
 * links it while armed and never frees it. link.next == NULL means not armed. */
struct slb_timer {
    struct slb_timer_link link;
    uint64_t expires_ms; /* absolute, on the wheel's clock */
    slb_timer_fn fn;
    struct slb_timer_wheel *wheel; /* set while armed */
    uint8_t level;                 /* where it is linked, to keep the slot bitmap exact */
    uint8_t slot;
};

/* Owned by its loop (or a test). Level L slot s holds timers whose expiry shares every bit
 * above level L with cur_ms and has s in level L's 8 bits; level 0 slots therefore hold
 * timers of exactly one millisecond. Sentinels point into the struct: never move it after
 * slb_timer_wheel_init. */
struct slb_timer_wheel {
    uint64_t now_ms; /* the clock as last given to slb_timer_wheel_run (or init) */
    uint64_t cur_ms; /* first tick not processed yet */
    uint32_t count;  /* armed timers */
    uint64_t bitmap[SLB_TIMER_LEVELS][SLB_TIMER_SLOTS / 64]; /* non-empty slots */
    struct slb_timer_link slots[SLB_TIMER_LEVELS][SLB_TIMER_SLOTS];
    struct slb_timer_link overflow; /* expiry beyond level 3: rehashed every 2^32 ms */
};

#endif
