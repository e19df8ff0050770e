/* The flag-table engine: getopt-style long options driven by a declarative table, with
 * defaults, bounds and choices checked in one place, --help generated from the same
 * table, and a dump of the effective values. Boot time, main thread. */
#include "core/flags.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void *field(void *cfg, const struct slb_flag *f)
{
    return (char *)cfg + f->offset;
}

static const void *cfield(const void *cfg, const struct slb_flag *f)
{
    return (const char *)cfg + f->offset;
}

static int errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

int slb_flags_parse_ms(const char *text, uint64_t *ms)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || text[0] == '-')
        return -EINVAL;
    uint64_t mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else
        return -EINVAL;
    if (v > UINT64_MAX / mult)
        return -EINVAL;
    *ms = v * mult;
    return 0;
}

static int set_value(const struct slb_flag *f, void *cfg, const char *v, char *err,
                     size_t errlen)
{
    switch (f->type) {
    case SLB_FLAG_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
            *(bool *)field(cfg, f) = true;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
            *(bool *)field(cfg, f) = false;
        else
            return errf(err, errlen, "--%s: '%s' is not true or false", f->name, v);
        return 0;
    case SLB_FLAG_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return errf(err, errlen, "--%s: '%s' is not a whole number", f->name, v);
        if (x < f->min || x > f->max)
            return errf(err, errlen, "--%s: %lld is outside %" PRId64 "..%" PRId64, f->name,
                        x, f->min, f->max);
        *(int64_t *)field(cfg, f) = x;
        return 0;
    }
    case SLB_FLAG_MS: {
        uint64_t ms;
        if (slb_flags_parse_ms(v, &ms) < 0)
            return errf(err, errlen, "--%s: '%s' is not a duration (like 500ms, 10s, 5m)",
                        f->name, v);
        if (ms < (uint64_t)f->min || ms > (uint64_t)f->max)
            return errf(err, errlen, "--%s: %s is outside %" PRId64 "ms..%" PRId64 "ms",
                        f->name, v, f->min, f->max);
        *(uint64_t *)field(cfg, f) = ms;
        return 0;
    }
    case SLB_FLAG_STR:
        if (!*v)
            return errf(err, errlen, "--%s: empty value", f->name);
        *(const char **)field(cfg, f) = v;
        return 0;
    case SLB_FLAG_ENUM:
        for (int i = 0; f->choices[i]; i++) {
            if (!strcmp(v, f->choices[i])) {
                *(int *)field(cfg, f) = i;
                return 0;
            }
        }
        {
            char list[256] = "";
            for (int i = 0; f->choices[i]; i++) {
                strncat(list, i ? "|" : "", sizeof(list) - strlen(list) - 1);
                strncat(list, f->choices[i], sizeof(list) - strlen(list) - 1);
            }
            return errf(err, errlen, "--%s: '%s' is not one of %s", f->name, v, list);
        }
    case SLB_FLAG_LIST: {
        struct slb_flag_list *l = field(cfg, f);
        uint32_t max = f->max > 0 && f->max < SLB_FLAG_LIST_MAX ? (uint32_t)f->max
                                                                 : SLB_FLAG_LIST_MAX;
        if (l->n >= max)
            return errf(err, errlen, "--%s: at most %u values", f->name, max);
        if (!*v)
            return errf(err, errlen, "--%s: empty value", f->name);
        l->v[l->n++] = v;
        return 0;
    }
    }
    return errf(err, errlen, "--%s: bad flag table", f->name);
}

static const struct slb_flag *find(const struct slb_flag *table, size_t n, const char *name,
                                   size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(table[i].name) == len && !strncmp(table[i].name, name, len))
            return &table[i];
    return NULL;
}

