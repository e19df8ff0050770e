/* The log formats: JSON lines (escaping, UTF-8, fields, the suppressed count, cutting),
 * text lines as they always were, derived event names, and the sink (a file standing for
 * stderr, with and without the journal's priority prefix). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

/* 2026-12-06T23:22:18.449Z */
static const struct timespec when = {1796599338, 449999999};

static char line[4096];

static const char *json(const struct slb_log_record *r, size_t cap)
{
    size_t n = slb_log_format_json(line, cap, r);
    cr_assert(n > 0 && n <= cap);
    line[n] = 0;
    return line;
}

Test(log, json_escapes_quotes_backslash_controls_and_bytes_that_are_not_utf8)
{
    struct slb_log_record r = {.time = when,
                               .level = SLB_LOG_WARN,
                               .event = "backend_down",
                               .msg = "say \"hi\" \\ a\nb\tc\x01"
                                      "d\xff"
                                      "e\r\x7f"};
    cr_assert_str_eq(json(&r, sizeof(line)),
                     "{\"time\":\"2026-12-06T23:22:18.449Z\",\"level\":\"warn\","
                     "\"event\":\"backend_down\",\"msg\":\"say \\\"hi\\\" \\\\ a\\nb\\tc\\u0001"
                     "d\\ufffde\\r\\u007f\"}");
}

Test(log, json_keeps_utf8_and_replaces_overlong_surrogate_and_cut_sequences)
{
    struct slb_log_record r = {.time = when, .level = SLB_LOG_INFO};
    r.msg = "caf\xc3\xa9 \xf0\x9f\x93\x9e"; /* é and a 4-byte emoji pass as they are */
    cr_assert_str_eq(json(&r, sizeof(line)), "{\"time\":\"2026-12-06T23:22:18.449Z\","
                                             "\"level\":\"info\",\"msg\":\"caf\xc3\xa9 "
                                             "\xf0\x9f\x93\x9e\"}");
    r.msg = "\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xe2\x82";
    cr_assert_str_eq(json(&r, sizeof(line)),
                     "{\"time\":\"2026-12-06T23:22:18.449Z\",\"level\":\"info\",\"msg\":\""
                     "\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd\\ufffd|"
                     "\\ufffd\\ufffd\"}");
}

Test(log, json_fields_then_the_suppressed_count_then_the_message)
{
    const struct slb_log_field f[] = {
        SLB_LOG_STR("backend", "10.0.0.7:5061"),
        SLB_LOG_NUM("worker", 3),
        SLB_LOG_STR("why", NULL),
        SLB_LOG_STR("odd\"key", "tab\there"),
    };
    struct slb_log_record r = {.time = when,
                               .level = SLB_LOG_ERROR,
                               .event = "x",
                               .fields = f,
                               .n_fields = 4,
                               .limited = true,
                               .suppressed = 7,
                               .msg = "m"};
    cr_assert_str_eq(json(&r, sizeof(line)),
                     "{\"time\":\"2026-12-06T23:22:18.449Z\",\"level\":\"error\",\"event\":\"x\","
                     "\"backend\":\"10.0.0.7:5061\",\"worker\":3,\"why\":null,"
                     "\"odd\\\"key\":\"tab\\there\",\"suppressed\":7,\"msg\":\"m\"}");
    r.suppressed = 0; /* a limited line says so even when nothing was dropped */
    r.n_fields = 0;
    cr_assert_str_eq(json(&r, sizeof(line)),
                     "{\"time\":\"2026-12-06T23:22:18.449Z\",\"level\":\"error\",\"event\":\"x\","
                     "\"suppressed\":0,\"msg\":\"m\"}");
}

