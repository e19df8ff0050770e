/* The flag-table engine, the SipHash MAC and the log rate limiter. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/flags.h"
#include "core/log.h"
#include "core/siphash.h"

struct cfg {
    bool pin;
    int64_t workers;
    uint64_t timeout_ms;
    const char *cert;
    int verify;
    struct slb_flag_list listen;
};

static const char *const verify_names[] = {"none", "optional", "require", NULL};

static const struct slb_flag table[] = {
    {"pin", SLB_FLAG_BOOL, offsetof(struct cfg, pin), "false", 0, 0, NULL, NULL, "pin"},
    {"workers", SLB_FLAG_INT, offsetof(struct cfg, workers), "0", 0, 256, NULL, "N", "w"},
    {"timeout", SLB_FLAG_MS, offsetof(struct cfg, timeout_ms), "10s", 100, 3600000, NULL,
     "DURATION", "t"},
    {"cert", SLB_FLAG_STR, offsetof(struct cfg, cert), NULL, 0, 0, NULL, "FILE", "c"},
    {"verify", SLB_FLAG_ENUM, offsetof(struct cfg, verify), "none", 0, 0, verify_names, "MODE",
     "v"},
    {"listen", SLB_FLAG_LIST, offsetof(struct cfg, listen), "0.0.0.0:5061", 0, 4, NULL,
     "ADDR:PORT", "l"},
};
#define N (sizeof(table) / sizeof(table[0]))

static int parse(struct cfg *c, char *err, int argc, char **argv)
{
    memset(c, 0, sizeof(*c));
    return slb_flags_parse(table, N, c, argc, argv, "usage: t", err, 256);
}

Test(flags, defaults_apply)
{
    struct cfg c;
    char err[256];
    char *argv[] = {"t"};
    cr_assert_eq(parse(&c, err, 1, argv), 0);
    cr_assert_eq(c.workers, 0);
    cr_assert_eq(c.timeout_ms, 10000);
    cr_assert_null(c.cert);
    cr_assert_eq(c.verify, 0);
    cr_assert_eq(c.listen.n, 1);
    cr_assert_str_eq(c.listen.v[0], "0.0.0.0:5061");
}

Test(flags, values_forms_and_repeats)
{
    struct cfg c;
    char err[256];
    char *argv[] = {"t",        "--pin",          "--workers=4", "--timeout", "250ms",
                    "--verify", "require",        "--listen",    "[::1]:5061", "--listen=127.0.0.1:5062",
                    "--cert",   "/etc/cert.pem"};
    cr_assert_eq(parse(&c, err, 12, argv), 0, "%s", err);
    cr_assert(c.pin);
    cr_assert_eq(c.workers, 4);
    cr_assert_eq(c.timeout_ms, 250);
    cr_assert_eq(c.verify, 2);
    cr_assert_eq(c.listen.n, 2); /* the default is replaced, not added to */
    cr_assert_str_eq(c.listen.v[1], "127.0.0.1:5062");
    cr_assert_str_eq(c.cert, "/etc/cert.pem");
    char *argv2[] = {"t", "--pin", "--no-pin"};
    cr_assert_eq(parse(&c, err, 3, argv2), 0);
    cr_assert_not(c.pin);
}

Test(flags, errors_name_the_flag)
{
    struct cfg c;
    char err[256];
    char *a1[] = {"t", "--bogus"};
    cr_assert_eq(parse(&c, err, 2, a1), -EINVAL);
    cr_assert(strstr(err, "--bogus"), "%s", err);
    char *a2[] = {"t", "--workers", "999"};
    cr_assert_eq(parse(&c, err, 3, a2), -EINVAL);
    cr_assert(strstr(err, "--workers") && strstr(err, "0..256"), "%s", err);
    char *a3[] = {"t", "--workers", "four"};
    cr_assert_eq(parse(&c, err, 3, a3), -EINVAL);
    char *a4[] = {"t", "--verify", "maybe"};
    cr_assert_eq(parse(&c, err, 3, a4), -EINVAL);
    cr_assert(strstr(err, "none|optional|require"), "%s", err);
    char *a5[] = {"t", "--timeout", "5 parsecs"};
    cr_assert_eq(parse(&c, err, 3, a5), -EINVAL);
    char *a6[] = {"t", "--cert"};
    cr_assert_eq(parse(&c, err, 2, a6), -EINVAL);
    cr_assert(strstr(err, "needs a value"), "%s", err);
    char *a7[] = {"t", "stray"};
    cr_assert_eq(parse(&c, err, 2, a7), -EINVAL);
    char *a8[] = {"t", "--listen", "a", "--listen", "b", "--listen", "c", "--listen", "d",
                  "--listen", "e"};
    cr_assert_eq(parse(&c, err, 11, a8), -EINVAL);
    cr_assert(strstr(err, "at most 4"), "%s", err);
}

