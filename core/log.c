/* Leveled, rate-limited logging. Each line is formatted into a local buffer and written with
 * one write(2) (or handed to one syslog(3) call), so lines from several threads never
 * interleave. The format and target are set once at start-up, before other threads run, and
 * only read afterwards. Text lines on stderr are the same bytes whatever else is configured
 * (but for the journal's "<N>" prefix); JSON lines are valid JSON and UTF-8 whatever the
 * message holds. Any thread. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

enum slb_log_level slb_log_level_max = SLB_LOG_INFO;

static const char *const level_name[] = {"error", "warn", "info", "debug"};
static const int level_priority[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

/* Written by slb_log_setup before other threads start; read-only afterwards. */
static struct {
    enum slb_log_format format;
    enum slb_log_target target;
    int fd;
    bool journal; /* fd is the systemd journal: "<N>" prefixes */
} sink = {SLB_LOG_TEXT, SLB_LOG_STDERR, STDERR_FILENO, false};

#define TEXT_MAX   960u  /* a text line before its suppressed count, as always */
#define LINE_BYTES 4096u /* a line as written: room for a 1 KiB message escaped */

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

/* systemd's JOURNAL_STREAM is "DEVICE:INODE" of the stream it gave us; a child that inherited
 * the variable with its stderr redirected elsewhere must not prefix (sd-daemon(3)). */
static bool is_journal(int fd)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(fd, &st) != 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void slb_log_setup(enum slb_log_format format, enum slb_log_target target, int fd)
{
    sink.format = format;
    sink.target = target;
    sink.fd = fd;
    sink.journal = target == SLB_LOG_STDERR && is_journal(fd);
    if (target == SLB_LOG_SYSLOG)
        openlog("sipslb", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

/* "2026-12-06T23:22:18.449Z" and a NUL into out. */
static void stamp(char out[64], const struct timespec *ts)
{
    struct tm tm;
    gmtime_r(&ts->tv_sec, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000000);
}

/* The text line; with_stamp false leaves out "TIME sipslb " (syslog adds its own). */
static size_t text_line(char *buf, size_t cap, const struct slb_log_record *r, bool with_stamp)
{
    char ts[64] = "";
    if (with_stamp)
        stamp(ts, &r->time);
    int n = snprintf(buf, cap, "%s%s%s: ", ts, with_stamp ? " sipslb " : "", level_name[r->level]);
    if (n < 0)
        return 0;
    size_t len = (size_t)n + strlen(r->msg);
    if (len > TEXT_MAX)
        len = TEXT_MAX;
    memcpy(buf + n, r->msg, len - (size_t)n);
    if (r->suppressed) {
        int m = snprintf(buf + len, cap - len, " (%llu similar suppressed)",
                         (unsigned long long)r->suppressed);
        len += m < 0 ? 0 : (size_t)m;
    }
    return len;
}

size_t slb_log_format_text(char *buf, size_t cap, const struct slb_log_record *r)
{
    return cap < SLB_LOG_LINE_MIN ? 0 : text_line(buf, cap, r, true);
}

/* A bounded writer: a piece that does not fit is not written, and everything after it
 * neither (full). */
struct out {
    char *p;
    size_t len, cap;
    bool full;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->full || o->cap - o->len < n) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* The length of the well-formed UTF-8 sequence at s (RFC 3629 section 4: no overlong forms,
 * no surrogates, nothing above U+10FFFF), or 0. s[0] >= 0x80. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t need;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return need;
}

/* s escaped for a JSON string (no quotes), piece by piece: what does not fit is cut at a
 * character boundary and sets o->full. */
static void put_escaped(struct out *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n && !o->full;) {
        unsigned char c = u[i];
        char esc[8];
        size_t len = 1, adv = 1;
        const char *piece = esc;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, len = 2;
        } else if (c == '\n' || c == '\t' || c == '\r' || c == '\b' || c == '\f') {
            esc[0] = '\\', len = 2;
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : c == '\b' ? 'b' : 'f';
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4], esc[5] = hex[c & 15], len = 6;
        } else if (c < 0x80) {
            esc[0] = (char)c;
        } else if ((adv = utf8_seq(u + i, n - i)) != 0) {
            piece = s + i, len = adv;
        } else {
            piece = "\\ufffd", len = 6, adv = 1; /* not UTF-8: the replacement character */
        }
        put(o, piece, len);
        i += adv;
    }
}

/* ,"key":value; a member that does not fit is left out whole. */
static void put_member(struct out *o, const struct slb_log_field *f)
{
    size_t before = o->len;
    put(o, ",\"", 2);
    put_escaped(o, f->key);
    put(o, "\":", 2);
    if (f->is_num) {
        char num[24];
        put(o, num, (size_t)snprintf(num, sizeof(num), "%lld", f->num));
    } else if (f->str) {
        put(o, "\"", 1);
        put_escaped(o, f->str);
        put(o, "\"", 1);
    } else {
        puts_(o, "null");
    }
    if (o->full) {
        o->len = before;
        o->full = false;
    }
}

/* Room kept for the message while the members before it are written: its key, its closing
 * quote and brace, and a good start of it. */
#define MSG_ROOM 256u

