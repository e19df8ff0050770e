/* The PROXY protocol header parser: v2 and v1 headers we take and the addresses they
 * carry, need-more on every prefix, and refusal as early as the bytes allow. Input sits
 * against a PROT_NONE page so an over-read faults. */
#include "core/proxy_proto.h"
#include "tests/support/guard.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

/* The input right before a PROT_NONE page (tests/support/guard): any over-read faults.
 * Valid until the next call. */
static const uint8_t *guarded(const void *src, size_t n)
{
    return (const uint8_t *)guard_place(src, n);
}

/* Parses buf[0, n) from the guarded copy; checks *h is untouched unless it succeeded. */
static int parse(const void *buf, size_t n, struct slb_proxy_hdr *h)
{
    struct slb_proxy_hdr before;
    memset(h, 0xA5, sizeof(*h));
    memcpy(&before, h, sizeof(before));
    int rc = slb_proxy_hdr_parse(guarded(buf, n), n, h);
    if (rc <= 0)
        cr_assert_eq(memcmp(&before, h, sizeof(before)), 0, "*h written though rc %d", rc);
    else
        cr_assert_eq(h->header_len, (unsigned)rc);
    return rc;
}

static int parse_str(const char *s, struct slb_proxy_hdr *h)
{
    return parse(s, strlen(s), h);
}

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header: signature, ver_cmd, fam, the block's length, then the block. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *block, size_t block_len)
{
    memcpy(out, sig, sizeof(sig));
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(block_len >> 8);
    out[15] = (uint8_t)block_len;
    if (block_len)
        memcpy(out + 16, block, block_len);
    return 16 + block_len;
}

/* 192.0.2.1:56324 -> 198.51.100.7:5061, then extra (TLVs). */
static size_t v2_tcp4(uint8_t *out, const void *extra, size_t extra_len)
{
    uint8_t block[12 + 64] = {192, 0, 2, 1, 198, 51, 100, 7, 0xDC, 0x04, 0x13, 0xC5};
    cr_assert_leq(extra_len, 64);
    if (extra_len)
        memcpy(block + 12, extra, extra_len);
    return v2(out, 0x21, 0x11, block, 12 + extra_len);
}

/* [2001:db8::1]:40000 -> [2001:db8::2]:5061, then extra (TLVs). */
static size_t v2_tcp6(uint8_t *out, const void *extra, size_t extra_len)
{
    uint8_t block[36 + 64] = {0};
    cr_assert_eq(inet_pton(AF_INET6, "2001:db8::1", block), 1);
    cr_assert_eq(inet_pton(AF_INET6, "2001:db8::2", block + 16), 1);
    block[32] = 0x9C, block[33] = 0x40, block[34] = 0x13, block[35] = 0xC5;
    cr_assert_leq(extra_len, 64);
    if (extra_len)
        memcpy(block + 36, extra, extra_len);
    return v2(out, 0x21, 0x21, block, 36 + extra_len);
}

static void assert_in4(const struct sockaddr_storage *ss, socklen_t len, const char *addr,
                       uint16_t port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    struct in_addr want;
    cr_assert_eq(inet_pton(AF_INET, addr, &want), 1);
    cr_assert_eq(len, sizeof(struct sockaddr_in));
    cr_assert_eq(sin->sin_family, AF_INET);
    cr_assert_eq(sin->sin_addr.s_addr, want.s_addr, "address is not %s", addr);
    cr_assert_eq(ntohs(sin->sin_port), port);
}

static void assert_in6(const struct sockaddr_storage *ss, socklen_t len, const char *addr,
                       uint16_t port)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    struct in6_addr want;
    cr_assert_eq(inet_pton(AF_INET6, addr, &want), 1);
    cr_assert_eq(len, sizeof(struct sockaddr_in6));
    cr_assert_eq(sin6->sin6_family, AF_INET6);
    cr_assert_eq(memcmp(&sin6->sin6_addr, &want, sizeof(want)), 0, "address is not %s", addr);
    cr_assert_eq(ntohs(sin6->sin6_port), port);
    cr_assert_eq(sin6->sin6_scope_id, 0);
    cr_assert_eq(sin6->sin6_flowinfo, 0);
}

/* Every proper prefix of a valid header needs more, the whole parses to its length, and
 * bytes behind it (a TLS ClientHello's first ones) are neither consumed nor looked at. */
