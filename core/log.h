/* Logging: leveled lines, as text or one JSON object per line, on stderr or to syslog, and a
 * rate limiter for anything that input can trigger (one bad client must not flood the log).
 * Never called per message on the fast path; thread-safe (each line is one write(2) or one
 * syslog(3) call). */
#ifndef SLB_CORE_LOG_H
#define SLB_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum slb_log_level {
    SLB_LOG_ERROR = 0, /* the process or a worker cannot go on */
    SLB_LOG_WARN,      /* something an operator should look at */
    SLB_LOG_INFO,      /* start, stop, state changes */
    SLB_LOG_DEBUG,     /* detail for developers */
};

enum slb_log_format {
    SLB_LOG_TEXT = 0, /* "TIME sipslb LEVEL: message" */
    SLB_LOG_JSON,     /* {"time":..,"level":..,"event":..,"msg":..} per line */
};

enum slb_log_target {
    SLB_LOG_STDERR = 0, /* stderr; "<N>" priority prefixes when it is the systemd journal */
    SLB_LOG_SYSLOG,     /* syslog(3): ident "sipslb", facility daemon, the line as message */
};

/* The level below which lines are dropped; set once at start-up. */
extern enum slb_log_level slb_log_level_max;

/* Chooses the format and the target; called once at start-up, before other threads log
 * (until then: text on stderr). For SLB_LOG_SYSLOG opens the log at once
 * (openlog LOG_PID|LOG_NDELAY). For SLB_LOG_STDERR lines go to fd (STDERR_FILENO but in
 * tests), each with an sd-daemon(3) "<N>" priority prefix when JOURNAL_STREAM names fd's
 * device and inode (systemd sets it when stderr is the journal). */
void slb_log_setup(enum slb_log_format format, enum slb_log_target target, int fd);

/* A structured field of an event: a string (NULL is written as null) or an integer. Borrowed
 * for the call only. Text lines leave fields out: the message says the same in words. */
struct slb_log_field {
    const char *key;
    const char *str;
    long long num;
    bool is_num;
};

#define SLB_LOG_STR(k, v)                                                                          \
    {                                                                                              \
        .key = (k), .str = (v)                                                                     \
    }
#define SLB_LOG_NUM(k, v)                                                                          \
    {                                                                                              \
        .key = (k), .num = (long long)(v), .is_num = true                                          \
    }

/* Logs a line at level. Its JSON "event" is derived from fmt's leading words
 * ("backend %s added" -> "backend_added"). */
void slb_log(enum slb_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs a line with a fixed event name (snake_case, a constant) and n_fields fields (may be
 * 0), which JSON lines carry as members; text lines are exactly those of slb_log. */
void slb_log_event(enum slb_log_level level, const char *event, const struct slb_log_field *fields,
                   size_t n_fields, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A token bucket owned by whoever logs through it (per worker, per reason): at most burst
 * lines at once, then one per interval; the lines dropped meanwhile are counted and
 * reported on the next line that passes (text: " (N similar suppressed)" at its end; JSON:
 * "suppressed":N on every line logged through a limiter). Not shared between threads. */
struct slb_ratelimit {
    uint64_t interval_ms;
    uint32_t burst;
    uint32_t tokens;
    uint64_t last_ms;
    uint64_t suppressed;
};

#define SLB_RATELIMIT_INIT(interval, burst_)                                                       \
    {                                                                                              \
        (interval), (burst_), (burst_), 0, 0                                                       \
    }

/* Logs through rl when it has a token at time now_ms. */
void slb_log_limited(struct slb_ratelimit *rl, uint64_t now_ms, enum slb_log_level level,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* slb_log_limited with an event name and fields, as slb_log_event. */
void slb_log_limited_event(struct slb_ratelimit *rl, uint64_t now_ms, enum slb_log_level level,
                           const char *event, const struct slb_log_field *fields, size_t n_fields,
                           const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* One line before it is written, for the formatters below. Borrowed. */
struct slb_log_record {
    struct timespec time; /* CLOCK_REALTIME */
    enum slb_log_level level;
    const char *event; /* NULL: none */
    const struct slb_log_field *fields;
    size_t n_fields;
    bool limited;        /* logged through a limiter: JSON writes "suppressed" */
    uint64_t suppressed; /* lines the limiter dropped before this one */
    const char *msg;     /* the formatted message: any bytes, NUL-terminated */
};

/* Smallest buffer the formatters take. */
#define SLB_LOG_LINE_MIN 1024u

/* Formats r as one JSON object, without newline or NUL, into buf (cap >= SLB_LOG_LINE_MIN):
 * members time, level, event (when set), the fields, suppressed (when limited), msg. Strings
 * are escaped per RFC 8259 (quote, backslash, control characters and DEL as escapes) and
 * invalid UTF-8 bytes become U+FFFD, so the object is valid JSON and valid UTF-8 whatever the
 * message holds. What does not fit is cut: a field whole, the message at a character
 * boundary. Returns the length written. */
size_t slb_log_format_json(char *buf, size_t cap, const struct slb_log_record *r);

/* Formats r as a text line, without newline or NUL, into buf (cap >= SLB_LOG_LINE_MIN):
 * "2026-12-06T23:22:18.449Z sipslb warn: message (3 similar suppressed)", cut to 960 bytes
 * before the suppressed count. Returns the length written. */
size_t slb_log_format_text(char *buf, size_t cap, const struct slb_log_record *r);

/* The event name slb_log derives from a format string: its first words (letters and digits,
 * lowercased, at most five), joined by '_', skipping conversions and stopping at '(' or, once
 * two words are in, at ':', ',' or ';' that ends a word or is followed by a space ("worker %u:
 * cannot connect to backend %s: %s" -> "worker_cannot_connect_to_backend"). Stable for a call
 * site while its format string stays. Writes a NUL-terminated name into out (cap > 0);
 * returns its length, 0 when fmt has no words. */
size_t slb_log_event_name(char *out, size_t cap, const char *fmt);

/* Monotonic milliseconds, for callers without a loop clock. */
uint64_t slb_clock_ms(void);
/* The same clock in nanoseconds. */
uint64_t slb_clock_ns(void);

#endif
