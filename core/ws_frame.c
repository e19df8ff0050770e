/* WebSocket framing for the server side (see core/ws_frame.h; the spec is RFC 6455,
 * sections 5 and 7.4, and RFC 3629 for UTF-8).
 *
 * Invariants: the header parser never reads outside buf[0, min(len, SLB_WS_HDR_MAX)); it
 * makes its checks in one fixed order, each as soon as the bytes it needs are present, so
 * a prefix of a header returns 0 or the answer the whole header gets, and growing the
 * buffer and calling again gives the same answer as one call on everything. Writers write
 * only shortest encodings, which is also all the parser takes. Pure; any thread. */
#include "core/ws_frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FIN_BIT         0x80u
#define RSV_BITS        0x70u
#define OPCODE_BITS     0x0Fu
#define CONTROL_BIT     0x08u /* 5.5: opcodes with the high bit set are control frames */
#define MASK_BIT        0x80u
#define LEN7_BITS       0x7Fu
#define LEN7_16         126u /* 5.2: a 16-bit length follows */
#define LEN7_64         127u /* 5.2: a 64-bit length follows */
#define CLOSE_NO_STATUS 1005u
#define CLOSE_CODE_LEN  2u

/* One bit per defined opcode: 0-2 for data, 8-10 for control. */
#define KNOWN_OPCODES                                                                              \
    (1u << SLB_WS_CONT | 1u << SLB_WS_TEXT | 1u << SLB_WS_BINARY | 1u << SLB_WS_CLOSE |            \
     1u << SLB_WS_PING | 1u << SLB_WS_PONG)

static bool opcode_known(unsigned opcode)
{
    return opcode <= OPCODE_BITS && (KNOWN_OPCODES >> opcode & 1u);
}

static bool opcode_control(unsigned opcode)
{
    return (opcode & CONTROL_BIT) != 0;
}

static uint64_t read_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* 7.4: which codes may travel in a close frame. 1012-1014 are not in RFC 6455 itself but
 * IANA's registry has assigned them (service restart, try again later, bad gateway), and
 * peers do send them; 1004 and 1015 are reserved, 1005 and 1006 only ever local. */
static bool close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int slb_ws_frame_parse(const void *buf, size_t len, bool require_mask, uint64_t max_payload,
                       struct slb_ws_frame_hdr *h)
{
    const uint8_t *p = buf;
    if (len == 0)
        return 0;
    /* 5.2: with no extension negotiated a set RSV bit, or an opcode nobody defined, means
     * the peer speaks something we cannot read; 5.5: control frames are never fragmented. */
    bool fin = (p[0] & FIN_BIT) != 0;
    unsigned opcode = p[0] & OPCODE_BITS;
    if ((p[0] & RSV_BITS) != 0 || !opcode_known(opcode))
        return -EPROTO;
    bool control = opcode_control(opcode);
    if (control && !fin)
        return -EPROTO;
    if (len < 2)
        return 0;
    bool masked = (p[1] & MASK_BIT) != 0;
    unsigned len7 = p[1] & LEN7_BITS;
    if (control && len7 > SLB_WS_CONTROL_MAX)
        return -EPROTO; /* 5.5: this also refuses the extended lengths */
    if (require_mask && !masked)
        return -EACCES;
    size_t ext = len7 == LEN7_16 ? 2 : len7 == LEN7_64 ? 8 : 0;
    uint64_t payload_len = len7;
    if (ext != 0) {
        if (len < 2 + ext)
            return 0;
        payload_len = read_be(p + 2, ext);
        /* 5.2: the top bit of a 64-bit length MUST be 0, and the minimal number of bytes
         * MUST be used. The latter is the receiver's to enforce or not; we do, so that a
         * header's length follows from its payload's. */
        if (payload_len >> 63 != 0)
            return -EPROTO;
        if (payload_len < (ext == 2 ? LEN7_16 : 0x10000u))
            return -EPROTO;
    }
    if (payload_len > max_payload)
        return -EMSGSIZE;
    size_t hdr_len = 2 + ext + (masked ? 4 : 0);
    if (len < hdr_len)
        return 0;
    memset(h, 0, sizeof(*h));
    h->fin = fin;
    h->opcode = (uint8_t)opcode;
    h->masked = masked;
    if (masked)
        memcpy(h->mask, p + 2 + ext, 4);
    h->hdr_len = (uint8_t)hdr_len;
    h->payload_len = payload_len;
    return (int)hdr_len;
}

void slb_ws_unmask(void *data, size_t len, const uint8_t mask[4], uint64_t offset)
{
    uint8_t *p = data;
    /* The key as it lines up with data[0]: period 4, so two copies make a word, and every
     * word of data that starts at a multiple of 8 from data[0] lines up with it too. */
    uint8_t key[8];
    for (unsigned i = 0; i < 8; i++)
        key[i] = mask[(offset + i) & 3u];
    uint64_t key64;
    memcpy(&key64, key, sizeof(key64));
    size_t i = 0;
    for (; len - i >= 8; i += 8) {
        uint64_t w; /* memcpy: data need not be aligned; compilers make it a plain load */
        memcpy(&w, p + i, sizeof(w));
        w ^= key64;
        memcpy(p + i, &w, sizeof(w));
    }
    for (; i < len; i++)
        p[i] ^= key[i & 3u];
}