static void assert_valid_everywhere(const void *hdr, size_t n)
{
    struct slb_proxy_hdr h, whole;
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(parse(hdr, k, &h), 0, "prefix of %zu of %zu bytes: not need-more", k, n);
    cr_assert_eq(parse(hdr, n, &whole), (int)n);
    uint8_t more[SLB_PROXY_HDR_MAX + 8];
    cr_assert_leq(n, SLB_PROXY_HDR_MAX);
    memcpy(more, hdr, n);
    memcpy(more + n, "\x16\x03\x01\x02\x00\x01\x00\x01", 8);
    cr_assert_eq(parse(more, n + 8, &h), (int)n);
    cr_assert_eq(memcmp(&h, &whole, sizeof(h)), 0, "trailing bytes changed the result");
}

/* Each prefix of bad returns 0 until it is refused with err, and err ever after. */
static void assert_refused_at(const void *bad, size_t n, int err, size_t at)
{
    struct slb_proxy_hdr h;
    for (size_t k = 0; k <= n; k++) {
        int want = k < at ? 0 : err;
        cr_assert_eq(parse(bad, k, &h), want, "prefix of %zu: want %d", k, want);
    }
}

/* The prefix length at which bad is first refused (n + 1 when it never is). */
static size_t refused_from(const void *bad, size_t n)
{
    struct slb_proxy_hdr h;
    for (size_t k = 0; k <= n; k++)
        if (parse(bad, k, &h) != 0)
            return k;
    return n + 1;
}

Test(proxy_proto, v2_tcp4_proxy_gives_client_and_destination)
{
    uint8_t buf[128];
    size_t n = v2_tcp4(buf, NULL, 0);
    struct slb_proxy_hdr h;
    cr_assert_eq(parse(buf, n, &h), 28);
    cr_assert_eq(h.header_len, 28);
    cr_assert_not(h.local);
    assert_in4(&h.src, h.src_len, "192.0.2.1", 56324);
    assert_in4(&h.dst, h.dst_len, "198.51.100.7", 5061);
    assert_valid_everywhere(buf, n);
}

Test(proxy_proto, v2_tcp4_proxy_skips_its_tlvs)
{
    /* ALPN "sip", an empty NOOP, a custom type. */
    static const char tlvs[] = "\x01\x00\x03sip\x04\x00\x00\xE0\x00\x02\xFF\x00";
    uint8_t buf[128];
    size_t n = v2_tcp4(buf, tlvs, sizeof(tlvs) - 1);
    struct slb_proxy_hdr h;
    cr_assert_eq(parse(buf, n, &h), 28 + (int)sizeof(tlvs) - 1);
    assert_in4(&h.src, h.src_len, "192.0.2.1", 56324);
    assert_in4(&h.dst, h.dst_len, "198.51.100.7", 5061);
    assert_valid_everywhere(buf, n);
}

Test(proxy_proto, v2_tcp6_proxy_gives_client_and_destination)
{
    uint8_t buf[128];
    size_t n = v2_tcp6(buf, NULL, 0);
    struct slb_proxy_hdr h;
    cr_assert_eq(parse(buf, n, &h), 52);
    cr_assert_not(h.local);
    assert_in6(&h.src, h.src_len, "2001:db8::1", 40000);
    assert_in6(&h.dst, h.dst_len, "2001:db8::2", 5061);
    assert_valid_everywhere(buf, n);
}

Test(proxy_proto, v2_tcp6_proxy_skips_its_tlvs)
{
    /* AUTHORITY "sip.example", then a CRC32C (its value is not checked). */
    static const char tlvs[] = "\x02\x00\x0Bsip.example\x03\x00\x04\x01\x02\x03\x04";
    uint8_t buf[128];
    size_t n = v2_tcp6(buf, tlvs, sizeof(tlvs) - 1);
    struct slb_proxy_hdr h;
    cr_assert_eq(parse(buf, n, &h), 52 + (int)sizeof(tlvs) - 1);
    assert_in6(&h.src, h.src_len, "2001:db8::1", 40000);
    assert_valid_everywhere(buf, n);
}

Test(proxy_proto, v2_local_keeps_the_connections_own_addresses)
{
    uint8_t buf[128];
    struct slb_proxy_hdr h;
    size_t n = v2(buf, 0x20, 0x00, NULL, 0);
    cr_assert_eq(parse(buf, n, &h), 16);
    cr_assert(h.local);
    assert_valid_everywhere(buf, n);
    /* A health check that names its own endpoints: the block is discarded unread. */
    static const uint8_t block[12] = {127, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39, 0x13, 0xC5};
    n = v2(buf, 0x20, 0x11, block, sizeof(block));
    cr_assert_eq(parse(buf, n, &h), 28);
    cr_assert(h.local);
    assert_valid_everywhere(buf, n);
    /* The spec allows any family under LOCAL, UNIX included, and any length. */
    n = v2(buf, 0x20, 0x31, "\x01\x02", 2);
    cr_assert_eq(parse(buf, n, &h), 18);
    cr_assert(h.local);
}

