/* The slice editor and the proxy's edits: exact output bytes, and output that scans
 * again as well-formed SIP. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "core/sip.h"
#include "core/sip_edit.h"
#include "tests/support/guard.h"

static struct slb_sip_msg msg;
static struct slb_sip_header hdrs[SLB_SIP_MAX_HEADERS_DEFAULT];
static struct slb_sip_edit ed;
static char out[8192];
static const char *orig;
static size_t orig_len;

static void start(const char *text)
{
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    orig_len = strlen(text);
    orig = guard_place(text, orig_len);
    cr_assert_eq(slb_sip_scan(orig, strlen(text), &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT),
                 0);
    slb_sip_edit_init(&ed, orig, strlen(text));
}

/* Flattens the edit, checks it equals want, and that it scans cleanly again. */
static void expect(const char *want)
{
    int n = slb_sip_edit_flatten(&ed, out, sizeof(out));
    cr_assert_geq(n, 0);
    cr_assert_eq((size_t)n, slb_sip_edit_len(&ed));
    out[n] = '\0';
    cr_assert_str_eq(out, want);
    static struct slb_sip_msg again;
    static struct slb_sip_header hdrs2[SLB_SIP_MAX_HEADERS_DEFAULT];
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    cr_assert_eq(slb_sip_scan(out, (size_t)n, &lim, &again, hdrs2, SLB_SIP_MAX_HEADERS_DEFAULT), 0,
                 "edited message does not scan: err %d", again.err);
    cr_assert_eq(again.msg_len, (uint32_t)n);
}

#define TAIL                                                                               \
    "From: <sips:a@example.com>;tag=1\r\n"                                                 \
    "To: <sips:b@example.com>\r\n"                                                         \
    "Call-ID: e@x\r\n"                                                                     \
    "CSeq: 1 INVITE\r\n"                                                                   \
    "Content-Length: 2\r\n\r\nhi"

Test(edit, raw_splices_in_any_order)
{
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    /* Rewriting the body breaks Content-Length; only test the mechanics here. */
    cr_assert_eq(slb_sip_edit_splice(&ed, 10, 0, "B", 1), 0);
    cr_assert_eq(slb_sip_edit_splice(&ed, 0, 6, "BYE", 3), 0);
    cr_assert_eq(slb_sip_edit_splice(&ed, 10, 0, "C", 1), 0);
    cr_assert_eq(slb_sip_edit_splice(&ed, 2, 1, "x", 1), -EINVAL); /* inside a delete */
    cr_assert_eq(slb_sip_edit_splice(&ed, 0, 3, "x", 1), -EINVAL); /* same range */
    cr_assert_eq(slb_sip_edit_splice(&ed, 100000, 0, "x", 1), -EINVAL);
    int n = slb_sip_edit_flatten(&ed, out, sizeof(out));
    cr_assert_gt(n, 0);
    cr_assert_eq(memcmp(out, "BYE sipBCs:b@", 13), 0);
    struct iovec iov[SLB_SIP_EDIT_MAX_IOV];
    int cnt = slb_sip_edit_iov(&ed, iov, (int)SLB_SIP_EDIT_MAX_IOV);
    cr_assert_eq(cnt, 5); /* "BYE", orig[6,10), "B", "C", rest */
    cr_assert_eq(iov[1].iov_base, (void *)(orig + 6)); /* no copy of the original */
    cr_assert_eq(slb_sip_edit_iov(&ed, iov, 2), -ENOSPC);
}

Test(edit, full_tables_fail_without_change)
{
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    for (unsigned i = 0; i < SLB_SIP_EDIT_MAX_OPS; i++)
        cr_assert_eq(slb_sip_edit_splice(&ed, 0, 0, "", 0), 0);
    cr_assert_eq(slb_sip_edit_splice(&ed, 0, 0, "x", 1), -ENOSPC);
    slb_sip_edit_init(&ed, orig, orig_len);
    static char big[SLB_SIP_EDIT_SCRATCH + 1];
    cr_assert_eq(slb_sip_edit_splice(&ed, 0, 0, big, sizeof(big)), -ENOSPC);
    cr_assert_eq(slb_sip_edit_len(&ed), orig_len);
}

