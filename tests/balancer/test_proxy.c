/* The proxy rules: error responses per RFC 3261 8.2.6, request edits, response routing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer/proxy.h"
#include "balancer/token.h"
#include "core/sip.h"
#include "core/sip_edit.h"

static struct slb_sip_msg msg, back;
static struct slb_sip_header h[64], h2[64];
static char out[4096];

static int scan_n(const char *text, size_t len, struct slb_sip_msg *m, struct slb_sip_header *hh)
{
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    return slb_sip_scan(text, len, &lim, m, hh, 64);
}

static void scan_ok(const char *text, struct slb_sip_msg *m, struct slb_sip_header *hh)
{
    int rc = scan_n(text, strlen(text), m, hh);
    cr_assert_eq(rc, 0, "scan failed: %d err %d", rc, m->err);
}

static struct slb_proxy_self self_with(uint64_t k0, uint32_t boot)
{
    struct slb_proxy_self s = {.via_sent_by = "lb.example.com:5061"};
    s.via_sent_by_len = strlen(s.via_sent_by);
    struct slb_siphash_key key = {k0, 0x2222};
    slb_proxy_self_set_keys(&s, &key, 1, boot);
    return s;
}

static struct slb_proxy_self self(void)
{
    return self_with(0x1111, 7);
}

static const char req[] = "INVITE sips:b@example.com SIP/2.0\r\n"
                          "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1, SIP/2.0/TLS "
                          "d.example.com;branch=z9hG4bKd1\r\n"
                          "Max-Forwards: 0\r\n"
                          "v: SIP/2.0/TLS e.example.com;branch=z9hG4bKe1\r\n"
                          "From: <sips:a@example.com>;tag=f1\r\n"
                          "To: \"Bob\" <sips:b@example.com>\r\n"
                          "Call-ID: p@x\r\n"
                          "CSeq: 5 INVITE\r\n"
                          "Contact: <sips:a@c.example.com>\r\n"
                          "Content-Length: 0\r\n\r\n";

Test(proxy, reply_copies_the_right_headers_and_adds_a_to_tag)
{
    scan_ok(req, &msg, h);
    cr_assert(slb_proxy_can_reply(&msg));
    int n = slb_proxy_reply(out, sizeof(out), &msg, req, 483, "Too Many Hops", NULL, "slb42");
    cr_assert_gt(n, 0);
    out[n] = 0;
    cr_assert_str_eq(out, "SIP/2.0 483 Too Many Hops\r\n"
                          "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1, SIP/2.0/TLS "
                          "d.example.com;branch=z9hG4bKd1\r\n"
                          "v: SIP/2.0/TLS e.example.com;branch=z9hG4bKe1\r\n"
                          "From: <sips:a@example.com>;tag=f1\r\n"
                          "To: \"Bob\" <sips:b@example.com>;tag=slb42\r\n"
                          "Call-ID: p@x\r\n"
                          "CSeq: 5 INVITE\r\n"
                          "Server: sipslb\r\nContent-Length: 0\r\n\r\n");
    scan_ok(out, &back, h2);
    cr_assert_eq(back.status, 483);
    cr_assert_eq(back.via_count, 3);
    cr_assert_eq(slb_proxy_reply(out, 50, &msg, req, 483, "Too Many Hops", NULL, "x"), -ENOSPC);
}

Test(proxy, reply_with_extra_header_and_existing_tag)
{
    static const char r[] = "BYE sips:b@example.com SIP/2.0\r\n"
                            "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                            "From: <sips:a@example.com>;tag=f1\r\nTo: <sips:b@example.com>;tag=t7\r\n"
                            "Call-ID: p@x\r\nCSeq: 6 BYE\r\nContent-Length: 0\r\n\r\n";
    scan_ok(r, &msg, h);
    int n = slb_proxy_reply(out, sizeof(out), &msg, r, 503, "Service Unavailable",
                            "Retry-After: 5\r\n", "slb1");
    out[n] = 0;
    cr_assert(strstr(out, "To: <sips:b@example.com>;tag=t7\r\n"));
    cr_assert(strstr(out, "Retry-After: 5\r\n"));
    cr_assert_null(strstr(out, "slb1"));
}

Test(proxy, no_reply_to_ack_or_without_fields)
{
    static const char ack[] = "ACK sips:b@example.com SIP/2.0\r\n"
                              "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                              "From: <sips:a@example.com>;tag=f1\r\nTo: <sips:b@example.com>;tag=t\r\n"
                              "Call-ID: p@x\r\nCSeq: 5 ACK\r\nContent-Length: 0\r\n\r\n";
    scan_ok(ack, &msg, h);
    cr_assert_not(slb_proxy_can_reply(&msg));
    static const char nocid[] = "OPTIONS sips:b@example.com SIP/2.0\r\n"
                                "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                                "From: <sips:a@example.com>;tag=f1\r\nTo: <sips:b@example.com>\r\n"
                                "CSeq: 5 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    cr_assert_eq(slb_sip_scan(nocid, strlen(nocid), &lim, &msg, h, 64), -EBADMSG);
    cr_assert_not(slb_proxy_can_reply(&msg));
}

Test(proxy, request_edits_then_response_routes_back)
{
    static const char r[] = "OPTIONS sips:b@example.com SIP/2.0\r\n"
                            "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1;rport\r\n"
                            "From: <sips:a@example.com>;tag=f1\r\nTo: <sips:b@example.com>\r\n"
                            "Call-ID: p@x\r\nCSeq: 5 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    scan_ok(r, &msg, h);
    struct slb_proxy_self s = self();
    struct slb_sip_edit e;
    slb_sip_edit_init(&e, r, strlen(r));
    cr_assert_eq(slb_proxy_request_edits(&e, &msg, &s, "192.0.2.9", 9, 40000, 0xabcdef, false, 0, NULL), 0);
    int n = slb_sip_edit_flatten(&e, out, sizeof(out));
    out[n] = 0;
    cr_assert(strstr(out, "Max-Forwards: 70\r\n"));
    cr_assert(strstr(out, ";rport=40000;received=192.0.2.9\r\n"));
    static const char top[] = "Via: SIP/2.0/TLS lb.example.com:5061;branch=z9hG4bKslb";
    cr_assert_eq(strncmp(strchr(out, '\n') + 1, top, sizeof(top) - 1), 0, "%s", out);
    /* The backend answers: copy the forwarded request's Vias into a 200. */
    scan_ok(out, &back, h2);
    char resp[2048];
    int m = slb_proxy_reply(resp, sizeof(resp), &back, out, 200, "OK", NULL, "b1");
    resp[m] = 0;
    scan_ok(resp, &msg, h);
    uint64_t conn;
    bool side = true;
    cr_assert(slb_proxy_response_target(&msg, &s, &conn, NULL, &side));
    cr_assert_eq(conn, 0xabcdef);
    cr_assert_not(side, "a client's connection: its response must come from a backend");
    struct slb_proxy_self other = self_with(0x1110, 7);
    cr_assert_not(slb_proxy_response_target(&msg, &other, &conn, NULL, &side));
    /* The same key in another process (another boot id): its branches are not ours. */
    other = self_with(0x1111, 8);
    cr_assert_not(slb_proxy_response_target(&msg, &other, &conn, NULL, &side));
    /* Max-Forwards 0 is refused before any edit. */
    scan_ok(req, &back, h2);
    slb_sip_edit_init(&e, req, strlen(req));
    cr_assert_eq(slb_proxy_request_edits(&e, &back, &s, "192.0.2.9", 9, 1, 1, false, 0, NULL), -ELOOP);
    cr_assert_eq(e.n_ops, 0);
}