Test(proxy_proto, v2_bad_signature_is_refused_at_the_byte_that_differs)
{
    uint8_t buf[128];
    size_t n = v2_tcp4(buf, NULL, 0);
    for (size_t i = 0; i < 12; i++) {
        uint8_t bad[128];
        memcpy(bad, buf, n);
        bad[i] ^= 0x40;
        assert_refused_at(bad, n, -EINVAL, i + 1);
    }
}

Test(proxy_proto, v2_other_versions_and_commands_are_refused_at_byte_13)
{
    static const uint8_t ver_cmds[] = {0x11, 0x01, 0x31, 0xF1, 0x22, 0x2F, 0x12};
    for (size_t i = 0; i < sizeof(ver_cmds); i++) {
        uint8_t buf[128];
        size_t n = v2_tcp4(buf, NULL, 0);
        buf[12] = ver_cmds[i];
        assert_refused_at(buf, n, -EINVAL, 13);
    }
}

Test(proxy_proto, v2_udp_unix_and_unspec_proxy_are_not_supported)
{
    static const uint8_t fams[] = {0x12, 0x22, 0x31, 0x32, 0x00, 0x10, 0x01};
    for (size_t i = 0; i < sizeof(fams); i++) {
        uint8_t buf[300], block[216] = {0};
        size_t n = v2(buf, 0x21, fams[i], block, fams[i] >> 4 == 3 ? 216 : 36);
        assert_refused_at(buf, n, -EPROTONOSUPPORT, 14);
    }
}

Test(proxy_proto, v2_undefined_families_and_transports_are_malformed)
{
    static const uint8_t fams[] = {0x41, 0xF1, 0x13, 0x1F};
    for (size_t i = 0; i < sizeof(fams); i++) {
        uint8_t buf[128], block[36] = {0};
        size_t n = v2(buf, 0x21, fams[i], block, sizeof(block));
        assert_refused_at(buf, n, -EINVAL, 14);
        buf[12] = 0x20; /* even under LOCAL */
        assert_refused_at(buf, n, -EINVAL, 14);
    }
}

Test(proxy_proto, v2_block_shorter_than_the_addresses_is_malformed)
{
    uint8_t buf[128], block[36] = {0};
    size_t n = v2(buf, 0x21, 0x11, block, 11);
    assert_refused_at(buf, n, -EINVAL, 16);
    n = v2(buf, 0x21, 0x21, block, 12);
    assert_refused_at(buf, n, -EINVAL, 16);
}

Test(proxy_proto, v2_tlv_overrunning_the_declared_length_is_refused_once_its_header_is_in)
{
    /* ALPN claiming 10 bytes where the block leaves 5 after the addresses. */
    static const uint8_t tlv[] = {0x01, 0x00, 0x0A, 'a', 'b'};
    uint8_t buf[128];
    size_t n = v2_tcp4(buf, tlv, sizeof(tlv));
    assert_refused_at(buf, n, -EINVAL, 28 + 3);
    /* A good TLV, then one whose header does not fit: malformed whatever comes next. */
    static const uint8_t stub[] = {0x04, 0x00, 0x00, 0x01, 0x00};
    n = v2_tcp4(buf, stub, sizeof(stub));
    assert_refused_at(buf, n, -EINVAL, 28 + 3);
    /* One byte past the end. */
    static const uint8_t over[] = {0x04, 0x00, 0x02, 0xAA};
    n = v2_tcp4(buf, over, sizeof(over));
    assert_refused_at(buf, n, -EINVAL, 28 + 3);
}

