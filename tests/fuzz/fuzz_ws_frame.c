/* libFuzzer target: the WebSocket frame codec (core/ws_frame) on arbitrary client byte
 * streams. Seeds: tests/fuzz/seeds/ws_frame.
 *
 * The input is walked as a connection would walk it, frame after frame, twice: as a
 * lenient reader (masks optional, payloads up to 64 KiB) and as our server (masks
 * required, payloads and messages up to half the input's size). Oracle, per frame:
 * - the result is a length, 0, -EPROTO, -EACCES or -EMSGSIZE; *h is written only on a
 *   length; 0 only with fewer than SLB_WS_HDR_MAX bytes left; every shorter prefix of a
 *   parsed header needs more, and the header's own bytes (copied to the end of a buffer
 *   of their size, so ASan sees an over-read) parse to the same result;
 * - a parsed header is well formed: 2..14 bytes within the input, a defined opcode, FIN
 *   and at most 125 bytes on a control frame, a mask when one is required and a zero key
 *   without one, a length within the bound and below 2^63; and it is exactly the bytes
 *   slb_ws_frame_header writes for its opcode, FIN and length (plus the mask bit and key),
 *   which parse back to the same;
 * - the payload (as much as is present) unmasks the same whole, in three pieces split at
 *   points drawn from the input, and byte by byte as RFC 6455 5.3 says; and back again;
 * - slb_ws_utf8_valid agrees with a decoder written the other way round (decode, then
 *   check the code point's range);
 * - a close payload parses to 0 or -EPROTO exactly as its code and reason say, and a
 *   code it takes goes back into a close frame of ours that parses to the same code;
 * - data frames follow a model of RFC 6455 5.4's rules through slb_ws_msg_frame. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/ws_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A walk's bounds, as a connection's flags would set them. */
struct limits {
    bool require_mask;
    uint64_t max_payload;
    uint64_t max_msg;
};

static int parse(const uint8_t *p, size_t n, const struct limits *lim, struct slb_ws_frame_hdr *h)
{
    struct slb_ws_frame_hdr before;
    memset(h, 0xA5, sizeof(*h));
    memcpy(&before, h, sizeof(before));
    int rc = slb_ws_frame_parse(p, n, lim->require_mask, lim->max_payload, h);
    if (rc > 0) {
        if ((size_t)rc > n || rc < 2 || rc > (int)SLB_WS_HDR_MAX || h->hdr_len != rc)
            abort();
    } else if (rc != 0 && rc != -EPROTO && rc != -EACCES && rc != -EMSGSIZE) {
        abort();
    } else if (memcmp(&before, h, sizeof(before)) != 0) {
        abort(); /* written without success */
    } else if (rc == 0 && n >= SLB_WS_HDR_MAX) {
        abort();
    }
    return rc;
}

/* Every shorter prefix of the header needs more, and the header alone, at the end of a
 * buffer of its size, parses the same. */
static void check_prefixes(const uint8_t *p, int rc, const struct limits *lim,
                           const struct slb_ws_frame_hdr *h)
{
    uint8_t *edge = malloc(SLB_WS_HDR_MAX);
    if (!edge)
        abort();
    struct slb_ws_frame_hdr ph;
    for (int k = 0; k <= rc; k++) {
        uint8_t *at = edge + SLB_WS_HDR_MAX - k;
        memcpy(at, p, (size_t)k);
        int prc = parse(at, (size_t)k, lim, &ph);
        if (k < rc ? prc != 0 : prc != rc || memcmp(&ph, h, sizeof(ph)) != 0)
            abort();
    }
    free(edge);
}

static void check_header(const uint8_t *p, int rc, const struct limits *lim,
                         const struct slb_ws_frame_hdr *h)
{
    bool control = h->opcode >= SLB_WS_CLOSE;
    if ((h->opcode > SLB_WS_BINARY && h->opcode < SLB_WS_CLOSE) || h->opcode > SLB_WS_PONG)
        abort();
    if (control && (!h->fin || h->payload_len > SLB_WS_CONTROL_MAX))
        abort();
    if (h->payload_len > lim->max_payload || h->payload_len >> 63 != 0)
        abort();
    if (lim->require_mask && !h->masked)
        abort();
    static const uint8_t zero[4];
    if (!h->masked && memcmp(h->mask, zero, 4) != 0)
        abort();
    /* Shortest encodings only: the header is what we would write for it. */
    uint8_t out[SLB_WS_HDR_MAX];
    size_t n = slb_ws_frame_header(out, h->opcode, h->fin, h->payload_len);
    if (h->masked) {
        out[1] |= 0x80;
        memcpy(out + n, h->mask, 4);
        n += 4;
    }
    if (n != (size_t)rc || memcmp(out, p, n) != 0)
        abort();
    struct slb_ws_frame_hdr back;
    struct limits lenient = {false, UINT64_MAX, 0};
    if (parse(out, n, &lenient, &back) != rc || back.opcode != h->opcode || back.fin != h->fin ||
        back.payload_len != h->payload_len)
        abort();
}

/* UTF-8 the other way round from the codec: decode first, then check the range. */
static bool utf8_ref(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t c = s[i];
        size_t more;
        uint32_t min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        if (n - i - 1 < more)
            return false;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            c = c << 6 | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        i += 1 + more;
    }
    return true;
}