Test(proxy, record_route_and_path_carry_tokens_that_route_info_reads_back)
{
    static const char r[] = "REGISTER sips:example.com SIP/2.0\r\n"
                            "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                            "From: <sips:a@example.com>;tag=f1\r\nTo: <sips:a@example.com>\r\n"
                            "Call-ID: p@x\r\nCSeq: 5 REGISTER\r\nContent-Length: 0\r\n\r\n";
    scan_ok(r, &msg, h);
    struct slb_proxy_self s = self();
    struct slb_sip_edit e;
    slb_sip_edit_init(&e, r, strlen(r));
    cr_assert_eq(slb_proxy_path(&e, &msg, &s, 0x0100000500000009ull, 0), 0);
    cr_assert_eq(slb_proxy_record_route(&e, &msg, &s, 0xabcd, 0x0100000500000009ull, 0, false), 0);
    int n = slb_sip_edit_flatten(&e, out, sizeof(out));
    out[n] = 0;
    cr_assert(strstr(out, "Path: <sips:lb.example.com:5061;lr;flow="), "%s", out);
    cr_assert(strstr(out, "Record-Route: <sips:lb.example.com:5061;lr;slb="), "%s", out);
    /* Turn the Record-Route into a Route of a later request and read it back. */
    const char *rr = strstr(out, "Record-Route: ") + 14;
    char later[2048];
    snprintf(later, sizeof(later),
             "BYE sips:a@c.example.com SIP/2.0\r\nVia: SIP/2.0/TLS k;branch=z9hG4bKk\r\n"
             "Route: %.*s\r\nFrom: <sips:b@example.com>;tag=1\r\nTo: <sips:a@example.com>;tag=2\r\n"
             "Call-ID: p@x\r\nCSeq: 6 BYE\r\nContent-Length: 0\r\n\r\n",
             (int)(strchr(rr, '\r') - rr), rr);
    scan_ok(later, &back, h2);
    struct slb_route_info ri;
    slb_proxy_route_info(&back, &s, &ri);
    cr_assert(ri.ours && ri.has_backend && ri.has_flow && ri.flow_ok);
    cr_assert_eq(ri.backend, 0xabcd);
    cr_assert_eq(ri.flow, 0x0100000500000009ull);
    cr_assert_not(ri.flow_elsewhere);
    /* Under another key it is not ours. */
    struct slb_proxy_self other = self_with(0x1110, 7);
    slb_proxy_route_info(&back, &other, &ri);
    cr_assert(!ri.ours && ri.has_flow && !ri.flow_ok);
    /* The same key in another process (--secret-file shared, or after a restart): ours,
     * routed to the same backend, but the flow is another process's (430, not 403). */
    other = self_with(0x1111, 8);
    slb_proxy_route_info(&back, &other, &ri);
    cr_assert(ri.ours && ri.has_backend && ri.flow_ok && ri.flow_elsewhere);
    cr_assert_eq(ri.backend, 0xabcd);
    /* A rotation: a new key first, the old one still listed; both verify, the new signs. */
    struct slb_siphash_key keys[2] = {{0x9999, 0x2222}, {0x1111, 0x2222}};
    slb_proxy_self_set_keys(&other, keys, 2, 7);
    slb_proxy_route_info(&back, &other, &ri);
    cr_assert(ri.ours && ri.has_backend && ri.flow_ok && !ri.flow_elsewhere);
    slb_proxy_self_set_keys(&other, keys, 1, 7); /* the old key removed */
    slb_proxy_route_info(&back, &other, &ri);
    cr_assert(!ri.ours && !ri.flow_ok && !ri.has_backend);
}