Test(proxy_proto, v2_declared_length_over_the_bound_is_refused_from_the_length_field)
{
    uint8_t buf[SLB_PROXY_HDR_MAX + 8] = {0};
    /* Total 536: the largest we take, padded with one NOOP TLV. */
    size_t n = v2_tcp4(buf, NULL, 0);
    size_t pad = SLB_PROXY_HDR_MAX - n - 3;
    buf[28] = 0x04, buf[29] = (uint8_t)(pad >> 8), buf[30] = (uint8_t)pad;
    buf[14] = (uint8_t)((SLB_PROXY_HDR_MAX - 16) >> 8);
    buf[15] = (uint8_t)(SLB_PROXY_HDR_MAX - 16);
    struct slb_proxy_hdr h;
    cr_assert_eq(parse(buf, SLB_PROXY_HDR_MAX, &h), (int)SLB_PROXY_HDR_MAX);
    assert_valid_everywhere(buf, SLB_PROXY_HDR_MAX);
    /* One more byte declared (and sent): refused as soon as the length is known. */
    buf[15]++;
    buf[30]++;
    assert_refused_at(buf, SLB_PROXY_HDR_MAX + 1, -EINVAL, 16);
    buf[14] = buf[15] = 0xFF;
    cr_assert_eq(parse(buf, 16, &h), -EINVAL);
}

Test(proxy_proto, tls_or_sip_instead_of_a_header_is_refused_at_once)
{
    struct slb_proxy_hdr h;
    static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC};
    cr_assert_eq(parse(hello, 1, &h), -EINVAL);
    cr_assert_eq(parse(hello, sizeof(hello), &h), -EINVAL);
    cr_assert_eq(parse_str("I", &h), -EINVAL);
    cr_assert_eq(parse_str("INVITE sip:a@b SIP/2.0\r\n", &h), -EINVAL);
    cr_assert_eq(parse_str("\n", &h), -EINVAL);
    cr_assert_eq(parse_str("PU", &h), -EINVAL, "PUBLISH is refused at its second byte");
    cr_assert_eq(parse("", 0, &h), 0, "nothing yet: need more");
}

Test(proxy_proto, v1_tcp4)
{
    const char *line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    struct slb_proxy_hdr h;
    cr_assert_eq(parse_str(line, &h), (int)strlen(line));
    cr_assert_not(h.local);
    assert_in4(&h.src, h.src_len, "192.168.0.1", 56324);
    assert_in4(&h.dst, h.dst_len, "192.168.0.11", 443);
    assert_valid_everywhere(line, strlen(line));
    line = "PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n";
    cr_assert_eq(parse_str(line, &h), (int)strlen(line));
    assert_in4(&h.src, h.src_len, "255.255.255.255", 65535);
    assert_in4(&h.dst, h.dst_len, "0.0.0.0", 0);
}

Test(proxy_proto, v1_tcp6)
{
    const char *line = "PROXY TCP6 2001:db8::1 2001:DB8::2 5060 5061\r\n";
    struct slb_proxy_hdr h;
    cr_assert_eq(parse_str(line, &h), (int)strlen(line));
    cr_assert_not(h.local);
    assert_in6(&h.src, h.src_len, "2001:db8::1", 5060);
    assert_in6(&h.dst, h.dst_len, "2001:db8::2", 5061);
    assert_valid_everywhere(line, strlen(line));
    /* The longest TCP6 line (104 bytes), and an IPv4-mapped address. */
    line = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    cr_assert_eq(strlen(line), 104);
    cr_assert_eq(parse_str(line, &h), 104);
    assert_valid_everywhere(line, strlen(line));
    line = "PROXY TCP6 ::ffff:192.0.2.1 :: 1 2\r\n";
    cr_assert_eq(parse_str(line, &h), (int)strlen(line));
    assert_in6(&h.src, h.src_len, "::ffff:192.0.2.1", 1);
    assert_in6(&h.dst, h.dst_len, "::", 2);
}

Test(proxy_proto, v1_unknown_keeps_the_connections_own_addresses)
{
    struct slb_proxy_hdr h;
    cr_assert_eq(parse_str("PROXY UNKNOWN\r\n", &h), 15);
    cr_assert(h.local);
    assert_valid_everywhere("PROXY UNKNOWN\r\n", 15);
    /* The worst case: 107 bytes, whatever follows UNKNOWN ignored. */
    const char *line = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    cr_assert_eq(strlen(line), SLB_PROXY_HDR_V1_MAX);
    cr_assert_eq(parse_str(line, &h), (int)SLB_PROXY_HDR_V1_MAX);
    cr_assert(h.local);
    assert_valid_everywhere(line, strlen(line));
    cr_assert_eq(parse_str("PROXY UNKNOWN whatever it says\r\n", &h), 32);
}