Test(log, json_too_long_is_cut_at_a_character_boundary_and_stays_an_object)
{
    char msg[1024];
    memset(msg, 1, sizeof(msg) - 1); /* each byte becomes \u0001: six bytes */
    msg[sizeof(msg) - 1] = 0;
    struct slb_log_record r = {.time = when, .level = SLB_LOG_DEBUG, .msg = msg};
    const char *j = json(&r, SLB_LOG_LINE_MIN);
    size_t n = strlen(j);
    cr_assert(n <= SLB_LOG_LINE_MIN && n > SLB_LOG_LINE_MIN - 8, "%zu", n);
    cr_assert_str_eq(j + n - 8, "\\u0001\"}");
    const char *body = strstr(j, "\"msg\":\"") + 7;
    cr_assert_eq((size_t)(j + n - 2 - body) % 6, 0);

    /* A field that does not fit is left out whole; the message still starts. */
    char big[2048];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    const struct slb_log_field f[] = {SLB_LOG_STR("big", big), SLB_LOG_NUM("n", 1)};
    struct slb_log_record r2 = {
        .time = when, .level = SLB_LOG_INFO, .fields = f, .n_fields = 2, .msg = "short"};
    cr_assert_str_eq(json(&r2, SLB_LOG_LINE_MIN),
                     "{\"time\":\"2026-12-06T23:22:18.449Z\",\"level\":\"info\",\"n\":1,"
                     "\"msg\":\"short\"}");
}

Test(log, text_line_is_the_same_as_always)
{
    struct slb_log_record r = {.time = when,
                               .level = SLB_LOG_WARN,
                               .event = "ignored",
                               .limited = true,
                               .suppressed = 3,
                               .msg = "backend 10.0.0.7:5061 failed 2 checks"};
    size_t n = slb_log_format_text(line, sizeof(line), &r);
    line[n] = 0;
    cr_assert_str_eq(line, "2026-12-06T23:22:18.449Z sipslb warn: backend 10.0.0.7:5061 failed "
                           "2 checks (3 similar suppressed)");
    char msg[1500];
    memset(msg, 'x', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = 0;
    r.msg = msg;
    r.suppressed = 0;
    n = slb_log_format_text(line, sizeof(line), &r);
    cr_assert_eq(n, 960); /* cut where it always was */
}

Test(log, event_names_come_from_the_leading_words)
{
    static const char *const cases[][2] = {
        {"backend %s added", "backend_added"},
        {"backend %s failed %lld checks in a row (last: %s)", "backend_failed_checks_in_a"},
        {"worker %u: cannot connect to backend %s: %s", "worker_cannot_connect_to_backend"},
        {"worker %u: TLS with %s %s:%u failed (%s): %s", "worker_tls_with_failed"},
        {"limit: source %s refused: %s", "limit_source_refused"},
        {"SIGHUP: certificate reload rejected, current one kept: %s",
         "sighup_certificate_reload_rejected"},
        {"signal %d: stopping", "signal_stopping"},
        {"clients accepted %llu, handshakes ok %llu", "clients_accepted"},
        {"backend %s: weight %u -> %u", "backend_weight"},
        {"--stats-file %s: %s", "stats_file"},
        {"%s: %-10.3s %%", ""},
    };
    char out[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = slb_log_event_name(out, sizeof(out), cases[i][0]);
        cr_assert_str_eq(out, cases[i][1], "%s", cases[i][0]);
        cr_assert_eq(n, strlen(cases[i][1]));
    }
    cr_assert_eq(slb_log_event_name(out, 8, "abcdefghijkl mnop"), 7);
    cr_assert_str_eq(out, "abcdefg");
}

/* Lines written to a file standing for stderr: read back whole. */
static FILE *sink_file;

static void sink_open(enum slb_log_format format)
{
    sink_file = tmpfile();
    cr_assert(sink_file);
    slb_log_setup(format, SLB_LOG_STDERR, fileno(sink_file));
    slb_log_level_max = SLB_LOG_DEBUG;
}

static const char *sink_read(void)
{
    static char buf[16384];
    size_t n = (size_t)pread(fileno(sink_file), buf, sizeof(buf) - 1, 0);
    buf[n] = 0;
    return buf;
}

static void sink_empty(void)
{
    cr_assert_eq(ftruncate(fileno(sink_file), 0), 0);
    cr_assert_eq(lseek(fileno(sink_file), 0, SEEK_SET), 0);
}

static void sink_close(void)
{
    slb_log_setup(SLB_LOG_TEXT, SLB_LOG_STDERR, STDERR_FILENO);
    slb_log_level_max = SLB_LOG_INFO;
    fclose(sink_file);
}

Test(log, limited_json_lines_carry_the_suppressed_count)
{
    sink_open(SLB_LOG_JSON);
    struct slb_ratelimit rl = SLB_RATELIMIT_INIT(1000, 2);
    for (int i = 0; i < 9; i++)
        slb_log_limited(&rl, 5000, SLB_LOG_WARN, "worker %u: client %s sent a bad message", 1u,
                        "127.0.0.1:5");
    const struct slb_log_field f[] = {SLB_LOG_STR("backend", "b:1")};
    slb_log_limited_event(&rl, 6000, SLB_LOG_WARN, "backend_closed", f, 1, "backend %s closed",
                          "b:1");
    slb_log(SLB_LOG_INFO, "plain %d", 1);
    const char *all = sink_read();
    /* 2 of the 9 passed; the next one reports the 7 dropped. */
    const char *want[] = {
        "\"level\":\"warn\",\"event\":\"worker_client_sent_a_bad\",\"suppressed\":0,"
        "\"msg\":\"worker 1: client 127.0.0.1:5 sent a bad message\"}\n",
        "\"level\":\"warn\",\"event\":\"worker_client_sent_a_bad\",\"suppressed\":0,"
        "\"msg\":\"worker 1: client 127.0.0.1:5 sent a bad message\"}\n",
        "\"level\":\"warn\",\"event\":\"backend_closed\",\"backend\":\"b:1\",\"suppressed\":7,"
        "\"msg\":\"backend b:1 closed\"}\n",
        "\"level\":\"info\",\"event\":\"plain\",\"msg\":\"plain 1\"}\n",
    };
    const char *p = all;
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(strncmp(p, "{\"time\":\"", 9), 0, "%s", all);
        const char *rest = p + 9 + 24 + 2; /* the time, its quote and the comma */
        cr_assert_eq(strncmp(rest, want[i], strlen(want[i])), 0, "line %zu of:\n%s", i, all);
        p = rest + strlen(want[i]);
    }
    cr_assert_eq(*p, 0, "%s", all);
    sink_close();
}

