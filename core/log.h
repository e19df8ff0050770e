/* Logging: leveled lines on stderr, and a rate limiter for anything that input can
 * trigger (one bad client must not flood the log). Never called per message on the fast
 * path; thread-safe (each line is one write). */
#ifndef SLB_CORE_LOG_H
#define SLB_CORE_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum slb_log_level {
    SLB_LOG_ERROR = 0, /* the process or a worker cannot go on */
    SLB_LOG_WARN,      /* something an operator should look at */
    SLB_LOG_INFO,      /* start, stop, state changes */
    SLB_LOG_DEBUG,     /* detail for developers */
};

/* The level below which lines are dropped; set once at start-up. */
extern enum slb_log_level slb_log_level_max;

void slb_log(enum slb_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A token bucket owned by whoever logs through it (per worker, per reason): at most burst
 * lines at once, then one per interval; the lines dropped meanwhile are counted and
 * reported on the next line that passes. Not shared between threads. */
struct slb_ratelimit {
    uint64_t interval_ms;
    uint32_t burst;
    uint32_t tokens;
    uint64_t last_ms;
    uint64_t suppressed;
};

#define SLB_RATELIMIT_INIT(interval, burst_) {(interval), (burst_), (burst_), 0, 0}

/* Logs through rl when it has a token at time now_ms. */
void slb_log_limited(struct slb_ratelimit *rl, uint64_t now_ms, enum slb_log_level level,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Monotonic milliseconds, for callers without a loop clock. */
uint64_t slb_clock_ms(void);
/* The same clock in nanoseconds. */
uint64_t slb_clock_ns(void);

#endif