/* Unmasks the n present payload bytes three ways; returns the whole result (malloc'd). */
static uint8_t *check_unmask(const uint8_t *payload, size_t n, const struct slb_ws_frame_hdr *h,
                             uint64_t seed)
{
    uint8_t *whole = malloc(n ? n : 1), *pieces = malloc(n ? n : 1), *ref = malloc(n ? n : 1);
    if (!whole || !pieces || !ref)
        abort();
    if (n) {
        memcpy(whole, payload, n);
        memcpy(pieces, payload, n);
        memcpy(ref, payload, n);
    }
    slb_ws_unmask(whole, n, h->mask, 0);
    size_t a = (size_t)(seed % (n + 1));
    size_t b = a + (size_t)((seed >> 20) % (n - a + 1));
    slb_ws_unmask(pieces, a, h->mask, 0);
    slb_ws_unmask(pieces + a, b - a, h->mask, a);
    slb_ws_unmask(pieces + b, n - b, h->mask, b);
    for (size_t i = 0; i < n; i++)
        ref[i] ^= h->mask[i % 4];
    if (n && (memcmp(whole, pieces, n) != 0 || memcmp(whole, ref, n) != 0))
        abort();
    /* And back: masking is its own inverse. */
    slb_ws_unmask(pieces, n, h->mask, 0);
    if (n && memcmp(pieces, payload, n) != 0)
        abort();
    free(pieces);
    free(ref);
    return whole;
}

static bool close_code_ref(unsigned c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

static void check_close(const uint8_t *payload, size_t n)
{
    uint16_t code = 0xA5A5;
    int rc = slb_ws_close_parse(payload, n, &code);
    bool want_ok = n == 0 || (n >= 2 && n <= SLB_WS_CONTROL_MAX &&
                              close_code_ref((unsigned)payload[0] << 8 | payload[1]) &&
                              utf8_ref(payload + 2, n - 2));
    if (rc != (want_ok ? 0 : -EPROTO) || (rc != 0 && code != 0xA5A5))
        abort();
    if (rc != 0)
        return;
    if (n == 0 ? code != 1005 : code != ((unsigned)payload[0] << 8 | payload[1]))
        abort();
    /* The code, with the reason up to any NUL, back into a close of ours. */
    char reason[SLB_WS_CONTROL_MAX + 1] = "";
    if (n > 2)
        memcpy(reason, payload + 2, n - 2);
    uint8_t out[SLB_WS_HDR_MAX + SLB_WS_CONTROL_MAX];
    size_t len = slb_ws_close_build(out, sizeof(out), code, reason);
    struct slb_ws_frame_hdr h;
    struct limits lenient = {false, UINT64_MAX, 0};
    uint16_t back;
    if (len < 2 || parse(out, len, &lenient, &h) != 2 || h.opcode != SLB_WS_CLOSE ||
        h.payload_len != len - 2 || slb_ws_close_parse(out + 2, len - 2, &back) != 0 ||
        back != code)
        abort();
    if (code != 1005 && (len - 4 != strlen(reason) || memcmp(out + 4, reason, len - 4) != 0))
        abort();
}

/* RFC 6455 5.4 as a model: returns what slb_ws_msg_frame must, updating the model. */
static int msg_model(struct slb_ws_msg *m, const struct slb_ws_frame_hdr *h, uint64_t max_msg)
{
    bool starts = h->opcode != SLB_WS_CONT;
    if (starts == m->in_message)
        return -EPROTO;
    uint64_t len = starts ? 0 : m->len;
    if (h->payload_len > max_msg || len + h->payload_len > max_msg)
        return -EMSGSIZE;
    if (starts)
        m->opcode = h->opcode;
    m->len = len + h->payload_len;
    m->in_message = !h->fin;
    return h->fin;
}

/* One connection's input, frame after frame, until it ends or fails. */
static void walk(const uint8_t *data, size_t size, const struct limits *lim)
{
    struct slb_ws_msg msg = {0}, model = {0};
    size_t at = 0;
    while (at < size) {
        struct slb_ws_frame_hdr h;
        int rc = parse(data + at, size - at, lim, &h);
        if (rc <= 0)
            return; /* need more, or the connection fails */
        check_prefixes(data + at, rc, lim, &h);
        check_header(data + at, rc, lim, &h);
        size_t rest = size - at - (size_t)rc;
        size_t n = h.payload_len < rest ? (size_t)h.payload_len : rest;
        uint32_t key;
        memcpy(&key, h.mask, sizeof(key));
        uint64_t seed = (uint64_t)at * 0x9E3779B97F4A7C15u ^ key ^ (uint64_t)data[size - 1] << 40;
        uint8_t *payload = check_unmask(data + at + rc, n, &h, seed);
        if (slb_ws_utf8_valid(payload, n) != utf8_ref(payload, n))
            abort();
        bool complete = n == h.payload_len;
        if (h.opcode >= SLB_WS_CLOSE) {
            if (h.opcode == SLB_WS_CLOSE && complete)
                check_close(payload, n);
        } else {
            struct slb_ws_msg before = msg;
            int mrc = slb_ws_msg_frame(&msg, &h, lim->max_msg);
            int want = msg_model(&model, &h, lim->max_msg);
            if (mrc != want)
                abort();
            if (mrc < 0 && memcmp(&msg, &before, sizeof(msg)) != 0)
                abort();
            if (mrc >= 0 && (msg.in_message != model.in_message || msg.len != model.len ||
                             msg.opcode != model.opcode || msg.len > lim->max_msg))
                abort();
            if (mrc < 0) {
                free(payload);
                return;
            }
        }
        free(payload);
        if (!complete)
            return;
        at += (size_t)rc + n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct limits lenient = {false, 65536, 2 * 65536};
    walk(data, size, &lenient);
    struct limits server = {true, size / 2, size / 2};
    walk(data, size, &server);
    return 0;
}