Test(log, text_lines_on_stderr_as_always_and_prefixed_for_the_journal)
{
    sink_open(SLB_LOG_TEXT);
    struct slb_ratelimit rl = SLB_RATELIMIT_INIT(1000, 1);
    slb_log_limited(&rl, 1000, SLB_LOG_WARN, "a %s", "line");
    slb_log_limited(&rl, 1000, SLB_LOG_WARN, "dropped");
    slb_log_limited(&rl, 2000, SLB_LOG_WARN, "after");
    const char *all = sink_read();
    cr_assert_eq(strlen(all),
                 2 * 25 + strlen("sipslb warn: a line\nsipslb warn: after (1 similar "
                                 "suppressed)\n"),
                 "%s", all);
    cr_assert(strstr(all, "Z sipslb warn: a line\n"), "%s", all);
    cr_assert(strstr(all, "Z sipslb warn: after (1 similar suppressed)\n"), "%s", all);
    cr_assert_eq(all[0], '2');

    /* JOURNAL_STREAM naming another file: no prefix; naming this one: "<N>" per level. */
    struct stat st;
    cr_assert_eq(fstat(fileno(sink_file), &st), 0);
    char js[64];
    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", js, 1);
    sink_empty();
    slb_log_setup(SLB_LOG_TEXT, SLB_LOG_STDERR, fileno(sink_file));
    slb_log(SLB_LOG_ERROR, "e");
    cr_assert_eq(sink_read()[0], '2');
    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    sink_empty();
    slb_log_setup(SLB_LOG_TEXT, SLB_LOG_STDERR, fileno(sink_file));
    slb_log(SLB_LOG_ERROR, "e");
    slb_log(SLB_LOG_WARN, "w");
    slb_log(SLB_LOG_INFO, "i");
    slb_log(SLB_LOG_DEBUG, "d");
    all = sink_read();
    cr_assert(strncmp(all, "<3>2", 4) == 0 && strstr(all, "Z sipslb error: e\n<4>2") &&
                  strstr(all, "Z sipslb warn: w\n<6>2") && strstr(all, "Z sipslb info: i\n<7>2") &&
                  strstr(all, "Z sipslb debug: d\n"),
              "%s", all);
    unsetenv("JOURNAL_STREAM");
    sink_close();
}