static int check(const char *text, bool sips_only, const char **reason, char *extra)
{
    scan_ok(text, &msg, h);
    struct slb_proxy_self s = self();
    return slb_proxy_check_request(&msg, &s, sips_only, reason, extra, 256);
}

#define MSG(ruri, extra_hdr)                                                               \
    "OPTIONS " ruri " SIP/2.0\r\nVia: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"       \
    "From: <sips:a@example.com>;tag=f1\r\nTo: <sips:b@example.com>\r\nCall-ID: q@x\r\n"     \
    "CSeq: 5 OPTIONS\r\n" extra_hdr "Content-Length: 0\r\n\r\n"

Test(proxy, checks_of_rfc3261_16_3)
{
    const char *reason;
    char extra[256];
    cr_assert_eq(check(MSG("sips:b@example.com", ""), false, &reason, extra), 0);
    cr_assert_eq(check(MSG("sip:b@example.com", ""), false, &reason, extra), 0);
    cr_assert_eq(check(MSG("tel:+15551234", ""), false, &reason, extra), 0);
    cr_assert_eq(check(MSG("http://example.com/", ""), false, &reason, extra), 416);
    cr_assert_eq(check(MSG("sip:b@example.com", ""), true, &reason, extra), 480);
    cr_assert_str_eq(extra, "Warning: 381 lb.example.com:5061 \"SIPS Required\"\r\n");
    cr_assert_eq(check(MSG("sips:b@example.com", ""), true, &reason, extra), 0);
    cr_assert_eq(check(MSG("sips:b@example.com", "Proxy-Require: foo, bar\r\n"), false, &reason,
                       extra),
                 420);
    cr_assert_str_eq(extra, "Unsupported: foo, bar\r\n");
}

