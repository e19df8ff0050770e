/* libFuzzer target: the WebSocket handshake parser (core/ws_handshake) on arbitrary
 * first bytes of a connection, and the answers built from its results. Seeds:
 * tests/fuzz/seeds/ws_handshake.
 *
 * Oracle:
 * - the result is a length, 0, -400, -426, -431 or -SLB_WS_STATUS_NO_SIP; *h is written
 *   only on a length;
 * - a length is within the input and SLB_WS_HANDSHAKE_MAX, equals h->request_len, and is
 *   just past the input's first CRLFCRLF; the slices lie inside the request (the path
 *   right after "GET "), the host is not empty, the accept value is 28 characters of
 *   base64 of 20 bytes, and the 101 builds and carries it;
 * - 0 only without a CRLFCRLF in fewer than SLB_WS_HANDSHAKE_MAX bytes, -431 only without
 *   one in the first SLB_WS_HANDSHAKE_MAX bytes;
 * - a refusal's status builds an error response;
 * - growing the input only decides: prefixes shorter than the request's end need more
 *   (sampled: the parse is linear, so every prefix would be quadratic), the request alone
 *   gives the same verdict and the same *h as the whole input, and so does an exact-size
 *   copy of the first SLB_WS_HANDSHAKE_MAX bytes (ASan sees any read past them). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "core/ws_handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t first_end(const char *p, size_t n)
{
    for (size_t i = 3; i < n; i++)
        if (memcmp(p + i - 3, "\r\n\r\n", 4) == 0)
            return i + 1;
    return 0;
}

static bool inside(const char *s, size_t n, const char *buf, size_t len)
{
    return s >= buf && s <= buf + len && n <= (size_t)(buf + len - s);
}

static void check_success(const char *buf, int rc, const struct slb_ws_handshake *h)
{
    size_t n = (size_t)rc;
    if (h->request_len != n || !inside(h->host, h->host_len, buf, n) || h->host_len == 0 ||
        !inside(h->path, h->path_len, buf, n) || h->path != buf + 4 || memcmp(buf, "GET ", 4) != 0)
        abort();
    if (h->origin != NULL && !inside(h->origin, h->origin_len, buf, n))
        abort();
    uint8_t digest[20];
    if (memchr(h->accept, '\0', sizeof(h->accept)) != h->accept + 28 ||
        slb_base64_decode(h->accept, 28, digest, sizeof(digest)) != 20)
        abort();
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    char out[256];
    int r = slb_ws_handshake_response(h, out, sizeof(out));
    if (r <= (int)sizeof(head) + 28 || memcmp(out, head, sizeof(head) - 1) != 0 ||
        memcmp(out + sizeof(head) - 1, h->accept, 28) != 0)
        abort();
}

static int parse(const char *buf, size_t len, struct slb_ws_handshake *h)
{
    struct slb_ws_handshake before;
    memset(h, 0xA5, sizeof(*h));
    memcpy(&before, h, sizeof(before));
    int rc = slb_ws_handshake_parse(buf, len, h);
    size_t n = len < SLB_WS_HANDSHAKE_MAX ? len : SLB_WS_HANDSHAKE_MAX;
    size_t end = first_end(buf, n);
    if (rc > 0) {
        if ((size_t)rc != end)
            abort();
        check_success(buf, rc, h);
        return rc;
    }
    if (memcmp(&before, h, sizeof(before)) != 0)
        abort(); /* written without success */
    if (rc == 0 && (end != 0 || len >= SLB_WS_HANDSHAKE_MAX))
        abort();
    if (rc == -431 && (end != 0 || len < SLB_WS_HANDSHAKE_MAX))
        abort();
    if ((rc == -400 || rc == -426 || rc == -SLB_WS_STATUS_NO_SIP) && end == 0)
        abort();
    if (rc != 0 && rc != -400 && rc != -426 && rc != -431 && rc != -SLB_WS_STATUS_NO_SIP)
        abort();
    char out[256];
    if (rc < 0 && slb_ws_handshake_error(-rc, out, sizeof(out)) <= 0)
        abort();
    return rc;
}

static void same(int rc, const struct slb_ws_handshake *h, int prc,
                 const struct slb_ws_handshake *ph)
{
    if (prc != rc || (rc > 0 && memcmp(ph, h, sizeof(*h)) != 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct slb_ws_handshake h, ph;
    int rc = parse(buf, size, &h);

    size_t max = size < SLB_WS_HANDSHAKE_MAX ? size : SLB_WS_HANDSHAKE_MAX;
    size_t end = first_end(buf, max);
    if (end != 0) {
        /* Just short of the end, a few more samples, and the request alone. */
        size_t samples[] = {end - 1, end - 2, end - 3, end / 2, end / 3, 1, 0};
        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
            if (parse(buf, samples[i], &ph) != 0)
                abort();
        same(rc, &h, parse(buf, end, &ph), &ph);
    } else if (max > 0) {
        if (parse(buf, max - 1, &ph) != 0)
            abort();
    }

    /* Exactly the bytes that may decide, in a buffer of their size; the slices then point
     * into the copy, so compare everything else. */
    char *copy = malloc(max ? max : 1);
    if (!copy)
        return 0;
    if (max)
        memcpy(copy, buf, max);
    int crc = parse(copy, max, &ph);
    if (crc != rc ||
        (rc > 0 &&
         (ph.host - copy != h.host - buf || ph.host_len != h.host_len ||
          ph.path - copy != h.path - buf || ph.path_len != h.path_len ||
          (ph.origin == NULL) != (h.origin == NULL) ||
          (h.origin && ph.origin - copy != h.origin - buf) || ph.origin_len != h.origin_len ||
          strcmp(ph.accept, h.accept) != 0 || ph.request_len != h.request_len)))
        abort();
    free(copy);
    return 0;
}
