/* PROXY protocol header parsing (see core/proxy_proto.h; the spec is HAProxy's
 * doc/proxy-protocol.txt, sections 2.1 and 2.2).
 *
 * Invariants: never reads outside buf[0, min(len, SLB_PROXY_HDR_MAX)); a result depends
 * only on the bytes read, and every prefix of a valid header returns 0, so growing the
 * buffer and calling again gives the same answer as one call on everything. Each check
 * runs as soon as the bytes it needs are present: a prefix returns 0 only while it can
 * still become a header we take (exactly so for v2; for v1 per character class and per
 * complete field). Pure; any thread. */
#include "core/proxy_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#define V2_SIG_LEN      12u
#define V2_FIXED_LEN    16u /* signature, ver/cmd, family/transport, length */
#define V2_TLV_HDR_LEN  3u  /* type, 16-bit length */
#define V1_ADDR4_MAX    15u /* "255.255.255.255" */
#define V1_ADDR6_MAX    45u /* INET6_ADDRSTRLEN - 1: a full IPv4-mapped form */
#define V1_PORT_MAX     5u  /* "65535" */
#define V1_UNKNOWN_FROM 13u /* strlen("PROXY UNKNOWN") */

/* 2.2: chosen to be rejected by the protocols a misconfigured peer may speak instead. */
static const uint8_t v2_sig[V2_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                           0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* 1 when p[0, n) is the whole of lit, 0 when it is a proper prefix of it, -1 otherwise. */
static int prefix_of(const uint8_t *p, size_t n, const char *lit)
{
    size_t lit_len = strlen(lit);
    if (memcmp(p, lit, min_size(n, lit_len)) != 0)
        return -1;
    return n >= lit_len ? 1 : 0;
}

static void set_inet(struct sockaddr_storage *ss, socklen_t *ss_len, int family,
                     const uint8_t *addr, const uint8_t *port_be)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, addr, 4);
        memcpy(&sin->sin_port, port_be, 2);
        *ss_len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, addr, 16);
        memcpy(&sin6->sin6_port, port_be, 2);
        *ss_len = sizeof(*sin6);
    }
}

/* The TLVs in p[at, end) as far as len bytes are present: each one's header and value
 * must end within end (a header straddling end is malformed whatever follows, so it is
 * refused before the bytes arrive). Values are skipped unread. Returns 1 when all of
 * p[0, end) is present and well formed, 0 when more is needed, or -EINVAL. At most
 * SLB_PROXY_HDR_MAX / 3 rounds. */
static int v2_tlvs(const uint8_t *p, size_t len, size_t at, size_t end)
{
    while (at < end) {
        if (end - at < V2_TLV_HDR_LEN)
            return -EINVAL;
        if (len < at + V2_TLV_HDR_LEN)
            return 0;
        size_t value_len = (size_t)p[at + 1] << 8 | p[at + 2];
        if (value_len > end - at - V2_TLV_HDR_LEN)
            return -EINVAL;
        at += V2_TLV_HDR_LEN + value_len;
    }
    return len >= end ? 1 : 0;
}

static int v2_parse(const uint8_t *p, size_t len, struct slb_proxy_hdr *h)
{
    if (memcmp(p, v2_sig, min_size(len, V2_SIG_LEN)) != 0)
        return -EINVAL;
    if (len <= V2_SIG_LEN)
        return 0;
    /* Version 2 only; commands LOCAL (0) and PROXY (1) only: receivers must drop others. */
    if (p[12] >> 4 != 2 || (p[12] & 0x0F) > 1)
        return -EINVAL;
    bool local = (p[12] & 0x0F) == 0;
    if (len <= 13)
        return 0;
    /* Families UNSPEC..UNIX, transports UNSPEC..DGRAM; other values must be rejected as
     * invalid even under LOCAL. */
    if (p[13] >> 4 > 3 || (p[13] & 0x0F) > 2)
        return -EINVAL;
    /* Valid but not ours: we relay SIP over TLS, so only TCP over IPv4 or IPv6. */
    if (!local && p[13] != 0x11 && p[13] != 0x21)
        return -EPROTONOSUPPORT;
    if (len < V2_FIXED_LEN)
        return 0;
    size_t total = V2_FIXED_LEN + ((size_t)p[14] << 8 | p[15]);
    if (total > SLB_PROXY_HDR_MAX)
        return -EINVAL;
    /* LOCAL: the receiver discards the whole block, family included (2.2), and senders
     * differ in what they put there, so it is skipped uninterpreted. */
    size_t addr_len = local ? total - V2_FIXED_LEN : p[13] == 0x11 ? 12 : 36;
    if (total < V2_FIXED_LEN + addr_len)
        return -EINVAL;
    int rc = v2_tlvs(p, len, V2_FIXED_LEN + addr_len, total);
    if (rc <= 0)
        return rc;
    memset(h, 0, sizeof(*h));
    h->local = local;
    h->header_len = (uint16_t)total;
    if (!local) {
        int family = p[13] == 0x11 ? AF_INET : AF_INET6;
        size_t a = addr_len == 12 ? 4 : 16;
        const uint8_t *ports = p + V2_FIXED_LEN + 2 * a;
        set_inet(&h->src, &h->src_len, family, p + V2_FIXED_LEN, ports);
        set_inet(&h->dst, &h->dst_len, family, p + V2_FIXED_LEN + a, ports + 2);
    }
    return (int)total;
}

