/* Timer wheel: millisecond timers for one loop, O(1) arm and cancel, no allocation. */
#ifndef SLB_IO_TIMER_H
#define SLB_IO_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/timer-t.h"

/* The struct embedding timer `ptr` as member `member` (container_of). */
#define slb_timer_entry(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Starts an empty wheel whose clock reads now_ms. The wheel must not move afterwards. */
void slb_timer_wheel_init(struct slb_timer_wheel *wheel, uint64_t now_ms);

/* Advances the wheel's clock to now_ms (never backwards) and runs every timer that expired,
 * earliest expiry first. Returns how many ran. Bounded by the timers armed on entry plus
 * the non-empty slots crossed. */
unsigned slb_timer_wheel_run(struct slb_timer_wheel *wheel, uint64_t now_ms);

/* The earliest time at which slb_timer_wheel_run has work: an expiry, or (for timers more
 * than 256 ms away) the moment they move to a finer level, so it may be early, never late.
 * SLB_TIMER_NEVER when nothing is armed. */
uint64_t slb_timer_wheel_next_ms(const struct slb_timer_wheel *wheel);

/* Prepares an embedded timer; it is not armed. */
void slb_timer_init(struct slb_timer *timer, slb_timer_fn fn);

/* Arms (or re-arms) the timer to run delay_ms after the wheel's clock. A timer expiring at
 * or before the clock runs on the next slb_timer_wheel_run. The caller keeps ownership. */
void slb_timer_arm(struct slb_timer_wheel *wheel, struct slb_timer *timer, uint64_t delay_ms);

/* Arms (or re-arms) the timer for an absolute time on the wheel's clock. */
void slb_timer_arm_at(struct slb_timer_wheel *wheel, struct slb_timer *timer, uint64_t at_ms);

/* Disarms the timer if armed; harmless otherwise. */
void slb_timer_cancel(struct slb_timer *timer);

static inline bool slb_timer_armed(const struct slb_timer *timer)
{
    return timer->link.next != NULL;
}

#endif
