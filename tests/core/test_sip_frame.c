/* Framing a TLS/TCP byte stream into SIP messages: splits, batches, keepalives, bodies
 * that contain CRLFCRLF, and what happens to bad input. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/sip.h"
#include "tests/support/guard.h"

static struct slb_sip_msg msg;
static struct slb_sip_header hdrs[SLB_SIP_MAX_HEADERS_DEFAULT];

static const char opt[] = "OPTIONS sips:x@example.com SIP/2.0\r\n"
                          "Via: SIP/2.0/TLS a.example.com;branch=z9hG4bK1\r\n"
                          "From: <sips:a@example.com>;tag=1\r\n"
                          "To: <sips:b@example.com>\r\n"
                          "Call-ID: frame-1@x\r\n"
                          "CSeq: 1 OPTIONS\r\n"
                          "Content-Length: 14\r\n\r\n"
                          "a\r\n\r\nb\r\n\r\n\r\n\r\n";

static const char bye[] = "BYE sips:x@example.com SIP/2.0\r\n"
                          "Via: SIP/2.0/TLS a.example.com;branch=z9hG4bK2\r\n"
                          "From: <sips:a@example.com>;tag=1\r\n"
                          "To: <sips:b@example.com>;tag=2\r\n"
                          "Call-ID: frame-2@x\r\n"
                          "CSeq: 2 BYE\r\n"
                          "Content-Length: 0\r\n\r\n";

/* A stream consumer the way the proxy will be one: a buffer that grows by arriving chunks
 * and drops consumed frames from its front. Records what it saw. */
struct stream {
    char buf[70000];
    size_t len;
    struct slb_sip_frame fr;
    int messages, pings, skips, bad, fatal;
    enum slb_sip_err last_err;
    char call_ids[8][32];
};

static void pump(struct stream *s, const char *data, size_t n)
{
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    for (int guard = 0; guard < 1000 && !s->fatal; guard++) {
        const char *p = guard_place(s->buf, s->len);
        slb_sip_frame(p, s->len, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &s->fr);
        switch (s->fr.kind) {
        case SLB_FRAME_NEED_MORE:
            return;
        case SLB_FRAME_MESSAGE:
            if (s->messages < 8)
                snprintf(s->call_ids[s->messages], 32, "%.*s", (int)msg.call_id.len,
                         msg.call_id.ptr);
            s->messages++;
            break;
        case SLB_FRAME_PING:
            s->pings++;
            break;
        case SLB_FRAME_SKIP:
            s->skips++;
            break;
        case SLB_FRAME_BAD:
            s->bad++;
            s->last_err = msg.err;
            break;
        case SLB_FRAME_FATAL:
            s->fatal++;
            s->last_err = msg.err;
            return;
        }
        cr_assert_gt(s->fr.frame_len, 0);
        cr_assert_leq(s->fr.frame_len, s->len);
        memmove(s->buf, s->buf + s->fr.frame_len, s->len - s->fr.frame_len);
        s->len -= s->fr.frame_len;
        s->fr = (struct slb_sip_frame){0};
    }
}

static struct stream st;

Test(frame, body_with_crlfcrlf_is_framed_by_content_length)
{
    memset(&st, 0, sizeof(st));
    pump(&st, opt, sizeof(opt) - 1);
    cr_assert_eq(st.messages, 1);
    cr_assert_eq(st.len, 0);
    cr_assert_eq(st.pings, 0);
    cr_assert_str_eq(st.call_ids[0], "frame-1@x");
}

Test(frame, several_messages_in_one_read)
{
    memset(&st, 0, sizeof(st));
    char both[2048];
    size_t n = 0;
    memcpy(both + n, opt, sizeof(opt) - 1);
    n += sizeof(opt) - 1;
    memcpy(both + n, bye, sizeof(bye) - 1);
    n += sizeof(bye) - 1;
    memcpy(both + n, opt, sizeof(opt) - 1);
    n += sizeof(opt) - 1;
    pump(&st, both, n);
    cr_assert_eq(st.messages, 3);
    cr_assert_str_eq(st.call_ids[1], "frame-2@x");
    cr_assert_eq(st.len, 0);
}

Test(frame, split_at_every_byte)
{
    char both[2048];
    size_t n = 0;
    memcpy(both + n, opt, sizeof(opt) - 1);
    n += sizeof(opt) - 1;
    memcpy(both + n, bye, sizeof(bye) - 1);
    n += sizeof(bye) - 1;
    for (size_t cut = 1; cut < n; cut++) {
        memset(&st, 0, sizeof(st));
        pump(&st, both, cut);
        pump(&st, both + cut, n - cut);
        cr_assert_eq(st.messages, 2, "cut at %zu", cut);
        cr_assert_eq(st.pings + st.bad + st.fatal, 0, "cut at %zu", cut);
    }
    /* And dribbled one byte at a time. */
    memset(&st, 0, sizeof(st));
    for (size_t i = 0; i < n; i++)
        pump(&st, both + i, 1);
    cr_assert_eq(st.messages, 2);
    cr_assert_eq(st.len, 0);
}