Test(proxy, a_loop_is_482_a_spiral_is_not)
{
    struct slb_proxy_self s = self();
    static const char r[] = MSG("sips:b@example.com", "");
    scan_ok(r, &msg, h);
    struct slb_sip_edit e;
    slb_sip_edit_init(&e, r, strlen(r));
    cr_assert_eq(slb_proxy_request_edits(&e, &msg, &s, "192.0.2.1", 9, 1, 5, false, 0, NULL), 0);
    int n = slb_sip_edit_flatten(&e, out, sizeof(out));
    out[n] = 0;
    /* The same request comes back through a backend that added its Via on top. */
    char again[4096];
    snprintf(again, sizeof(again), "%.*sVia: SIP/2.0/TLS k.example.com;branch=z9hG4bKk1\r\n%s",
             (int)(strchr(out, '\n') + 1 - out), out, strchr(out, '\n') + 1);
    scan_ok(again, &back, h2);
    cr_assert(slb_proxy_is_loop(&back, &s));
    /* Retargeted (another Request-URI): a spiral, forwarded. */
    char *spiral = strdup(again);
    memcpy(strstr(spiral, "sips:b@"), "sips:c@", 7);
    scan_ok(spiral, &back, h2);
    cr_assert_not(slb_proxy_is_loop(&back, &s));
    free(spiral);
    /* Same Request-URI but another Route set (a dialog request passing us on both sides):
     * not a loop either. */
    char routed[4096];
    const char *cl = strstr(again, "Content-Length");
    snprintf(routed, sizeof(routed), "%.*sRoute: <sips:k.example.com;lr>\r\n%s",
             (int)(cl - again), again, cl);
    scan_ok(routed, &back, h2);
    cr_assert_not(slb_proxy_is_loop(&back, &s));
}

Test(proxy, branch_says_which_side_the_named_connection_is_on)
{
    static const char r[] = "BYE sips:a@192.0.2.1 SIP/2.0\r\n"
                            "Via: SIP/2.0/TLS reg.example.com;branch=z9hG4bKr1\r\n"
                            "From: <sips:b@example.com>;tag=f1\r\nTo: <sips:a@example.com>;tag=t\r\n"
                            "Call-ID: side@x\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n";
    scan_ok(r, &msg, h);
    struct slb_proxy_self s = self();
    struct slb_sip_edit e;
    slb_sip_edit_init(&e, r, strlen(r));
    cr_assert_eq(slb_proxy_request_edits(&e, &msg, &s, "192.0.2.9", 9, 5061, 0x77, true, 0, NULL), 0);
    int n = slb_sip_edit_flatten(&e, out, sizeof(out));
    out[n] = 0;
    scan_ok(out, &back, h2);
    char resp[2048];
    int m = slb_proxy_reply(resp, sizeof(resp), &back, out, 200, "OK", NULL, "a1");
    resp[m] = 0;
    scan_ok(resp, &msg, h);
    uint64_t conn;
    bool side = false;
    cr_assert(slb_proxy_response_target(&msg, &s, &conn, NULL, &side));
    cr_assert_eq(conn, 0x77);
    cr_assert(side, "a backend's connection: only a client may answer it");
}

