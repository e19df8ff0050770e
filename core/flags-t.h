/* Types of the flag-table engine: one declarative table per program drives parsing,
 * --help, validation and the config dump. */
#ifndef SLB_CORE_FLAGS_T_H
#define SLB_CORE_FLAGS_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLB_FLAG_LIST_MAX 32u /* values a repeatable flag may hold */

enum slb_flag_type {
    SLB_FLAG_BOOL,     /* bool; no argument */
    SLB_FLAG_INT,      /* int64_t within [min, max] */
    SLB_FLAG_MS,       /* uint64_t milliseconds: "250ms", "10s", "5m", "1h"; plain = seconds */
    SLB_FLAG_STR,      /* const char * (points into argv or the default) */
    SLB_FLAG_ENUM,     /* int: index into choices */
    SLB_FLAG_LIST,     /* struct slb_flag_list: repeatable string */
};

/* The values of a repeatable flag. Embedded in the caller's config struct. */
struct slb_flag_list {
    const char *v[SLB_FLAG_LIST_MAX];
    uint32_t n;
};

/* One flag. The table is static and read only; offset says where the value lands in the
 * caller's config struct. */
struct slb_flag {
    const char *name;          /* long name, without "--" */
    enum slb_flag_type type;
    size_t offset;             /* offsetof(config, field) */
    const char *def;           /* default as command-line text; NULL: none (zero/NULL) */
    int64_t min, max;          /* INT and MS bounds (MS in ms); LIST: max entries if > 0 */
    const char *const *choices; /* ENUM: NULL-terminated names */
    const char *arg;           /* argument name in --help ("ADDR:PORT") */
    const char *help;          /* one line */
};

#endif