Test(frame, keepalive_ping_and_leading_crlf)
{
    memset(&st, 0, sizeof(st));
    pump(&st, "\r\n\r\n", 4);
    cr_assert_eq(st.pings, 1);
    /* A ping split in two is still one ping, not two pongs. */
    pump(&st, "\r\n", 2);
    cr_assert_eq(st.pings, 1);
    pump(&st, "\r\n", 2);
    cr_assert_eq(st.pings, 2);
    cr_assert_eq(st.skips, 0);
    /* A single CRLF before a message (RFC 3261 7.5) is skipped. */
    char buf[1024];
    buf[0] = '\r';
    buf[1] = '\n';
    memcpy(buf + 2, bye, sizeof(bye) - 1);
    pump(&st, buf, sizeof(bye) + 1);
    cr_assert_eq(st.skips, 1);
    cr_assert_eq(st.messages, 1);
    cr_assert_eq(st.pings, 2);
}

Test(frame, bad_message_is_skipped_and_stream_goes_on)
{
    memset(&st, 0, sizeof(st));
    static const char no_cid[] = "OPTIONS sips:x@example.com SIP/2.0\r\n"
                                 "Via: SIP/2.0/TLS a.example.com;branch=z9hG4bK1\r\n"
                                 "From: <sips:a@example.com>;tag=1\r\n"
                                 "To: <sips:b@example.com>\r\n"
                                 "CSeq: 1 OPTIONS\r\n"
                                 "Content-Length: 2\r\n\r\nhi";
    pump(&st, no_cid, sizeof(no_cid) - 1);
    cr_assert_eq(st.bad, 1);
    cr_assert_eq(st.last_err, SLB_SIP_E_NO_CALL_ID);
    pump(&st, bye, sizeof(bye) - 1);
    cr_assert_eq(st.messages, 1);
    cr_assert_eq(st.fatal, 0);
}

Test(frame, garbage_is_fatal)
{
    memset(&st, 0, sizeof(st));
    pump(&st, bye, sizeof(bye) - 1);
    pump(&st, "\x16\x03\x01\x00\x10garbage\r\n\r\n", 16);
    cr_assert_eq(st.messages, 1);
    cr_assert_eq(st.fatal, 1);
    memset(&st, 0, sizeof(st));
    pump(&st, "\r\x01", 2);
    cr_assert_eq(st.fatal, 1);
    cr_assert_eq(msg.err, SLB_SIP_E_GARBAGE);
}

Test(frame, a_fatal_frame_before_any_scan_leaves_nothing_to_answer)
{
    /* A valid request, then garbage in the same stream: the message the framer describes
     * must not still be the request (an error response would copy its lines at offsets
     * that now point into other bytes). */
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    struct slb_sip_frame fr = {0};
    slb_sip_frame(bye, sizeof(bye) - 1, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
    cr_assert_eq(fr.kind, SLB_FRAME_MESSAGE);
    cr_assert(msg.is_request && msg.header_count > 0);
    fr = (struct slb_sip_frame){0};
    slb_sip_frame("\rX", 2, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
    cr_assert_eq(fr.kind, SLB_FRAME_FATAL);
    cr_assert_eq(msg.err, SLB_SIP_E_GARBAGE);
    cr_assert_not(msg.is_request);
    cr_assert_eq(msg.header_count, 0);
    cr_assert_eq(msg.via_count, 0);
    cr_assert_eq(msg.first[SLB_HDR_VIA], -1);
    /* The same after headers that never end (the resume path gives up unscanned). */
    slb_sip_frame(bye, sizeof(bye) - 1, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
    static char endless[70000];
    memset(endless, 'a', sizeof(endless));
    memcpy(endless, "OPTIONS sips:x SIP/2.0\r\nX: ", 28);
    fr = (struct slb_sip_frame){0};
    slb_sip_frame(endless, 100, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
    cr_assert_eq(fr.kind, SLB_FRAME_NEED_MORE);
    slb_sip_frame(bye, sizeof(bye) - 1, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT,
                  &(struct slb_sip_frame){0}); /* another connection's message meanwhile */
    slb_sip_frame(endless, sizeof(endless), &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
    cr_assert_eq(fr.kind, SLB_FRAME_FATAL);
    cr_assert_eq(msg.err, SLB_SIP_E_TOO_LARGE);
    cr_assert_not(msg.is_request);
    cr_assert_eq(msg.header_count, 0);
}

Test(frame, headers_never_ending_hit_the_size_limit)
{
    memset(&st, 0, sizeof(st));
    pump(&st, "OPTIONS sips:x@example.com SIP/2.0\r\n", 36);
    char line[1000];
    memset(line, 'a', sizeof(line));
    memcpy(line, "X-A: ", 5);
    line[998] = '\r';
    line[999] = '\n';
    for (int i = 0; i < 200 && !st.fatal; i++)
        pump(&st, line, sizeof(line));
    cr_assert_eq(st.fatal, 1);
    cr_assert(msg.err == SLB_SIP_E_TOO_LARGE || msg.err == SLB_SIP_E_TOO_MANY_HEADERS);
}

Test(frame, missing_or_bad_content_length_closes)
{
    memset(&st, 0, sizeof(st));
    static const char no_cl[] = "BYE sips:x@example.com SIP/2.0\r\n"
                                "Via: SIP/2.0/TLS a.example.com;branch=z9hG4bK2\r\n"
                                "From: <sips:a@example.com>;tag=1\r\n"
                                "To: <sips:b@example.com>;tag=2\r\n"
                                "Call-ID: frame-2@x\r\n"
                                "CSeq: 2 BYE\r\n\r\n";
    pump(&st, no_cl, sizeof(no_cl) - 1);
    cr_assert_eq(st.fatal, 1);
    cr_assert_eq(msg.err, SLB_SIP_E_NO_CONTENT_LENGTH);
    /* The fields are there for a 400 before the close. */
    cr_assert_eq(msg.call_id.len, strlen("frame-2@x"));
}