Test(edit, push_via_goes_on_top)
{
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    const char *ours = "SIP/2.0/TLS lb.example.com:5061;branch=z9hG4bKslb1";
    cr_assert_eq(slb_sip_edit_push_via(&ed, &msg, ours, strlen(ours)), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/TLS lb.example.com:5061;branch=z9hG4bKslb1\r\n"
           "Via: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
}

Test(edit, pop_via_alone_on_its_line)
{
    start("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS lb;branch=z9hG4bKa\r\n"
          "Via: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_pop_via(&ed, &msg), 0);
    expect("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
}

Test(edit, pop_via_first_of_a_comma_list)
{
    start("SIP/2.0 200 OK\r\nv: SIP/2.0/TLS lb;branch=z9hG4bKa ,  SIP/2.0/TLS c;branch=z9hG4bK1, "
          "SIP/2.0/TLS d;branch=z9hG4bK2\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_pop_via(&ed, &msg), 0);
    expect("SIP/2.0 200 OK\r\nv: SIP/2.0/TLS c;branch=z9hG4bK1, SIP/2.0/TLS d;branch=z9hG4bK2\r\n" TAIL);
}

Test(edit, pop_via_folded_line)
{
    start("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS lb\r\n ;branch=z9hG4bKa\r\n"
          "Via: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_pop_via(&ed, &msg), 0);
    expect("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
}

Test(edit, max_forwards_decrement_insert_and_zero)
{
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
          "Max-Forwards:  10 \r\n" TAIL);
    cr_assert_eq(slb_sip_edit_max_forwards(&ed, &msg), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
           "Max-Forwards:  9 \r\n" TAIL);
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_max_forwards(&ed, &msg), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\nMax-Forwards: 70\r\n"
           "Via: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
          "Max-Forwards: 0\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_max_forwards(&ed, &msg), -ELOOP);
    cr_assert_eq(ed.n_ops, 0);
}

Test(edit, received_and_rport)
{
    /* No rport asked: both are added. */
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c.example.com;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_via_received(&ed, &msg, "192.0.2.7", 9, 40123), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bK1;rport=40123;received=192.0.2.7\r\n" TAIL);
    /* A valueless rport at the end gets its value (RFC 3581). */
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1;rport\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_via_received(&ed, &msg, "::1", 3, 5061), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/TLS c;branch=z9hG4bK1;rport=5061;received=::1\r\n" TAIL);
    /* Valueless rport in the middle, and of a comma list; stale values replaced. */
    start("INVITE sips:b@example.com SIP/2.0\r\n"
          "Via: SIP/2.0/TLS c;rport;received=10.0.0.1;branch=z9hG4bK1, SIP/2.0/TLS d;branch=z9hG4bK0\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_via_received(&ed, &msg, "192.0.2.7", 9, 7), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/TLS c;rport=7;received=192.0.2.7;branch=z9hG4bK1, SIP/2.0/TLS d;branch=z9hG4bK0\r\n" TAIL);
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;rport=1;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_via_received(&ed, &msg, "192.0.2.7", 9, 65535), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/TLS c;rport=65535;branch=z9hG4bK1;received=192.0.2.7\r\n" TAIL);
}

Test(edit, record_route_and_path_above_existing_values)
{
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
          "Record-Route: <sips:p1.example.com;lr>\r\n" TAIL);
    const char *rr = "<sips:lb.example.com;lr>";
    cr_assert_eq(slb_sip_edit_insert_header(&ed, &msg, SLB_HDR_RECORD_ROUTE, "Record-Route", rr,
                                            strlen(rr)),
                 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
           "Record-Route: <sips:lb.example.com;lr>\r\n"
           "Record-Route: <sips:p1.example.com;lr>\r\n" TAIL);
    start("REGISTER sips:r.example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
          "From: <sips:a@example.com>;tag=1\r\nTo: <sips:a@example.com>\r\nCall-ID: r@x\r\n"
          "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(slb_sip_edit_insert_header(&ed, &msg, SLB_HDR_PATH, "Path", rr, strlen(rr)), 0);
    expect("REGISTER sips:r.example.com SIP/2.0\r\nPath: <sips:lb.example.com;lr>\r\n"
           "Via: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
           "From: <sips:a@example.com>;tag=1\r\nTo: <sips:a@example.com>\r\nCall-ID: r@x\r\n"
           "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n");
}

Test(edit, the_whole_request_path_together)
{
    /* What the proxy does to a request: all edits on one message, iovecs over it. */
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1;rport\r\n"
          "Max-Forwards: 70\r\n" TAIL);
    const char *ours = "SIP/2.0/TLS lb:5061;branch=z9hG4bKslb";
    const char *rr = "<sips:lb:5061;lr>";
    cr_assert_eq(slb_sip_edit_via_received(&ed, &msg, "192.0.2.7", 9, 1234), 0);
    cr_assert_eq(slb_sip_edit_max_forwards(&ed, &msg), 0);
    cr_assert_eq(slb_sip_edit_push_via(&ed, &msg, ours, strlen(ours)), 0);
    cr_assert_eq(slb_sip_edit_insert_header(&ed, &msg, SLB_HDR_RECORD_ROUTE, "Record-Route", rr,
                                            strlen(rr)),
                 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/TLS lb:5061;branch=z9hG4bKslb\r\n"
           "Record-Route: <sips:lb:5061;lr>\r\n"
           "Via: SIP/2.0/TLS c;branch=z9hG4bK1;rport=1234;received=192.0.2.7\r\n"
           "Max-Forwards: 69\r\n" TAIL);
}

Test(edit, pop_first_route_value)
{
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
          "Route: <sips:lb.example.com;lr;slb=1>, \"x,y\" <sips:p2.example.com;lr>\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_pop_list_value(&ed, &msg, (uint32_t)msg.first[SLB_HDR_ROUTE]), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
           "Route: \"x,y\" <sips:p2.example.com;lr>\r\n" TAIL);
    start("INVITE sips:b@example.com SIP/2.0\r\nRoute: <sips:lb.example.com;lr;slb=1>\r\n"
          "Via: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_pop_list_value(&ed, &msg, (uint32_t)msg.first[SLB_HDR_ROUTE]), 0);
    expect("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_pop_list_value(&ed, &msg, 999), -ENOENT);
}

Test(edit, list_helpers)
{
    struct slb_slice v = {"<sips:a;lr>, <sips:b>", 21};
    cr_assert_eq(slb_sip_list_next(v), 13);
    struct slb_slice u = slb_sip_first_uri(v);
    cr_assert_eq(u.len, 9);
    cr_assert_eq(memcmp(u.ptr, "sips:a;lr", 9), 0);
    struct slb_slice q = {"\"a, <b>\" <sips:c;x=\",\">", 24};
    cr_assert_eq(slb_sip_list_next(q), q.len);
    u = slb_sip_first_uri(q);
    cr_assert_eq(u.len, 12, "%zu", u.len);
    struct slb_slice plain = {"sips:d;lr , sips:e", 18};
    u = slb_sip_first_uri(plain);
    cr_assert_eq(u.len, 9);
    cr_assert_eq(slb_sip_first_uri((struct slb_slice){"", 0}).len, 0);
}

Test(edit, strict_route_takes_the_last_route_as_request_uri)
{
    start("INVITE sips:lb.example.com;lr;slb=1 SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
          "Route: <sips:p1.example.com;lr>, <sips:bob@10.0.0.9:5061>\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_strict_route(&ed, &msg), 0);
    expect("INVITE sips:bob@10.0.0.9:5061 SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n"
           "Route: <sips:p1.example.com;lr>\r\n" TAIL);
    start("INVITE sips:lb.example.com;slb=1 SIP/2.0\r\nRoute: <sips:bob@10.0.0.9>\r\n"
          "Via: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_strict_route(&ed, &msg), 0);
    expect("INVITE sips:bob@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    start("INVITE sips:b@example.com SIP/2.0\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK1\r\n" TAIL);
    cr_assert_eq(slb_sip_edit_strict_route(&ed, &msg), -ENOENT);
}