Test(flags, durations)
{
    uint64_t ms;
    cr_assert_eq(slb_flags_parse_ms("10", &ms), 0);
    cr_assert_eq(ms, 10000);
    cr_assert_eq(slb_flags_parse_ms("2m", &ms), 0);
    cr_assert_eq(ms, 120000);
    cr_assert_eq(slb_flags_parse_ms("1h", &ms), 0);
    cr_assert_eq(ms, 3600000);
    cr_assert_eq(slb_flags_parse_ms("-1", &ms), -EINVAL);
    cr_assert_eq(slb_flags_parse_ms("1d", &ms), -EINVAL);
}

static char *man_of(const struct slb_flag *t, size_t n)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    slb_flags_man(t, n, f);
    fclose(f);
    return buf;
}

Test(flags, man_page_entries_come_from_the_table)
{
    char *m = man_of(table, N);
    cr_assert(strstr(m, ".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\n"), "%s", m);
    cr_assert(strstr(m, ".TP\n\\fB\\%\\-\\-timeout\\fR \\fIDURATION\\fR\nT.\n"
                        "From 100ms to 1h (a plain number is seconds; suffixes ms, s, m, h).\n"
                        "Default: \\fB10s\\fR.\n"),
              "%s", m);
    cr_assert(
        strstr(m, "\\fB\\%\\-\\-workers\\fR \\fIN\\fR\nW.\nFrom 0 to 256.\nDefault: \\fB0\\fR.\n"),
        "%s", m);
    cr_assert(strstr(m, "One of \\fBnone\\fR, \\fBoptional\\fR, \\fBrequire\\fR.\n"), "%s", m);
    cr_assert(strstr(m, "Repeatable, up to 4 times.\nDefault: \\fB0.0.0.0:5061\\fR.\n"), "%s", m);
    cr_assert(strstr(m, "\\fB\\%\\-\\-pin\\fR\nPin.\n.TP\n"), "bool, default off: %s", m);
    free(m);
}

Test(flags, man_page_escapes_options_backslashes_and_control_lines)
{
    static const struct slb_flag t[] = {
        {"no-path", SLB_FLAG_BOOL, 0, "true", 0, 0, NULL, NULL,
         ".dot first, see --backend-ca (or \"--x-y\"); per-source P-256 back\\slash"},
        {"a", SLB_FLAG_STR, 0, NULL, 0, 0, NULL, "FILE", "'quote first"},
        {"b", SLB_FLAG_STR, 0, NULL, 0, 0, NULL, "FILE", "wolfSSL names stay as written"},
    };
    char *m = man_of(t, 3);
    cr_assert(strstr(m, "\\fB\\%\\-\\-no\\-path\\fR\n\\&.dot first, see \\%\\-\\-backend\\-ca "
                        "(or \"\\%\\-\\-x\\-y\"); per-source P-256 back\\(rsslash.\n"
                        "On by default; \\fB\\%\\-\\-no\\-no\\-path\\fR turns it off.\n"),
              "%s", m);
    cr_assert(strstr(m, "\n\\&'quote first.\n"), "%s", m);
    cr_assert(strstr(m, "\nwolfSSL names stay as written.\n"), "%s", m);
    free(m);
}

Test(siphash, reference_vector)
{
    /* The paper's test vector: key 00..0f, message 00..0e. */
    struct slb_siphash_key k = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
    unsigned char msg[15];
    for (int i = 0; i < 15; i++)
        msg[i] = (unsigned char)i;
    cr_assert_eq(slb_siphash(&k, msg, 15), 0xa129ca6149be45e5ull);
    cr_assert_neq(slb_siphash(&k, msg, 14), slb_siphash(&k, msg, 15));
}

Test(log, rate_limit_bursts_then_one_per_interval)
{
    struct slb_ratelimit rl = SLB_RATELIMIT_INIT(1000, 3);
    enum slb_log_level saved = slb_log_level_max;
    slb_log_level_max = SLB_LOG_DEBUG; /* lines pass the level; the limiter decides */
    for (int i = 0; i < 10; i++)
        slb_log_limited(&rl, 5000, SLB_LOG_DEBUG, "test line %d", i);
    cr_assert_eq(rl.suppressed, 7);
    slb_log_limited(&rl, 5500, SLB_LOG_DEBUG, "still limited");
    cr_assert_eq(rl.suppressed, 8);
    slb_log_limited(&rl, 6001, SLB_LOG_DEBUG, "after an interval, with the count");
    cr_assert_eq(rl.suppressed, 0);
    slb_log_level_max = saved;
}