size_t slb_log_format_json(char *buf, size_t cap, const struct slb_log_record *r)
{
    if (cap < SLB_LOG_LINE_MIN)
        return 0;
    struct out o = {buf, 0, cap - MSG_ROOM, false};
    char ts[64];
    stamp(ts, &r->time);
    puts_(&o, "{\"time\":\"");
    puts_(&o, ts);
    puts_(&o, "\",\"level\":\"");
    puts_(&o, level_name[r->level]);
    puts_(&o, "\"");
    if (r->event)
        put_member(&o, &(struct slb_log_field)SLB_LOG_STR("event", r->event));
    for (size_t i = 0; i < r->n_fields; i++)
        put_member(&o, &r->fields[i]);
    if (r->limited)
        put_member(&o, &(struct slb_log_field)SLB_LOG_NUM("suppressed", r->suppressed));
    o.cap = cap - 2;
    puts_(&o, ",\"msg\":\"");
    put_escaped(&o, r->msg);
    o.cap = cap;
    o.full = false;
    put(&o, "\"}", 2);
    return o.len;
}

size_t slb_log_event_name(char *out, size_t cap, const char *fmt)
{
    size_t len = 0;
    unsigned words = 0;
    bool in_word = false;
    for (const char *p = fmt; *p; p++) {
        char c = *p;
        if (c == '%') {
            /* A conversion: flags, width, precision, length, then its letter. */
            p++;
            while (*p && strchr("#0- +'.123456789*hlLqjzt", *p))
                p++;
            if (!*p)
                break;
            in_word = false;
            continue;
        }
        bool word_char = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (word_char) {
            if (!in_word) {
                if (words == 5)
                    break;
                words++;
                if (len && len + 1 < cap)
                    out[len++] = '_';
            }
            if (len + 1 < cap)
                out[len++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            in_word = true;
            continue;
        }
        /* A clause ends at a parenthesis, or at punctuation closing a word or followed by a
         * space ("host %s:%u" goes on). */
        bool clause_end = (c == ':' || c == ',' || c == ';') && (in_word || p[1] == ' ' || !p[1]);
        if (c == '(' || (clause_end && words >= 2))
            break;
        in_word = false;
    }
    out[len] = 0;
    return len;
}

/* Formats and writes one line. event NULL: derived from fmt. */
static void vlog(struct slb_log_record *r, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void vlog(struct slb_log_record *r, const char *fmt, va_list ap)
{
    clock_gettime(CLOCK_REALTIME, &r->time);
    char msg[1024];
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        msg[0] = 0;
    r->msg = msg;
    char line[LINE_BYTES];
    size_t len = 0;
    int prio = level_priority[r->level];
    if (sink.journal)
        len = (size_t)snprintf(line, sizeof(line), "<%d>", prio);
    if (sink.format == SLB_LOG_JSON) {
        char event[64];
        if (!r->event && slb_log_event_name(event, sizeof(event), fmt))
            r->event = event;
        len += slb_log_format_json(line + len, sizeof(line) - len - 1, r);
    } else {
        len += text_line(line + len, sizeof(line) - len - 1, r, sink.target == SLB_LOG_STDERR);
    }
    if (sink.target == SLB_LOG_SYSLOG) {
        line[len] = 0;
        syslog(prio, "%s", line);
        return;
    }
    line[len++] = '\n';
    ssize_t w = write(sink.fd, line, len);
    (void)w;
}

void slb_log(enum slb_log_level level, const char *fmt, ...)
{
    if (level > slb_log_level_max)
        return;
    struct slb_log_record r = {.level = level};
    va_list ap;
    va_start(ap, fmt);
    vlog(&r, fmt, ap);
    va_end(ap);
}

void slb_log_event(enum slb_log_level level, const char *event, const struct slb_log_field *fields,
                   size_t n_fields, const char *fmt, ...)
{
    if (level > slb_log_level_max)
        return;
    struct slb_log_record r = {
        .level = level, .event = event, .fields = fields, .n_fields = n_fields};
    va_list ap;
    va_start(ap, fmt);
    vlog(&r, fmt, ap);
    va_end(ap);
}

/* Whether rl has a token at now_ms (taking it), else counts the line as suppressed. */
static bool take_token(struct slb_ratelimit *rl, uint64_t now_ms)
{
    if (rl->interval_ms && now_ms - rl->last_ms >= rl->interval_ms) {
        uint64_t refill = (now_ms - rl->last_ms) / rl->interval_ms;
        rl->tokens = refill >= rl->burst ? rl->burst : rl->tokens + (uint32_t)refill;
        if (rl->tokens > rl->burst)
            rl->tokens = rl->burst;
        rl->last_ms = now_ms;
    }
    if (rl->tokens == 0) {
        rl->suppressed++;
        return false;
    }
    rl->tokens--;
    return true;
}

void slb_log_limited(struct slb_ratelimit *rl, uint64_t now_ms, enum slb_log_level level,
                     const char *fmt, ...)
{
    if (level > slb_log_level_max || !take_token(rl, now_ms))
        return;
    struct slb_log_record r = {.level = level, .limited = true, .suppressed = rl->suppressed};
    va_list ap;
    va_start(ap, fmt);
    vlog(&r, fmt, ap);
    va_end(ap);
    rl->suppressed = 0;
}

void slb_log_limited_event(struct slb_ratelimit *rl, uint64_t now_ms, enum slb_log_level level,
                           const char *event, const struct slb_log_field *fields, size_t n_fields,
                           const char *fmt, ...)
{
    if (level > slb_log_level_max || !take_token(rl, now_ms))
        return;
    struct slb_log_record r = {.level = level,
                               .event = event,
                               .fields = fields,
                               .n_fields = n_fields,
                               .limited = true,
                               .suppressed = rl->suppressed};
    va_list ap;
    va_start(ap, fmt);
    vlog(&r, fmt, ap);
    va_end(ap);
    rl->suppressed = 0;
}