Test(proxy, a_long_proxy_require_gets_a_whole_unsupported_line)
{
    char r[4096];
    int n = snprintf(r, sizeof(r),
                     "OPTIONS sips:b@example.com SIP/2.0\r\n"
                     "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                     "From: <sips:a@example.com>;tag=f1\r\nTo: <sips:b@example.com>\r\n"
                     "Call-ID: pr@x\r\nCSeq: 5 OPTIONS\r\nProxy-Require: ");
    for (int i = 0; i < 100; i++)
        n += snprintf(r + n, sizeof(r) - (size_t)n, "%sext-option-%03d", i ? ", " : "", i);
    snprintf(r + n, sizeof(r) - (size_t)n, "\r\nContent-Length: 0\r\n\r\n");
    scan_ok(r, &msg, h);
    struct slb_proxy_self s = self();
    const char *reason;
    char extra[320];
    cr_assert_eq(slb_proxy_check_request(&msg, &s, false, &reason, extra, sizeof(extra)), 420);
    size_t len = strlen(extra);
    cr_assert_eq(strncmp(extra, "Unsupported: ext-option-000, ", 29), 0, "%s", extra);
    cr_assert(len > 200 && len < sizeof(extra), "%zu", len);
    cr_assert_eq(strcmp(extra + len - 2, "\r\n"), 0, "ends in CRLF: %s", extra);
    /* Only whole option tags: the last one before the CRLF is complete. */
    const char *last = strrchr(extra, ',');
    cr_assert(last && strlen(last) == strlen(", ext-option-000\r\n"), "%s", extra);
}

