/* Branch tokens: round trip, MAC rejection, and the transaction hash's sameness rules. */
#include <criterion/criterion.h>
#include <string.h>

#include "balancer/token.h"
#include "core/sip.h"

static const struct slb_siphash_key key = {0x0123456789abcdefull, 0xfedcba9876543210ull};

Test(token, branch_round_trip_and_tamper)
{
    char b[SLB_BRANCH_LEN];
    slb_branch_make(b, &key, 0x01000005deadbeefull, 0x12345678u, 0x9abcdef0u);
    cr_assert_eq(memcmp(b, "z9hG4bK", 7), 0);
    uint64_t conn;
    uint32_t tx;
    struct slb_slice s = {b, sizeof(b)};
    uint32_t loop;
    cr_assert(slb_branch_parse(s, &key, &conn, &tx, &loop));
    cr_assert_eq(loop, 0x9abcdef0u);
    cr_assert_eq(conn, 0x01000005deadbeefull);
    cr_assert_eq(tx, 0x12345678u);
    /* Any changed character, another key, or another length is refused. */
    for (size_t i = SLB_BRANCH_PREFIX_LEN; i < sizeof(b); i++) {
        char t[SLB_BRANCH_LEN];
        memcpy(t, b, sizeof(b));
        t[i] = t[i] == '0' ? '1' : '0';
        cr_assert_not(slb_branch_parse((struct slb_slice){t, sizeof(t)}, &key, &conn, &tx, NULL),
                      "tampered at %zu", i);
    }
    struct slb_siphash_key other = {1, 2};
    cr_assert_not(slb_branch_parse(s, &other, &conn, &tx, NULL));
    cr_assert_not(slb_branch_parse((struct slb_slice){b, sizeof(b) - 1}, &key, &conn, &tx, NULL));
    cr_assert_not(slb_branch_parse((struct slb_slice){"z9hG4bK776asdhds", 16}, &key, &conn, &tx, NULL));
}

static uint32_t tx_of(const char *text)
{
    static struct slb_sip_msg msg;
    static struct slb_sip_header h[64];
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    cr_assert_eq(slb_sip_scan(text, strlen(text), &lim, &msg, h, 64), 0);
    return slb_tx_hash(&key, &msg);
}

#define VIA "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc1\r\n"
#define TAIL "From: <sips:a@example.com>;tag=f1\r\nCall-ID: tx@x\r\n"

Test(token, same_transaction_same_hash)
{
    uint32_t invite = tx_of("INVITE sips:b@example.com SIP/2.0\r\n" VIA TAIL
                            "To: <sips:b@example.com>\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n");
    uint32_t cancel = tx_of("CANCEL sips:b@example.com SIP/2.0\r\n" VIA TAIL
                            "To: <sips:b@example.com>\r\nCSeq: 5 CANCEL\r\nContent-Length: 0\r\n\r\n");
    uint32_t ack = tx_of("ACK sips:b@example.com SIP/2.0\r\n" VIA TAIL
                         "To: <sips:b@example.com>;tag=t9\r\nCSeq: 5 ACK\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(invite, cancel);
    cr_assert_eq(invite, ack); /* ACK for a non-2xx: same branch as its INVITE */
    uint32_t bye = tx_of("BYE sips:b@example.com SIP/2.0\r\n"
                         "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bKc2\r\n" TAIL
                         "To: <sips:b@example.com>;tag=t9\r\nCSeq: 6 BYE\r\nContent-Length: 0\r\n\r\n");
    cr_assert_neq(invite, bye);
}

Test(token, flow_token_round_trip_and_tamper)
{
    char t[SLB_FLOW_TOKEN_LEN];
    slb_flow_token_make(t, &key, 0x0100002a00000007ull, 0xdeadbeef, SLB_FLOW_PLAIN);
    unsigned flags = 0;
    uint64_t id;
    uint32_t boot = 0;
    cr_assert(slb_flow_token_parse((struct slb_slice){t, sizeof(t)}, &key, &id, &boot, &flags));
    cr_assert_eq(id, 0x0100002a00000007ull);
    cr_assert_eq(boot, 0xdeadbeef);
    cr_assert_eq(flags, SLB_FLOW_PLAIN);
    for (size_t i = 0; i < sizeof(t); i++) {
        char u[SLB_FLOW_TOKEN_LEN];
        memcpy(u, t, sizeof(t));
        u[i] = u[i] == 'a' ? 'b' : 'a';
        cr_assert_not(slb_flow_token_parse((struct slb_slice){u, sizeof(u)}, &key, &id, NULL, NULL), "%zu", i);
    }
    /* A backend token is not a flow token, and the other way round. */
    char b[SLB_BACKEND_TOKEN_LEN];
    slb_backend_token_make(b, &key, 7);
    uint32_t backend;
    cr_assert_not(slb_flow_token_parse((struct slb_slice){b, sizeof(b)}, &key, &id, NULL, NULL));
    cr_assert_not(slb_backend_token_parse((struct slb_slice){t, 24}, &key, &backend));
}

/* The send time in our Via (slbt): stamped and read back under the MAC, bound to its branch. */
Test(token, sent_time_round_trips_under_its_mac)
{
    char branch[SLB_BRANCH_LEN];
    slb_branch_make(branch, &key, 0x1234, 7, 9);
    struct slb_slice b = {branch, SLB_BRANCH_LEN};
    char v[SLB_SENT_VALUE_LEN];
    uint64_t t = (UINT64_C(1) << 41) + 123456789; /* beyond 40 bits: kept modulo 2^40 */
    slb_sent_make(v, &key, b, t);
    uint64_t got = 0;
    cr_assert(slb_sent_parse((struct slb_slice){v, sizeof(v)}, &key, b, &got));
    cr_assert_eq(got, t & SLB_SENT_MASK);
    char forged[SLB_SENT_VALUE_LEN];
    memcpy(forged, v, sizeof(v));
    forged[9] = forged[9] == '0' ? '1' : '0'; /* another time, same MAC */
    cr_assert_not(slb_sent_parse((struct slb_slice){forged, sizeof(forged)}, &key, b, &got));
    char other[SLB_BRANCH_LEN];
    slb_branch_make(other, &key, 0x1235, 7, 9);
    cr_assert_not(slb_sent_parse((struct slb_slice){v, sizeof(v)}, &key,
                                 (struct slb_slice){other, SLB_BRANCH_LEN}, &got));
    cr_assert_not(slb_sent_parse((struct slb_slice){v, 5}, &key, b, &got));
}