size_t slb_ws_frame_header(uint8_t *out, uint8_t opcode, bool fin, uint64_t payload_len)
{
    /* There is no error to return from a header we were asked to write: a frame the peer
     * must fail the connection on is our bug, and stops here rather than on the wire. */
    bool control = opcode_control(opcode);
    if (!opcode_known(opcode) || payload_len >> 63 != 0 ||
        (control && (!fin || payload_len > SLB_WS_CONTROL_MAX)))
        abort();
    out[0] = (uint8_t)((fin ? FIN_BIT : 0) | opcode);
    if (payload_len < LEN7_16) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    size_t ext = payload_len <= 0xFFFFu ? 2 : 8;
    out[1] = (uint8_t)(ext == 2 ? LEN7_16 : LEN7_64);
    for (size_t i = 0; i < ext; i++)
        out[2 + i] = (uint8_t)(payload_len >> (8 * (ext - 1 - i)));
    return 2 + ext;
}

int slb_ws_close_parse(const uint8_t *payload, size_t len, uint16_t *code)
{
    /* 5.5.1: a body, if any, starts with the code; 7.1.5: no code reads as 1005. */
    if (len == 0) {
        *code = CLOSE_NO_STATUS;
        return 0;
    }
    if (len < CLOSE_CODE_LEN || len > SLB_WS_CONTROL_MAX)
        return -EPROTO;
    unsigned c = (unsigned)read_be(payload, CLOSE_CODE_LEN);
    /* 7.4.1, 8.1: a reserved code, or a reason that is not UTF-8, fails the connection. */
    if (!close_code_ok(c) || !slb_ws_utf8_valid(payload + CLOSE_CODE_LEN, len - CLOSE_CODE_LEN))
        return -EPROTO;
    *code = (uint16_t)c;
    return 0;
}

size_t slb_ws_close_build(uint8_t *out, size_t cap, uint16_t code, const char *reason)
{
    if (code == CLOSE_NO_STATUS)
        return cap < 2 ? 0 : slb_ws_frame_header(out, SLB_WS_CLOSE, true, 0);
    if (!close_code_ok(code))
        abort(); /* 7.4.1: the peer would fail the connection on it: our bug */
    if (cap < 2 + CLOSE_CODE_LEN)
        return 0;
    size_t room = cap - 2 - CLOSE_CODE_LEN;
    if (room > SLB_WS_CONTROL_MAX - CLOSE_CODE_LEN)
        room = SLB_WS_CONTROL_MAX - CLOSE_CODE_LEN;
    size_t reason_len = reason ? strlen(reason) : 0;
    /* The peer fails the connection on a bad reason (8.1), so better none; and a cut
     * inside a character would make a good one bad, so cut before its lead byte. */
    if (!slb_ws_utf8_valid((const uint8_t *)reason, reason_len))
        reason_len = 0;
    if (reason_len > room) {
        reason_len = room;
        while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xC0u) == 0x80u)
            reason_len--;
    }
    size_t n = slb_ws_frame_header(out, SLB_WS_CLOSE, true, CLOSE_CODE_LEN + reason_len);
    out[n] = (uint8_t)(code >> 8);
    out[n + 1] = (uint8_t)code;
    if (reason_len)
        memcpy(out + n + CLOSE_CODE_LEN, reason, reason_len);
    return n + CLOSE_CODE_LEN + reason_len;
}

bool slb_ws_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        /* SIP is mostly ASCII: skip it a word at a time. */
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, sizeof(w));
            if ((w & 0x8080808080808080u) == 0) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        /* RFC 3629 section 4: the lead byte fixes the length and narrows the second
         * byte's range, which is what rules out overlongs (E0, F0), surrogates (ED) and
         * code points past U+10FFFF (F4); C0, C1 and F5-FF never occur. */
        size_t more;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return false;
        }
        if (len - i - 1 < more || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= more; k++)
            if ((s[i + k] & 0xC0u) != 0x80u)
                return false;
        i += 1 + more;
    }
    return true;
}

int slb_ws_msg_frame(struct slb_ws_msg *m, const struct slb_ws_frame_hdr *h, uint64_t max_msg)
{
    if (opcode_control(h->opcode))
        return -EINVAL;
    /* 5.4: a message is one TEXT or BINARY frame, then CONT frames up to the one with FIN;
     * data frames of two messages never interleave. */
    bool starts = h->opcode != SLB_WS_CONT;
    if (starts == m->in_message)
        return -EPROTO;
    uint64_t so_far = starts ? 0 : m->len;
    if (so_far > max_msg || h->payload_len > max_msg - so_far)
        return -EMSGSIZE;
    if (starts)
        m->opcode = h->opcode;
    m->len = so_far + h->payload_len;
    m->in_message = !h->fin;
    return h->fin ? 1 : 0;
}
