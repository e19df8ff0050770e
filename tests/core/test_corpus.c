/* The message corpus in tests/corpus: every valid file frames into clean messages, every
 * hostile one is rejected with the expected reason. Inputs sit against a guard page. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sip.h"
#include "tests/support/guard.h"

static struct slb_sip_msg msg;
static struct slb_sip_header hdrs[SLB_SIP_MAX_HEADERS_DEFAULT];

struct tally {
    int messages, pings, skips, bad, fatal, leftover;
    enum slb_sip_err first_err;
};

static struct tally frame_file(const char *rel)
{
    size_t len;
    char *data = corpus_read(rel, &len);
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    struct tally t = {0};
    size_t at = 0;
    while (at < len) {
        const char *p = guard_place(data + at, len - at);
        struct slb_sip_frame fr = {0};
        slb_sip_frame(p, len - at, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
        if (fr.kind == SLB_FRAME_NEED_MORE) {
            t.leftover = (int)(len - at);
            break;
        }
        if ((fr.kind == SLB_FRAME_BAD || fr.kind == SLB_FRAME_FATAL) && !t.first_err)
            t.first_err = msg.err;
        if (fr.kind == SLB_FRAME_FATAL) {
            t.fatal++;
            break;
        }
        t.messages += fr.kind == SLB_FRAME_MESSAGE;
        t.pings += fr.kind == SLB_FRAME_PING;
        t.skips += fr.kind == SLB_FRAME_SKIP;
        t.bad += fr.kind == SLB_FRAME_BAD;
        at += fr.frame_len;
    }
    free(data);
    return t;
}

static const char *valid[] = {
    "valid/invite-sdp.sip",
    "valid/register.sip",
    "valid/options.sip",
    "valid/ack.sip",
    "valid/bye.sip",
    "valid/cancel.sip",
    "valid/100-trying.sip",
    "valid/180-ringing.sip",
    "valid/200-ok-invite.sip",
    "valid/486-busy.sip",
    "valid/200-ok-options-empty-reason.sip",
    "valid/compact-forms.sip",
    "valid/folded.sip",
    "valid/multi-via.sip",
    "valid/body-with-crlfcrlf.sip",
    "valid/unknown-method-and-headers.sip",
    "valid/sip-uri-over-tls.sip",
};

Test(corpus, valid_messages_frame_cleanly)
{
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        struct tally t = frame_file(valid[i]);
        cr_assert_eq(t.messages, 1, "%s: %d messages (err %d)", valid[i], t.messages, t.first_err);
        cr_assert_eq(t.bad + t.fatal + t.leftover + t.pings, 0, "%s", valid[i]);
    }
}

Test(corpus, a_stream_with_keepalive_and_two_messages)
{
    struct tally t = frame_file("valid/stream-two-messages.sip");
    cr_assert_eq(t.messages, 2);
    cr_assert_eq(t.skips, 1);
    cr_assert_eq(t.pings, 1);
    cr_assert_eq(t.bad + t.fatal + t.leftover, 0);
}

static const struct {
    const char *file;
    enum slb_sip_err err;
    bool fatal;
} hostile[] = {
    {"bad/no-call-id.sip", SLB_SIP_E_NO_CALL_ID, false},
    {"bad/no-via.sip", SLB_SIP_E_NO_VIA, false},
    {"bad/no-cseq.sip", SLB_SIP_E_NO_CSEQ, false},
    {"bad/no-from.sip", SLB_SIP_E_NO_FROM, false},
    {"bad/no-to.sip", SLB_SIP_E_NO_TO, false},
    {"bad/no-content-length.sip", SLB_SIP_E_NO_CONTENT_LENGTH, true},
    {"bad/cl-negative.sip", SLB_SIP_E_CONTENT_LENGTH, true},
    {"bad/cl-nonnumeric.sip", SLB_SIP_E_CONTENT_LENGTH, true},
    {"bad/cl-huge.sip", SLB_SIP_E_TOO_LARGE, true},
    {"bad/cl-conflict.sip", SLB_SIP_E_CONTENT_LENGTH_CONFLICT, true},
    {"bad/long-header.sip", SLB_SIP_E_LINE_TOO_LONG, true},
    {"bad/too-many-headers.sip", SLB_SIP_E_TOO_MANY_HEADERS, true},
    {"bad/nul-in-start-line.sip", SLB_SIP_E_CTL_BYTE, false},
    {"bad/ctl-in-header-name.sip", SLB_SIP_E_CTL_NAME, true},
    {"bad/bad-version.sip", SLB_SIP_E_VERSION, false},
    {"bad/max-forwards-nonnumeric.sip", SLB_SIP_E_MAX_FORWARDS, false},
    {"bad/cseq-method-mismatch.sip", SLB_SIP_E_CSEQ, false},
    {"bad/header-without-colon.sip", SLB_SIP_E_HEADER_SYNTAX, true},
    {"bad/garbage-between.sip", SLB_SIP_E_GARBAGE, true},
    {"bad/nul-in-header-value.sip", SLB_SIP_E_CTL_VALUE, false},
};

Test(corpus, hostile_messages_are_rejected_with_their_reason)
{
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        struct tally t = frame_file(hostile[i].file);
        cr_assert_eq(t.first_err, hostile[i].err, "%s: err %d, want %d", hostile[i].file,
                     t.first_err, hostile[i].err);
        cr_assert_eq(t.fatal, hostile[i].fatal ? 1 : 0, "%s", hostile[i].file);
    }
    /* garbage-between: the first message gets through before the stream is closed. */
    cr_assert_eq(frame_file("bad/garbage-between.sip").messages, 1);
}

Test(corpus, truncated_message_waits_for_more)
{
    struct tally t = frame_file("bad/truncated.sip");
    cr_assert_eq(t.messages + t.bad + t.fatal, 0);
    cr_assert_gt(t.leftover, 0);
}

/* RFC 4475's cases: each file frames as its EXPECT line's scan column says. */
Test(corpus, rfc4475_every_case_scans_as_expected)
{
    size_t len;
    char *expect = corpus_read("rfc4475/EXPECT", &len);
    int cases = 0;
    for (char *line = strtok(expect, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], section[16], scan[16];
        if (line[0] == '#' || sscanf(line, "%63s %15s %15s", name, section, scan) != 3)
            continue;
        char rel[128];
        snprintf(rel, sizeof(rel), "rfc4475/%s.sip", name);
        struct tally t = frame_file(rel);
        cases++;
        if (!strcmp(scan, "ok")) {
            cr_assert(t.messages >= 1 && t.bad + t.fatal + t.leftover == 0,
                      "%s: %d messages, %d bad, %d fatal (err %d), %d left", name, t.messages,
                      t.bad, t.fatal, t.first_err, t.leftover);
        } else if (!strcmp(scan, "more")) {
            cr_assert(t.messages + t.bad + t.fatal == 0 && t.leftover > 0, "%s", name);
        } else {
            int status = atoi(scan);
            bool closes = strstr(scan, "+close") != NULL;
            cr_assert(t.first_err != SLB_SIP_E_NONE, "%s: accepted", name);
            cr_assert_eq(slb_sip_err_status(t.first_err), status, "%s: err %d", name, t.first_err);
            cr_assert_eq(t.fatal, closes ? 1 : 0, "%s", name);
        }
    }
    free(expect);
    cr_assert_eq(cases, 48); /* 13 + 19 + 15 + 1 cases of sections 3.1.1, 3.1.2, 3.3, 3.4 */
}