Test(proxy, fields_longer_than_the_hash_buffer_are_hashed_without_overflow)
{
    /* A Request-URI of 3000 bytes fills the hash input; the Call-ID, tags and Route values
     * behind it are left out instead of written past it (built with ASan in the fuzz and
     * sanitizer runs; a plain build would smash the stack). */
    static char r[16384];
    int n = snprintf(r, sizeof(r), "INVITE sips:");
    for (int i = 0; i < 3000; i++)
        r[n++] = 'u';
    n += snprintf(r + n, sizeof(r) - (size_t)n,
                  "@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c.example.com;branch=z9hG4bKlong\r\n"
                  "Route: <sips:");
    for (int i = 0; i < 3000; i++)
        r[n++] = 'r';
    n += snprintf(r + n, sizeof(r) - (size_t)n,
                  "@x;lr>\r\nFrom: <sips:a@example.com>;tag=f1\r\nTo: <sips:b@example.com>\r\n"
                  "Call-ID: long@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    scan_ok(r, &msg, h);
    struct slb_proxy_self s = self();
    uint32_t a = slb_loop_hash(&s.mac_key, &msg), b = slb_tx_hash(&s.mac_key, &msg);
    cr_assert_eq(slb_loop_hash(&s.mac_key, &msg), a, "deterministic");
    cr_assert_eq(slb_tx_hash(&s.mac_key, &msg), b);
    struct slb_sip_edit e;
    slb_sip_edit_init(&e, r, strlen(r));
    cr_assert_eq(slb_proxy_request_edits(&e, &msg, &s, "192.0.2.9", 9, 1, 7, false, 0, NULL), 0);
}

/* fuzz_proxy's findings (tests/fuzz/regressions): our answer is a valid message whatever
 * else was wrong with the request, or there is no answer. */

Test(proxy, an_answer_copies_one_call_id_from_and_cseq_the_ones_the_scanner_read)
{
    static const char r[] = "OPTIONS sips:b@example.com SIP/2.0\r\n"
                            "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                            "CSeq: 9Forwards: 69\r\n"
                            "From: <sips:a@example.com>;tag=f1\r\n"
                            "From: <sips:x@example.com>;tag=f2\r\n"
                            "To: <sips:b@example.com>\r\n"
                            "Call-ID: one@x\r\n"
                            "Call-ID: two@x\r\n"
                            "CSeq: 7 OPTIONS\r\n"
                            "Content-Length: 0\r\n\r\n";
    cr_assert_eq(scan_n(r, sizeof(r) - 1, &msg, h), -EBADMSG);
    cr_assert(slb_proxy_can_reply(&msg));
    int n = slb_proxy_reply(out, sizeof(out), &msg, r, 400, "Bad Request", NULL, "t");
    cr_assert_gt(n, 0);
    cr_assert_eq(scan_n(out, (size_t)n, &back, h2), 0, "err %d", back.err);
    out[n] = 0;
    cr_assert(strstr(out, "CSeq: 7 OPTIONS\r\n") && !strstr(out, "9Forwards"));
    cr_assert(strstr(out, "tag=f1") && !strstr(out, "tag=f2"));
    cr_assert(strstr(out, "one@x") && !strstr(out, "two@x"));
}

Test(proxy, no_answer_that_would_carry_a_nul_or_a_bare_cr)
{
    static const char nul[] = "OPTIONS sips:b@example.com SIP/2.0\r\n"
                              "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                              "From: <sips:a@example.com>;tag=f1\r\n"
                              "From: <sips:a\0@example.com>;tag=f2\r\n"
                              "To: <sips:b@example.com>\r\nCall-ID: n@x\r\nCSeq: 7 OPTIONS\r\n"
                              "Content-Length: 0\r\n\r\n";
    cr_assert_eq(scan_n(nul, sizeof(nul) - 1, &msg, h), -EBADMSG);
    cr_assert_not(slb_proxy_can_reply(&msg));
    static const char cr[] = "OPTIONS sips:b@example.com SIP/2.0\r\n"
                             "Via:\r\x02SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                             "From: <sips:a@example.com>;tag=f1\r\n"
                             "To: <sips:b@example.com>\r\nCall-ID: n@x\r\nCSeq: 7 OPTIONS\r\n"
                             "Content-Length: 0\r\n\r\n";
    cr_assert_eq(scan_n(cr, sizeof(cr) - 1, &msg, h), -EBADMSG);
    cr_assert_not(slb_proxy_can_reply(&msg));
}

Test(proxy, an_unreadable_cseq_is_given_back)
{
    static const char cseq[] = "OPTIONS sips:b@example.com SIP/2.0\r\n"
                               "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
                               "From: <sips:a@example.com>;tag=f1\r\n"
                               "To: <sips:b@example.com>\r\nCall-ID: n@x\r\nCSeq: 7 OPT\xd1ONS\r\n"
                               "Content-Length: 0\r\n\r\n";
    cr_assert_eq(scan_n(cseq, sizeof(cseq) - 1, &msg, h), -EBADMSG);
    /* A CSeq that does not parse is still the client's: given back for it to match our
     * 400 with (RFC 4475 3.1.2.4 asks 400 for an overlarge one). */
    cr_assert(slb_proxy_can_reply(&msg));
    int n = slb_proxy_reply(out, sizeof(out), &msg, cseq, 400, "Bad Request", NULL, "t");
    cr_assert_gt(n, 0);
    out[n] = 0;
    cr_assert(strstr(out, "CSeq: 7 OPT\xd1ONS\r\n"));
}
