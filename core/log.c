/* Leveled, rate-limited logging to stderr. Each line is formatted into a local buffer and
 * written with one write(2), so lines from several threads never interleave. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum slb_log_level slb_log_level_max = SLB_LOG_INFO;

static const char *const level_name[] = {"error", "warn", "info", "debug"};

uint64_t slb_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t slb_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void vlog(enum slb_log_level level, uint64_t suppressed, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void vlog(enum slb_log_level level, uint64_t suppressed, const char *fmt, va_list ap)
{
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ sipslb %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_name[level]);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 64)
        len = sizeof(line) - 64;
    if (suppressed)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " (%llu similar suppressed)",
                                (unsigned long long)suppressed);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void slb_log(enum slb_log_level level, const char *fmt, ...)
{
    if (level > slb_log_level_max)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, 0, fmt, ap);
    va_end(ap);
}

void slb_log_limited(struct slb_ratelimit *rl, uint64_t now_ms, enum slb_log_level level,
                     const char *fmt, ...)
{
    if (level > slb_log_level_max)
        return;
    if (rl->interval_ms && now_ms - rl->last_ms >= rl->interval_ms) {
        uint64_t refill = (now_ms - rl->last_ms) / rl->interval_ms;
        rl->tokens = refill >= rl->burst ? rl->burst : rl->tokens + (uint32_t)refill;
        if (rl->tokens > rl->burst)
            rl->tokens = rl->burst;
        rl->last_ms = now_ms;
    }
    if (rl->tokens == 0) {
        rl->suppressed++;
        return;
    }
    rl->tokens--;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, rl->suppressed, fmt, ap);
    va_end(ap);
    rl->suppressed = 0;
}