Test(proxy_proto, v1_without_crlf_in_107_bytes_is_refused)
{
    char line[200];
    memset(line, 'f', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    assert_refused_at(line, sizeof(line), -EINVAL, SLB_PROXY_HDR_V1_MAX);
    /* A CR as the 107th byte leaves no room for its LF. */
    line[106] = '\r';
    line[107] = '\n';
    assert_refused_at(line, sizeof(line), -EINVAL, SLB_PROXY_HDR_V1_MAX);
    /* A TCP6 line that grows past 107 in its fields. */
    const char *tcp6 = "PROXY TCP6 0000:0000:0000:0000:0000:ffff:192.168.100.200 "
                       "0000:0000:0000:0000:0000:ffff:192.168.100.200 1 2\r\n";
    cr_assert_eq(refused_from(tcp6, strlen(tcp6)), SLB_PROXY_HDR_V1_MAX);
}

Test(proxy_proto, v1_lines_off_the_grammar_are_refused)
{
    static const char *const bad[] = {
        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",     /* two spaces */
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",     /* empty field */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",     /* trailing space */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",    /* extra field */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",        /* missing port */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",        /* LF alone */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",       /* CR alone */
        "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",     /* tab */
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",      /* case */
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",      /* protocol */
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",      /* protocol */
        "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",      /* case */
        "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",    /* octet */
        "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",     /* leading zero */
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",        /* three octets */
        "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",    /* five octets */
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",          /* IPv6 in TCP4 */
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",          /* IPv4 in TCP6 */
        "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",     /* scope */
        "PROXY TCP6 1::2::3 ::1 1 2\r\n",          /* two :: */
        "PROXY TCP6 12345::1 ::1 1 2\r\n",         /* five hex digits */
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  /* port range */
        "PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",  /* port range */
        "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", /* six digits */
        "PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n",    /* sign */
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",     /* sign */
        "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",    /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n",     /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 0x2\r\n",    /* hex */
        "PROXY UNKNOWNX\r\n",                      /* token runs on */
        "PROXY UNKNOWN\n",                         /* LF alone */
        "PROXY UNKNOWN \x01\r\n",                  /* control byte */
        "PROXY UNKNOWN \r\r\n",                    /* CR alone */
        "PROXY \r\n",                              /* no protocol */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = strlen(bad[i]);
        size_t at = refused_from(bad[i], n);
        cr_assert_leq(at, n, "accepted or pending: %s", bad[i]);
        assert_refused_at(bad[i], n, -EINVAL, at);
    }
}

Test(proxy_proto, v1_is_refused_at_the_first_byte_that_breaks_the_grammar)
{
    static const struct {
        const char *line;
        size_t at;
    } cases[] = {
        {"PROXY TCP4 1.2.3.4x5.6.7.8 1 2\r\n", 19},  /* a letter in an IPv4 address */
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n", 29}, /* a letter in a port */
        {"PROXY TCP4 1234567890123456 ", 27},        /* address longer than 15 */
        {"PROXY TCP4 1.2.3.4 5.6.7.8 123456", 33},   /* port longer than 5 */
        {"PROXY TCP4 300.1.1.1 ", 21},               /* at the address's end */
        {"PROXY TCP6 ::g", 14},                      /* not hex */
        {"PROXY TCX", 9},
        {"PROXY UNKNOWNz", 14},
        {"PROXX", 5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_refused_at(cases[i].line, strlen(cases[i].line), -EINVAL, cases[i].at);
}

Test(proxy_proto, v1_ports_at_the_ends_of_the_range_are_taken)
{
    struct slb_proxy_hdr h;
    const char *line = "PROXY TCP4 10.0.0.1 10.0.0.2 0 65535\r\n";
    cr_assert_eq(parse_str(line, &h), (int)strlen(line));
    assert_in4(&h.src, h.src_len, "10.0.0.1", 0);
    assert_in4(&h.dst, h.dst_len, "10.0.0.2", 65535);
}

Test(proxy_proto, a_header_followed_by_more_than_the_bound_parses_the_same)
{
    uint8_t buf[SLB_PROXY_HDR_MAX * 2];
    memset(buf, 0x16, sizeof(buf));
    size_t n = v2_tcp6(buf, NULL, 0);
    struct slb_proxy_hdr h;
    cr_assert_eq(parse(buf, sizeof(buf), &h), (int)n);
    assert_in6(&h.dst, h.dst_len, "2001:db8::2", 5061);
    const char *line = "PROXY TCP4 192.0.2.1 192.0.2.2 5061 5061\r\n";
    memset(buf, 'x', sizeof(buf));
    memcpy(buf, line, strlen(line));
    cr_assert_eq(parse(buf, sizeof(buf), &h), (int)strlen(line));
}
