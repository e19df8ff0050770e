/* The flag-table engine. Boot-time only (it may allocate; the config it fills is
 * immutable once workers start). */
#ifndef SLB_CORE_FLAGS_H
#define SLB_CORE_FLAGS_H

#include <stdio.h>

#include "core/flags-t.h"

/* Applies the defaults, then argv (--name VALUE, --name=VALUE, --bool, --no-bool), into
 * cfg. Non-flag arguments are an error. Returns 0, 1 when --help was given (help already
 * printed to stdout), or -EINVAL with one line naming the flag and the problem in err. */
int slb_flags_parse(const struct slb_flag *table, size_t n, void *cfg, int argc,
                    char **argv, const char *usage, char *err, size_t errlen);

/* Prints usage and one block per flag (argument, default, bounds or choices, help). */
void slb_flags_help(const struct slb_flag *table, size_t n, const char *usage, FILE *out);

/* Prints a man page's OPTIONS entries in roff (man macros): -h/--help first, then one .TP
 * paragraph per flag with its argument, help text, choices, bounds, whether it repeats
 * and its default, from the same table as --help so the two cannot drift. Option names
 * are written with \- (a minus, not a hyphen); backslashes and lines that would begin
 * with a control character are escaped. */
void slb_flags_man(const struct slb_flag *table, size_t n, FILE *out);

/* Prints the effective configuration, one "--name value" line per flag, re-parsable. */
void slb_flags_dump(const struct slb_flag *table, size_t n, const void *cfg, FILE *out);

/* Parses a duration as SLB_FLAG_MS does. Returns 0 or -EINVAL. */
int slb_flags_parse_ms(const char *text, uint64_t *ms);

#endif