int slb_flags_parse(const struct slb_flag *table, size_t n, void *cfg, int argc, char **argv,
                    const char *usage, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        /* A repeatable flag's default applies only when it is never given: applied
         * after the command line. */
        if (table[i].def && table[i].type != SLB_FLAG_LIST &&
            set_value(&table[i], cfg, table[i].def, err, errlen) < 0)
            return -EINVAL;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            slb_flags_help(table, n, usage, stdout);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2])
            return errf(err, errlen, "unexpected argument '%s' (flags start with --)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct slb_flag *f = find(table, n, name, len);
        if (!f && !eq && !strncmp(name, "no-", 3)) {
            f = find(table, n, name + 3, len - 3);
            if (f && f->type == SLB_FLAG_BOOL) {
                *(bool *)field(cfg, f) = false;
                continue;
            }
            f = NULL;
        }
        if (!f)
            return errf(err, errlen, "unknown flag '--%.*s' (see --help)", (int)len, name);
        const char *v;
        if (eq)
            v = eq + 1;
        else if (f->type == SLB_FLAG_BOOL)
            v = "true";
        else if (i + 1 < argc)
            v = argv[++i];
        else
            return errf(err, errlen, "--%s needs a value (%s)", f->name, f->arg ? f->arg : "");
        if (set_value(f, cfg, v, err, errlen) < 0)
            return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        const struct slb_flag *f = &table[i];
        if (f->type == SLB_FLAG_LIST && f->def && ((struct slb_flag_list *)field(cfg, f))->n == 0 &&
            set_value(f, cfg, f->def, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

void slb_flags_help(const struct slb_flag *table, size_t n, const char *usage, FILE *out)
{
    fprintf(out, "%s\n\nFlags:\n", usage);
    for (size_t i = 0; i < n; i++) {
        const struct slb_flag *f = &table[i];
        char head[128];
        if (f->type == SLB_FLAG_BOOL)
            snprintf(head, sizeof(head), "--%s", f->name);
        else
            snprintf(head, sizeof(head), "--%s %s", f->name, f->arg ? f->arg : "VALUE");
        fprintf(out, "  %-36s %s", head, f->help);
        if (f->type == SLB_FLAG_ENUM) {
            fputs(" (", out);
            for (int c = 0; f->choices[c]; c++)
                fprintf(out, "%s%s", c ? "|" : "", f->choices[c]);
            fputs(")", out);
        }
        if (f->type == SLB_FLAG_LIST)
            fputs(" [repeatable]", out);
        if (f->def)
            fprintf(out, " [default: %s]", f->def);
        fputc('\n', out);
    }
}

/* Writes text for roff. Inside a word that begins with '-' (an option, "--no-path")
 * every '-' becomes \- so it reads and pastes as a minus, and the word is never
 * hyphenated (\%); hyphens inside ordinary words ("per-source", "P-256") stay hyphens.
 * Backslashes become \(rs; text that starts a line with '.' or '\'' (a control line to
 * roff) is guarded by \&. A sentence (line_start) begins with a capital when its first
 * word is all lower case ("address to accept", not "wolfSSL names"). */
static void roff_text(const char *s, bool line_start, FILE *out)
{
    bool opt = false, word_start = true;
    if (line_start && (s[0] == '.' || s[0] == '\''))
        fputs("\\&", out);
    if (line_start && s[0] >= 'a' && s[0] <= 'z') {
        size_t w = strcspn(s, " ");
        bool lower = true;
        for (size_t i = 0; i < w; i++)
            lower = lower && !(s[i] >= 'A' && s[i] <= 'Z');
        if (lower) {
            fputc(s[0] - 'a' + 'A', out);
            s++;
            word_start = false;
        }
    }
    for (; *s; s++) {
        char c = *s;
        if (word_start && c == '-' && !opt) {
            opt = true;
            fputs("\\%", out);
        }
        if (c == '-' && opt)
            fputs("\\-", out);
        else if (c == '\\')
            fputs("\\(rs", out);
        else
            fputc(c, out);
        bool space = c == ' ' || c == '\t' || c == '\n';
        /* "(--flag", "'--flag'" and "[--flag" still begin an option. */
        word_start = space || (word_start && strchr("([\"'", c));
        if (space)
            opt = false;
    }
}

/* A flag's name as an option, bold: every '-' a minus ("--no-path" pastes as typed). */
static void roff_option(const char *prefix, const char *name, FILE *out)
{
    fprintf(out, "\\fB\\%%\\-\\-%s", prefix);
    for (; *name; name++) {
        if (*name == '-')
            fputs("\\-", out);
        else
            fputc(*name, out);
    }
    fputs("\\fR", out);
}

/* A duration for the man page in the largest whole unit: 86400000 -> "24h". */
static void roff_ms(int64_t ms, FILE *out)
{
    if (ms == 0)
        fputs("0", out);
    else if (ms % 3600000 == 0)
        fprintf(out, "%" PRId64 "h", ms / 3600000);
    else if (ms % 60000 == 0)
        fprintf(out, "%" PRId64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        fprintf(out, "%" PRId64 "s", ms / 1000);
    else
        fprintf(out, "%" PRId64 "ms", ms);
}

static void roff_flag(const struct slb_flag *f, FILE *out)
{
    fputs(".TP\n", out);
    roff_option("", f->name, out);
    if (f->type != SLB_FLAG_BOOL) {
        fputs(" \\fI", out);
        roff_text(f->arg ? f->arg : "VALUE", false, out);
        fputs("\\fR", out);
    }
    fputc('\n', out);
    roff_text(f->help, true, out);
    fputs(".\n", out);
    switch (f->type) {
    case SLB_FLAG_ENUM:
        fputs("One of", out);
        for (int c = 0; f->choices[c]; c++) {
            fputs(c ? ", \\fB" : " \\fB", out);
            roff_text(f->choices[c], false, out);
            fputs("\\fR", out);
        }
        fputs(".\n", out);
        break;
    case SLB_FLAG_INT:
        fprintf(out, "From %" PRId64 " to %" PRId64 ".\n", f->min, f->max);
        break;
    case SLB_FLAG_MS:
        fputs("From ", out);
        roff_ms(f->min, out);
        fputs(" to ", out);
        roff_ms(f->max, out);
        fputs(" (a plain number is seconds; suffixes ms, s, m, h).\n", out);
        break;
    case SLB_FLAG_LIST:
        fprintf(out, "Repeatable, up to %" PRId64 " times.\n",
                f->max > 0 && f->max < SLB_FLAG_LIST_MAX ? f->max : (int64_t)SLB_FLAG_LIST_MAX);
        break;
    case SLB_FLAG_BOOL:
    case SLB_FLAG_STR:
        break;
    }
    if (f->type == SLB_FLAG_BOOL && f->def && !strcmp(f->def, "true")) {
        fputs("On by default; ", out);
        roff_option("no\\-", f->name, out);
        fputs(" turns it off.\n", out);
    } else if (f->def && f->type != SLB_FLAG_BOOL) {
        fputs("Default: \\fB", out);
        roff_text(f->def, false, out);
        fputs("\\fR.\n", out);
    }
}

void slb_flags_man(const struct slb_flag *table, size_t n, FILE *out)
{
    fputs(".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\n"
          "Print every flag with its argument and default, and exit.\n",
          out);
    for (size_t i = 0; i < n; i++)
        roff_flag(&table[i], out);
}

void slb_flags_dump(const struct slb_flag *table, size_t n, const void *cfg, FILE *out)
{
    for (size_t i = 0; i < n; i++) {
        const struct slb_flag *f = &table[i];
        const void *p = cfield(cfg, f);
        switch (f->type) {
        case SLB_FLAG_BOOL:
            fprintf(out, "--%s%s\n", *(const bool *)p ? "" : "no-", f->name);
            break;
        case SLB_FLAG_INT:
            fprintf(out, "--%s %" PRId64 "\n", f->name, *(const int64_t *)p);
            break;
        case SLB_FLAG_MS:
            fprintf(out, "--%s %" PRIu64 "ms\n", f->name, *(const uint64_t *)p);
            break;
        case SLB_FLAG_STR: {
            const char *s = *(const char *const *)p;
            if (s)
                fprintf(out, "--%s %s\n", f->name, s);
            else
                fprintf(out, "# --%s (unset)\n", f->name);
            break;
        }
        case SLB_FLAG_ENUM:
            fprintf(out, "--%s %s\n", f->name, f->choices[*(const int *)p]);
            break;
        case SLB_FLAG_LIST: {
            const struct slb_flag_list *l = p;
            for (uint32_t k = 0; k < l->n; k++)
                fprintf(out, "--%s %s\n", f->name, l->v[k]);
            break;
        }
        }
    }
}
