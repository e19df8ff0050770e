/* libFuzzer target: the PROXY protocol header parser (core/proxy_proto) on arbitrary
 * connection starts. Seeds: tests/fuzz/seeds/proxy_hdr.
 *
 * Oracle:
 * - the result is a length, 0, -EINVAL or -EPROTONOSUPPORT; *h is written only on a
 *   length, which is within the input, within SLB_PROXY_HDR_MAX (107 for v1) and equal to
 *   h->header_len;
 * - a header that is not local names two addresses of one family, AF_INET or AF_INET6,
 *   with that family's length; and they are the header's own: for v2 the address block's
 *   bytes, for v1 TCP4 the exact text (strict dotted quads and ports have one spelling);
 * - growing the input only decides: over its prefixes the results are 0 up to some
 *   length, then one value for every longer prefix (the same *h when it is a length), so
 *   a caller that calls again as bytes arrive gets the answer a single call would give;
 * - SLB_PROXY_HDR_MAX bytes always decide, and bytes past them are never read (checked
 *   with an exact-size copy, so ASan sees an over-read). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int parse(const uint8_t *data, size_t size, struct slb_proxy_hdr *h)
{
    struct slb_proxy_hdr before;
    memset(h, 0xA5, sizeof(*h));
    memcpy(&before, h, sizeof(before));
    int rc = slb_proxy_hdr_parse(data, size, h);
    if (rc > 0) {
        if ((size_t)rc > size || (size_t)rc > SLB_PROXY_HDR_MAX || h->header_len != rc)
            abort();
        if (data[0] == 'P' && (size_t)rc > SLB_PROXY_HDR_V1_MAX)
            abort();
    } else if (rc != 0 && rc != -EINVAL && rc != -EPROTONOSUPPORT) {
        abort();
    } else if (memcmp(&before, h, sizeof(before)) != 0) {
        abort(); /* written without success */
    }
    return rc;
}

static const uint8_t *in_addr_bytes(const struct sockaddr_storage *ss, uint16_t *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        *port = ntohs(sin->sin_port);
        return (const uint8_t *)&sin->sin_addr;
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    *port = ntohs(sin6->sin6_port);
    return (const uint8_t *)&sin6->sin6_addr;
}

/* The addresses of a header that is not local are its own. */
static void check_addresses(const uint8_t *data, int rc, const struct slb_proxy_hdr *h)
{
    int family = h->src.ss_family;
    socklen_t want = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if ((family != AF_INET && family != AF_INET6) || h->dst.ss_family != family ||
        h->src_len != want || h->dst_len != want)
        abort();
    uint16_t sport, dport;
    const uint8_t *src = in_addr_bytes(&h->src, &sport);
    const uint8_t *dst = in_addr_bytes(&h->dst, &dport);
    size_t a = family == AF_INET ? 4 : 16;
    if (data[0] != 'P') {
        const uint8_t *block = data + 16;
        if (memcmp(src, block, a) != 0 || memcmp(dst, block + a, a) != 0 ||
            sport != (block[2 * a] << 8 | block[2 * a + 1]) ||
            dport != (block[2 * a + 2] << 8 | block[2 * a + 3]))
            abort();
        return;
    }
    if (family != AF_INET)
        return; /* IPv6 text has many spellings */
    char s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN], line[SLB_PROXY_HDR_V1_MAX + 1];
    if (!inet_ntop(AF_INET, src, s, sizeof(s)) || !inet_ntop(AF_INET, dst, d, sizeof(d)))
        abort();
    int n = snprintf(line, sizeof(line), "PROXY TCP4 %s %s %u %u\r\n", s, d, sport, dport);
    if (n != rc || memcmp(line, data, (size_t)rc) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct slb_proxy_hdr h, ph;
    int rc = parse(data, size, &h);
    if (rc == 0 && size >= SLB_PROXY_HDR_MAX)
        abort();
    if (rc > 0 && !h.local)
        check_addresses(data, rc, &h);

    size_t max = size < SLB_PROXY_HDR_MAX ? size : SLB_PROXY_HDR_MAX;
    bool decided = false;
    for (size_t k = 0; k <= max; k++) {
        int prc = parse(data, k, &ph);
        if (!decided && prc == 0)
            continue;
        decided = true;
        if (prc != rc || (rc > 0 && memcmp(&ph, &h, sizeof(h)) != 0))
            abort();
    }

    /* Exactly the bytes that must decide, in a buffer of their size. */
    uint8_t *copy = malloc(max ? max : 1);
    if (!copy)
        return 0;
    if (max)
        memcpy(copy, data, max);
    int crc = parse(copy, max, &ph);
    free(copy);
    if (crc != rc || (rc > 0 && memcmp(&ph, &h, sizeof(h)) != 0))
        abort();
    return 0;
}