/* 2.1: decimal 0..65535 without sign or leading zeros (they could be read as octal). */
static bool v1_port(const uint8_t *s, size_t n, uint8_t port_be[2])
{
    if (n == 0 || n > V1_PORT_MAX || (s[0] == '0' && n > 1))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (uint32_t)(s[i] - '0'); /* digits only: checked while scanning */
    if (v > 65535)
        return false;
    port_be[0] = (uint8_t)(v >> 8);
    port_be[1] = (uint8_t)v;
    return true;
}

static bool v1_field_char(int family, bool is_addr, uint8_t c)
{
    if (c >= '0' && c <= '9')
        return true;
    if (!is_addr)
        return false;
    if (c == '.')
        return true; /* IPv4, or the tail of an IPv4-mapped IPv6 address */
    return family == AF_INET6 && (c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
}

/* "src dst sport dport\r\n" from p[at] for TCP4 or TCP6, n = min(len, V1 max) bytes. Each
 * field is checked per character while it grows and whole once its terminator arrives. */
static int v1_inet(const uint8_t *p, size_t n, size_t at, int family, struct slb_proxy_hdr *h)
{
    uint8_t addr[2][16], port_be[2][2];
    for (unsigned f = 0; f < 4; f++) {
        bool is_addr = f < 2;
        size_t max = !is_addr ? V1_PORT_MAX : family == AF_INET ? V1_ADDR4_MAX : V1_ADDR6_MAX;
        uint8_t term = f < 3 ? ' ' : '\r';
        size_t start = at;
        for (; at < n && p[at] != term; at++)
            if (at - start == max || !v1_field_char(family, is_addr, p[at]))
                return -EINVAL;
        if (at == n)
            return n == SLB_PROXY_HDR_V1_MAX ? -EINVAL : 0;
        size_t flen = at - start;
        if (is_addr) {
            char text[V1_ADDR6_MAX + 1];
            memcpy(text, p + start, flen);
            text[flen] = '\0';
            if (flen == 0 || inet_pton(family, text, addr[f]) != 1)
                return -EINVAL;
        } else if (!v1_port(p + start, flen, port_be[f - 2])) {
            return -EINVAL;
        }
        at++;
    }
    if (at == n)
        return n == SLB_PROXY_HDR_V1_MAX ? -EINVAL : 0;
    if (p[at] != '\n') /* 2.1: a lone CR must not end the line */
        return -EINVAL;
    at++;
    memset(h, 0, sizeof(*h));
    set_inet(&h->src, &h->src_len, family, addr[0], port_be[0]);
    set_inet(&h->dst, &h->dst_len, family, addr[1], port_be[1]);
    h->header_len = (uint16_t)at;
    return (int)at;
}

/* "UNKNOWN" then CRLF, or a space and anything up to CRLF, which the receiver must
 * ignore (2.1). We still take only printable US-ASCII there: the spec's line is US-ASCII,
 * and no sender puts control bytes in it. */
static int v1_unknown(const uint8_t *p, size_t n, struct slb_proxy_hdr *h)
{
    size_t at = V1_UNKNOWN_FROM;
    for (; at < n && p[at] != '\r'; at++)
        if ((at == V1_UNKNOWN_FROM && p[at] != ' ') || p[at] < 0x20 || p[at] > 0x7E)
            return -EINVAL;
    if (at + 1 >= n)
        return n == SLB_PROXY_HDR_V1_MAX ? -EINVAL : 0;
    if (p[at + 1] != '\n')
        return -EINVAL;
    memset(h, 0, sizeof(*h));
    h->local = true;
    h->header_len = (uint16_t)(at + 2);
    return (int)(at + 2);
}

static int v1_parse(const uint8_t *p, size_t len, struct slb_proxy_hdr *h)
{
    /* The CRLF must come within the first 107 bytes, so nothing past them matters. */
    size_t n = min_size(len, SLB_PROXY_HDR_V1_MAX);
    int rc = prefix_of(p, n, "PROXY ");
    if (rc <= 0)
        return rc < 0 ? -EINVAL : 0;
    const uint8_t *proto = p + 6;
    size_t proto_n = n - 6;
    int tcp4 = prefix_of(proto, proto_n, "TCP4 ");
    int tcp6 = prefix_of(proto, proto_n, "TCP6 ");
    int unknown = prefix_of(proto, proto_n, "UNKNOWN");
    if (tcp4 == 1)
        return v1_inet(p, n, 11, AF_INET, h);
    if (tcp6 == 1)
        return v1_inet(p, n, 11, AF_INET6, h);
    if (unknown == 1)
        return v1_unknown(p, n, h);
    /* n == 107 always reaches a full protocol token or a mismatch. */
    return tcp4 == 0 || tcp6 == 0 || unknown == 0 ? 0 : -EINVAL;
}

int slb_proxy_hdr_parse(const void *buf, size_t len, struct slb_proxy_hdr *h)
{
    const uint8_t *p = buf;
    if (len == 0)
        return 0;
    /* The first byte tells the versions apart and refuses most else at once: a client
     * that speaks TLS to us directly starts with 0x16. */
    if (p[0] == v2_sig[0])
        return v2_parse(p, len, h);
    if (p[0] == 'P')
        return v1_parse(p, len, h);
    return -EINVAL;
}
