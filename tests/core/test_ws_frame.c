/* The WebSocket frame codec: RFC 6455's own examples (5.7), need-more on every prefix of a
 * header, refusal of what a server must refuse as early as the bytes allow, unmasking in
 * pieces, headers and close frames we write, close payloads, UTF-8 and the fragmentation
 * rules of a message. Headers sit against a PROT_NONE page so an over-read faults. */
#include "core/ws_frame.h"
#include "tests/support/guard.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define NO_MAX UINT64_MAX

/* The input right before a PROT_NONE page (tests/support/guard): any over-read faults.
 * Valid until the next call. */
static const uint8_t *guarded(const void *src, size_t n)
{
    return (const uint8_t *)guard_place(src, n);
}

/* Parses buf[0, n) from the guarded copy; checks *h is untouched unless it succeeded. */
static int parse(const void *buf, size_t n, bool require_mask, uint64_t max,
                 struct slb_ws_frame_hdr *h)
{
    struct slb_ws_frame_hdr before;
    memset(h, 0xA5, sizeof(*h));
    memcpy(&before, h, sizeof(before));
    int rc = slb_ws_frame_parse(guarded(buf, n), n, require_mask, max, h);
    if (rc <= 0)
        cr_assert_eq(memcmp(&before, h, sizeof(before)), 0, "*h written though rc %d", rc);
    else
        cr_assert_eq(h->hdr_len, (unsigned)rc);
    return rc;
}

/* Every proper prefix of a valid header needs more, the whole parses to its length, and
 * the payload behind it changes nothing. Returns the header as parsed. */
static struct slb_ws_frame_hdr assert_valid_everywhere(const void *hdr, size_t n, bool require_mask,
                                                       uint64_t max)
{
    struct slb_ws_frame_hdr h, whole;
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(parse(hdr, k, require_mask, max, &h), 0,
                     "prefix of %zu of %zu bytes: not need-more", k, n);
    cr_assert_eq(parse(hdr, n, require_mask, max, &whole), (int)n);
    uint8_t more[SLB_WS_HDR_MAX + 8];
    cr_assert_leq(n, SLB_WS_HDR_MAX);
    memcpy(more, hdr, n);
    memcpy(more + n, "\x81\xFF\x7F\xFF\xFF\xFF\xFF\xFF", 8);
    cr_assert_eq(parse(more, n + 8, require_mask, max, &h), (int)n);
    cr_assert_eq(memcmp(&h, &whole, sizeof(h)), 0, "trailing bytes changed the result");
    return whole;
}

/* Each prefix of bad returns 0 until it is refused with err at `at` bytes, and err ever
 * after (up to n bytes). */
static void assert_refused_at(const void *bad, size_t n, bool require_mask, uint64_t max, int err,
                              size_t at)
{
    struct slb_ws_frame_hdr h;
    for (size_t k = 0; k <= n; k++) {
        int want = k < at ? 0 : err;
        cr_assert_eq(parse(bad, k, require_mask, max, &h), want, "prefix of %zu: want %d", k, want);
    }
}

/* 5.7's frames (their masked ones all use this key). */
static const uint8_t key_5_7[4] = {0x37, 0xFA, 0x21, 0x3D};
static const uint8_t text_hello[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
static const uint8_t masked_hello[] = {0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D,
                                       0x7F, 0x9F, 0x4D, 0x51, 0x58};
static const uint8_t frag_hel[] = {0x01, 0x03, 'H', 'e', 'l'};
static const uint8_t frag_lo[] = {0x80, 0x02, 'l', 'o'};
static const uint8_t ping_hello[] = {0x89, 0x05, 'H', 'e', 'l', 'l', 'o'};
static const uint8_t masked_pong_hello[] = {0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D,
                                            0x7F, 0x9F, 0x4D, 0x51, 0x58};

static void assert_hdr(const struct slb_ws_frame_hdr *h, bool fin, unsigned opcode, bool masked,
                       unsigned hdr_len, uint64_t payload_len)
{
    cr_assert_eq(h->fin, fin);
    cr_assert_eq(h->opcode, opcode);
    cr_assert_eq(h->masked, masked);
    cr_assert_eq(h->hdr_len, hdr_len);
    cr_assert_eq(h->payload_len, payload_len);
    static const uint8_t zero[4];
    if (!masked)
        cr_assert_eq(memcmp(h->mask, zero, 4), 0, "no key, yet mask is not zero");
}

Test(ws_frame, rfc_5_7_single_unmasked_text)
{
    struct slb_ws_frame_hdr h = assert_valid_everywhere(text_hello, 2, false, NO_MAX);
    assert_hdr(&h, true, SLB_WS_TEXT, false, 2, 5);
    cr_assert_eq(parse(text_hello, sizeof(text_hello), false, NO_MAX, &h), 2);
    cr_assert_eq(memcmp(text_hello + h.hdr_len, "Hello", 5), 0);
    /* What we would send ourselves: the same two header bytes. */
    uint8_t out[SLB_WS_HDR_MAX];
    cr_assert_eq(slb_ws_frame_header(out, SLB_WS_TEXT, true, 5), 2);
    cr_assert_eq(memcmp(out, text_hello, 2), 0);
}

Test(ws_frame, rfc_5_7_single_masked_text_unmasks_to_hello)
{
    struct slb_ws_frame_hdr h = assert_valid_everywhere(masked_hello, 6, true, NO_MAX);
    assert_hdr(&h, true, SLB_WS_TEXT, true, 6, 5);
    cr_assert_eq(memcmp(h.mask, key_5_7, 4), 0);
    uint8_t frame[sizeof(masked_hello)];
    memcpy(frame, masked_hello, sizeof(frame));
    slb_ws_unmask(frame + h.hdr_len, h.payload_len, h.mask, 0);
    cr_assert_eq(memcmp(frame + h.hdr_len, "Hello", 5), 0);
}

Test(ws_frame, rfc_5_7_fragmented_unmasked_text_is_one_message)
{
    struct slb_ws_msg m = {0};
    struct slb_ws_frame_hdr h = assert_valid_everywhere(frag_hel, 2, false, NO_MAX);
    assert_hdr(&h, false, SLB_WS_TEXT, false, 2, 3);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 5), 0);
    cr_assert(m.in_message);
    h = assert_valid_everywhere(frag_lo, 2, false, NO_MAX);
    assert_hdr(&h, true, SLB_WS_CONT, false, 2, 2);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 5), 1);
    cr_assert_not(m.in_message);
    cr_assert_eq(m.opcode, SLB_WS_TEXT);
    cr_assert_eq(m.len, 5);
}

Test(ws_frame, rfc_5_7_unmasked_ping_and_masked_pong)
{
    struct slb_ws_frame_hdr h = assert_valid_everywhere(ping_hello, 2, false, NO_MAX);
    assert_hdr(&h, true, SLB_WS_PING, false, 2, 5);
    h = assert_valid_everywhere(masked_pong_hello, 6, true, NO_MAX);
    assert_hdr(&h, true, SLB_WS_PONG, true, 6, 5);
    uint8_t payload[5];
    memcpy(payload, masked_pong_hello + 6, 5);
    slb_ws_unmask(payload, sizeof(payload), h.mask, 0);
    cr_assert_eq(memcmp(payload, "Hello", 5), 0);
}

Test(ws_frame, rfc_5_7_binary_256_bytes_takes_a_16_bit_length)
{
    static const uint8_t hdr[] = {0x82, 0x7E, 0x01, 0x00};
    struct slb_ws_frame_hdr h = assert_valid_everywhere(hdr, sizeof(hdr), false, NO_MAX);
    assert_hdr(&h, true, SLB_WS_BINARY, false, 4, 256);
    uint8_t out[SLB_WS_HDR_MAX];
    cr_assert_eq(slb_ws_frame_header(out, SLB_WS_BINARY, true, 256), sizeof(hdr));
    cr_assert_eq(memcmp(out, hdr, sizeof(hdr)), 0);
}

Test(ws_frame, rfc_5_7_binary_64_kib_takes_a_64_bit_length)
{
    static const uint8_t hdr[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
    struct slb_ws_frame_hdr h = assert_valid_everywhere(hdr, sizeof(hdr), false, NO_MAX);
    assert_hdr(&h, true, SLB_WS_BINARY, false, 10, 65536);
    uint8_t out[SLB_WS_HDR_MAX];
    cr_assert_eq(slb_ws_frame_header(out, SLB_WS_BINARY, true, 65536), sizeof(hdr));
    cr_assert_eq(memcmp(out, hdr, sizeof(hdr)), 0);
}

Test(ws_frame, rfc_5_7_frames_walked_as_one_stream)
{
    /* The way a connection reads them: header, payload unmasked in place, next frame. */
    uint8_t stream[128];
    size_t n = 0;
    const uint8_t *frames[] = {masked_hello, ping_hello, frag_hel, masked_pong_hello, frag_lo};
    const size_t sizes[] = {sizeof(masked_hello), sizeof(ping_hello), sizeof(frag_hel),
                            sizeof(masked_pong_hello), sizeof(frag_lo)};
    static const char *const payloads[] = {"Hello", "Hello", "Hel", "Hello", "lo"};
    for (size_t i = 0; i < 5; i++) {
        memcpy(stream + n, frames[i], sizes[i]);
        n += sizes[i];
    }
    size_t at = 0;
    for (size_t i = 0; i < 5; i++) {
        struct slb_ws_frame_hdr h;
        int rc = slb_ws_frame_parse(stream + at, n - at, false, 125, &h);
        cr_assert_eq(rc, (int)(sizes[i] - strlen(payloads[i])));
        at += (size_t)rc;
        if (h.masked)
            slb_ws_unmask(stream + at, h.payload_len, h.mask, 0);
        cr_assert_eq(memcmp(stream + at, payloads[i], h.payload_len), 0, "frame %zu", i);
        at += h.payload_len;
    }
    cr_assert_eq(at, n);
}

Test(ws_frame, nothing_yet_needs_more)
{
    struct slb_ws_frame_hdr h;
    cr_assert_eq(parse("", 0, true, NO_MAX, &h), 0);
    cr_assert_eq(parse("", 0, false, 0, &h), 0);
}

Test(ws_frame, every_truncation_of_a_valid_header_needs_more)
{
    /* Each length encoding, masked and not, data and control, FIN or not. */
    static const uint8_t hdrs[][SLB_WS_HDR_MAX] = {
        {0x81, 0x00},
        {0x82, 0xFD, 1, 2, 3, 4},
        {0x02, 0xFE, 0x00, 0x7E, 9, 8, 7, 6},
        {0x00, 0x7E, 0xFF, 0xFF},
        {0x80, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 0xA, 0xB, 0xC, 0xD},
        {0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
        {0x88, 0x82, 1, 2, 3, 4},
        {0x89, 0xFD, 1, 2, 3, 4},
        {0x8A, 0x00},
    };
    static const size_t lens[] = {2, 6, 8, 4, 14, 10, 6, 6, 2};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        struct slb_ws_frame_hdr h = assert_valid_everywhere(hdrs[i], lens[i], false, NO_MAX);
        cr_assert_eq(h.opcode, hdrs[i][0] & 0x0F);
        cr_assert_eq(h.fin, (hdrs[i][0] & 0x80) != 0);
        if (h.masked) {
            cr_assert_eq(memcmp(h.mask, hdrs[i] + lens[i] - 4, 4), 0);
            assert_valid_everywhere(hdrs[i], lens[i], true, NO_MAX);
        }
    }
}

Test(ws_frame, rsv_bits_are_refused_at_the_first_byte)
{
    /* No extension is negotiated, so none of them may be set (5.2). */
    static const uint8_t rsv[] = {0x40, 0x20, 0x10, 0x70};
    for (size_t i = 0; i < sizeof(rsv); i++) {
        uint8_t hdr[6] = {(uint8_t)(0x81 | rsv[i]), 0x80, 1, 2, 3, 4};
        assert_refused_at(hdr, sizeof(hdr), true, NO_MAX, -EPROTO, 1);
        hdr[0] = (uint8_t)(0x89 | rsv[i]);
        assert_refused_at(hdr, sizeof(hdr), true, NO_MAX, -EPROTO, 1);
    }
}

Test(ws_frame, reserved_opcodes_are_refused_at_the_first_byte)
{
    static const uint8_t reserved[] = {3, 4, 5, 6, 7, 11, 12, 13, 14, 15};
    for (size_t i = 0; i < sizeof(reserved); i++) {
        uint8_t hdr[6] = {(uint8_t)(0x80 | reserved[i]), 0x80, 1, 2, 3, 4};
        assert_refused_at(hdr, sizeof(hdr), true, NO_MAX, -EPROTO, 1);
        hdr[0] = reserved[i];
        assert_refused_at(hdr, sizeof(hdr), false, NO_MAX, -EPROTO, 1);
    }
}

Test(ws_frame, fragmented_control_frames_are_refused_at_the_first_byte)
{
    static const uint8_t control[] = {SLB_WS_CLOSE, SLB_WS_PING, SLB_WS_PONG};
    for (size_t i = 0; i < sizeof(control); i++) {
        uint8_t hdr[6] = {control[i], 0x80, 1, 2, 3, 4};
        assert_refused_at(hdr, sizeof(hdr), true, NO_MAX, -EPROTO, 1);
    }
}

Test(ws_frame, control_frames_over_125_bytes_are_refused_at_the_length_byte)
{
    static const uint8_t control[] = {SLB_WS_CLOSE, SLB_WS_PING, SLB_WS_PONG};
    for (size_t i = 0; i < sizeof(control); i++) {
        /* 126 and 127 are the extended-length markers: refused before any extension. */
        uint8_t hdr16[8] = {(uint8_t)(0x80 | control[i]), 0xFE, 0x00, 0x7E, 1, 2, 3, 4};
        assert_refused_at(hdr16, sizeof(hdr16), true, NO_MAX, -EPROTO, 2);
        uint8_t hdr64[14] = {(uint8_t)(0x80 | control[i]), 0xFF, 0, 0, 0, 0, 0, 0, 0, 0x7E};
        assert_refused_at(hdr64, sizeof(hdr64), true, NO_MAX, -EPROTO, 2);
        /* Even unmasked and over max: the protocol error decides. */
        hdr16[1] = 0x7E;
        assert_refused_at(hdr16, sizeof(hdr16), true, 10, -EPROTO, 2);
        /* 125 is the largest allowed. */
        uint8_t ok[6] = {(uint8_t)(0x80 | control[i]), 0xFD, 1, 2, 3, 4};
        struct slb_ws_frame_hdr h = assert_valid_everywhere(ok, sizeof(ok), true, NO_MAX);
        assert_hdr(&h, true, control[i], true, 6, 125);
    }
}

Test(ws_frame, unmasked_client_frame_is_refused_when_a_mask_is_required)
{
    /* 5.1: the server fails the connection; decided by the mask bit, before any length. */
    assert_refused_at(text_hello, sizeof(text_hello), true, NO_MAX, -EACCES, 2);
    assert_refused_at(ping_hello, sizeof(ping_hello), true, NO_MAX, -EACCES, 2);
    static const uint8_t hdr64[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0};
    assert_refused_at(hdr64, sizeof(hdr64), true, NO_MAX, -EACCES, 2);
    /* Without the requirement (a client's view), masked frames still parse. */
    struct slb_ws_frame_hdr h;
    cr_assert_eq(parse(masked_hello, sizeof(masked_hello), false, NO_MAX, &h), 6);
    cr_assert(h.masked);
}

Test(ws_frame, payload_over_max_is_refused_once_its_length_is_in)
{
    struct slb_ws_frame_hdr h;
    /* A 7-bit length: at byte 2. The bound itself is fine. */
    cr_assert_eq(parse(masked_hello, 6, true, 5, &h), 6);
    assert_refused_at(masked_hello, sizeof(masked_hello), true, 4, -EMSGSIZE, 2);
    /* A 16-bit length: at byte 4. */
    static const uint8_t hdr16[] = {0x82, 0xFE, 0x03, 0xE8, 1, 2, 3, 4}; /* 1000 */
    cr_assert_eq(parse(hdr16, sizeof(hdr16), true, 1000, &h), 8);
    assert_refused_at(hdr16, sizeof(hdr16), true, 999, -EMSGSIZE, 4);
    /* A 64-bit length: at byte 10, well before a mask key that never matters. */
    static const uint8_t hdr64[] = {0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}; /* 2^32 */
    cr_assert_eq(parse(hdr64, sizeof(hdr64), true, 1ull << 32, &h), 14);
    cr_assert_eq(h.payload_len, 1ull << 32);
    assert_refused_at(hdr64, sizeof(hdr64), true, 65535, -EMSGSIZE, 10);
    /* max 0 takes only empty frames. */
    static const uint8_t empty[] = {0x81, 0x80, 1, 2, 3, 4};
    cr_assert_eq(parse(empty, sizeof(empty), true, 0, &h), 6);
    cr_assert_eq(h.payload_len, 0);
}

Test(ws_frame, sixty_four_bit_length_with_the_top_bit_set_is_refused)
{
    static const uint8_t top[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    assert_refused_at(top, sizeof(top), true, NO_MAX, -EPROTO, 10);
    static const uint8_t all[] = {0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 1,    2,    3,    4};
    assert_refused_at(all, sizeof(all), true, NO_MAX, -EPROTO, 10);
    /* A protocol error, not a size one, even against a small bound. */
    assert_refused_at(all, sizeof(all), true, 100, -EPROTO, 10);
    /* 2^63 - 1 is the largest there is. */
    static const uint8_t largest[] = {0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF,
                                      0xFF, 0xFF, 0xFF, 1,    2,    3,    4};
    struct slb_ws_frame_hdr h = assert_valid_everywhere(largest, sizeof(largest), true, NO_MAX);
    cr_assert_eq(h.payload_len, UINT64_MAX >> 1);
}

Test(ws_frame, non_minimal_lengths_are_refused)
{
    /* 5.2: lengths up to 125 go in 7 bits, up to 65535 in 16. */
    static const uint16_t short16[] = {0, 1, 5, 125};
    for (size_t i = 0; i < sizeof(short16) / sizeof(short16[0]); i++) {
        uint8_t hdr[] = {0x82, 0xFE, 0, (uint8_t)short16[i], 1, 2, 3, 4};
        assert_refused_at(hdr, sizeof(hdr), true, NO_MAX, -EPROTO, 4);
    }
    static const uint64_t short64[] = {0, 5, 125, 126, 256, 65535};
    for (size_t i = 0; i < sizeof(short64) / sizeof(short64[0]); i++) {
        uint8_t hdr[14] = {0x82, 0xFF};
        for (size_t b = 0; b < 8; b++)
            hdr[2 + b] = (uint8_t)(short64[i] >> (56 - 8 * b));
        memcpy(hdr + 10, "\x01\x02\x03\x04", 4);
        assert_refused_at(hdr, sizeof(hdr), true, NO_MAX, -EPROTO, 10);
    }
    /* The smallest of each encoding is minimal. */
    struct slb_ws_frame_hdr h;
    static const uint8_t min16[] = {0x82, 0xFE, 0x00, 0x7E, 1, 2, 3, 4};
    h = assert_valid_everywhere(min16, sizeof(min16), true, NO_MAX);
    cr_assert_eq(h.payload_len, 126);
    static const uint8_t min64[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4};
    h = assert_valid_everywhere(min64, sizeof(min64), true, NO_MAX);
    cr_assert_eq(h.payload_len, 65536);
}

Test(ws_frame, errors_found_in_the_first_byte_win_over_later_ones)
{
    /* RSV set, unmasked, control over 125 and over max at once: the first byte decides. */
    static const uint8_t hdr[] = {0xC9, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0};
    assert_refused_at(hdr, sizeof(hdr), true, 1, -EPROTO, 1);
    /* Unmasked and over max: the mask bit comes first. */
    assert_refused_at(text_hello, sizeof(text_hello), true, 1, -EACCES, 2);
}

/* Byte by byte, as 5.3 puts it. */
static void unmask_ref(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= mask[(offset + i) % 4];
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
}

Test(ws_frame, unmask_matches_the_byte_by_byte_rule_at_any_offset_and_alignment)
{
    static const uint8_t mask[4] = {0x01, 0x80, 0xFE, 0x5A};
    uint8_t src[80], got[96], want[80];
    fill(src, sizeof(src), 7);
    for (size_t align = 0; align < 8; align++)
        for (uint64_t offset = 0; offset < 9; offset++)
            for (size_t n = 0; n <= 72; n++) {
                memcpy(got + align, src, n);
                memcpy(want, src, n);
                slb_ws_unmask(got + align, n, mask, offset);
                unmask_ref(want, n, mask, offset);
                cr_assert_eq(memcmp(got + align, want, n), 0, "align %zu offset %lu n %zu", align,
                             (unsigned long)offset, n);
            }
    /* An offset past 4 GiB: only its remainder mod 4 counts. */
    memcpy(got, src, 40);
    memcpy(want, src, 40);
    slb_ws_unmask(got, 40, mask, (1ull << 32) + 3);
    unmask_ref(want, 40, mask, 3);
    cr_assert_eq(memcmp(got, want, 40), 0);
}

Test(ws_frame, unmask_in_pieces_equals_unmask_whole)
{
    static const uint8_t mask[4] = {0xDE, 0xAD, 0xBE, 0xEF};
    uint8_t src[300], whole[300], pieces[300];
    fill(src, sizeof(src), 42);
    memcpy(whole, src, sizeof(src));
    slb_ws_unmask(whole, sizeof(whole), mask, 0);
    for (size_t a = 0; a <= sizeof(src); a += 1)
        for (size_t b = a; b <= sizeof(src); b += 37) {
            memcpy(pieces, src, sizeof(src));
            slb_ws_unmask(pieces, a, mask, 0);
            slb_ws_unmask(pieces + a, b - a, mask, a);
            slb_ws_unmask(pieces + b, sizeof(src) - b, mask, b);
            cr_assert_eq(memcmp(pieces, whole, sizeof(src)), 0, "split at %zu and %zu", a, b);
        }
    /* Masking is its own inverse. */
    slb_ws_unmask(whole, sizeof(whole), mask, 0);
    cr_assert_eq(memcmp(whole, src, sizeof(src)), 0);
}

Test(ws_frame, header_writer_round_trips_through_the_parser)
{
    static const uint64_t lens[] = {0,     1,     125,    126,        127,
                                    65535, 65536, 100000, 1ull << 32, UINT64_MAX >> 1};
    static const size_t hdr_lens[] = {2, 2, 2, 4, 4, 4, 10, 10, 10, 10};
    static const uint8_t data_ops[] = {SLB_WS_CONT, SLB_WS_TEXT, SLB_WS_BINARY};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        for (size_t o = 0; o < sizeof(data_ops); o++)
            for (int fin = 0; fin <= 1; fin++) {
                uint8_t out[SLB_WS_HDR_MAX + 1];
                memset(out, 0xEE, sizeof(out));
                size_t n = slb_ws_frame_header(out, data_ops[o], fin, lens[i]);
                cr_assert_eq(n, hdr_lens[i], "length %lu", (unsigned long)lens[i]);
                cr_assert_eq(out[n], 0xEE, "wrote past its length");
                struct slb_ws_frame_hdr h = assert_valid_everywhere(out, n, false, NO_MAX);
                assert_hdr(&h, fin, data_ops[o], false, (unsigned)n, lens[i]);
            }
    static const uint8_t control_ops[] = {SLB_WS_CLOSE, SLB_WS_PING, SLB_WS_PONG};
    for (size_t o = 0; o < sizeof(control_ops); o++)
        for (uint64_t len = 0; len <= SLB_WS_CONTROL_MAX; len += 25) {
            uint8_t out[SLB_WS_HDR_MAX];
            size_t n = slb_ws_frame_header(out, control_ops[o], true, len);
            cr_assert_eq(n, 2);
            struct slb_ws_frame_hdr h = assert_valid_everywhere(out, n, false, NO_MAX);
            assert_hdr(&h, true, control_ops[o], false, 2, len);
        }
}

Test(ws_frame, header_writer_aborts_on_a_reserved_opcode, .signal = SIGABRT)
{
    uint8_t out[SLB_WS_HDR_MAX];
    slb_ws_frame_header(out, 3, true, 0);
}

Test(ws_frame, header_writer_aborts_on_a_fragmented_control_frame, .signal = SIGABRT)
{
    uint8_t out[SLB_WS_HDR_MAX];
    slb_ws_frame_header(out, SLB_WS_PING, false, 0);
}

Test(ws_frame, header_writer_aborts_on_a_control_frame_over_125, .signal = SIGABRT)
{
    uint8_t out[SLB_WS_HDR_MAX];
    slb_ws_frame_header(out, SLB_WS_CLOSE, true, 126);
}

Test(ws_frame, header_writer_aborts_on_a_length_with_the_top_bit, .signal = SIGABRT)
{
    uint8_t out[SLB_WS_HDR_MAX];
    slb_ws_frame_header(out, SLB_WS_BINARY, true, 1ull << 63);
}

static int close_parse(const void *payload, size_t len, uint16_t *code)
{
    *code = 0xA5A5;
    int rc = slb_ws_close_parse(guarded(payload, len), len, code);
    if (rc != 0)
        cr_assert_eq(*code, 0xA5A5, "*code written though rc %d", rc);
    return rc;
}

Test(ws_frame, close_payload_empty_reads_as_no_status)
{
    uint16_t code;
    cr_assert_eq(close_parse("", 0, &code), 0);
    cr_assert_eq(code, 1005);
}

Test(ws_frame, close_payload_of_one_byte_is_refused)
{
    uint16_t code;
    cr_assert_eq(close_parse("\x03", 1, &code), -EPROTO);
}

Test(ws_frame, close_payload_over_125_bytes_is_refused)
{
    uint8_t p[126] = {0x03, 0xE8};
    memset(p + 2, 'a', sizeof(p) - 2);
    uint16_t code;
    cr_assert_eq(close_parse(p, 125, &code), 0);
    cr_assert_eq(close_parse(p, 126, &code), -EPROTO);
}

Test(ws_frame, close_codes_valid_on_the_wire_are_taken)
{
    static const uint16_t ok[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                  1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint8_t p[2] = {(uint8_t)(ok[i] >> 8), (uint8_t)ok[i]};
        uint16_t code;
        cr_assert_eq(close_parse(p, 2, &code), 0, "code %u", ok[i]);
        cr_assert_eq(code, ok[i]);
    }
}

Test(ws_frame, close_codes_not_valid_on_the_wire_are_refused)
{
    static const uint16_t bad[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                   1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t p[2] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
        uint16_t code;
        cr_assert_eq(close_parse(p, 2, &code), -EPROTO, "code %u", bad[i]);
    }
}

Test(ws_frame, close_reason_must_be_utf8)
{
    uint16_t code;
    static const char good[] = "\x03\xE8normal \xE2\x98\x83 \xF0\x9F\x98\x80";
    cr_assert_eq(close_parse(good, sizeof(good) - 1, &code), 0);
    cr_assert_eq(code, 1000);
    static const char overlong[] = "\x03\xE8\xC0\xAF";
    cr_assert_eq(close_parse(overlong, sizeof(overlong) - 1, &code), -EPROTO);
    static const char cut[] = "\x03\xE8ok \xE2\x98";
    cr_assert_eq(close_parse(cut, sizeof(cut) - 1, &code), -EPROTO);
    static const char lone[] = "\x0B\xB8\x80";
    cr_assert_eq(close_parse(lone, sizeof(lone) - 1, &code), -EPROTO);
}

/* Parses a close frame we built, as the peer would (unmasked: we are the server). */
static void assert_close_frame(const uint8_t *f, size_t n, uint16_t code, const char *reason)
{
    struct slb_ws_frame_hdr h;
    cr_assert_eq(parse(f, n, false, NO_MAX, &h), 2);
    assert_hdr(&h, true, SLB_WS_CLOSE, false, 2, n - 2);
    uint16_t got;
    cr_assert_eq(close_parse(f + 2, n - 2, &got), 0);
    cr_assert_eq(got, code);
    if (code != 1005) {
        cr_assert_eq(n - 4, strlen(reason));
        cr_assert_eq(memcmp(f + 4, reason, n - 4), 0);
    }
}

Test(ws_frame, close_build_writes_code_and_reason)
{
    uint8_t out[SLB_WS_HDR_MAX + SLB_WS_CONTROL_MAX];
    size_t n = slb_ws_close_build(out, sizeof(out), 1000, "bye");
    cr_assert_eq(n, 7);
    static const uint8_t want[] = {0x88, 0x05, 0x03, 0xE8, 'b', 'y', 'e'};
    cr_assert_eq(memcmp(out, want, sizeof(want)), 0);
    assert_close_frame(out, n, 1000, "bye");
    n = slb_ws_close_build(out, sizeof(out), 1009, NULL);
    cr_assert_eq(n, 4);
    assert_close_frame(out, n, 1009, "");
    n = slb_ws_close_build(out, sizeof(out), 4000, "");
    cr_assert_eq(n, 4);
    assert_close_frame(out, n, 4000, "");
}

Test(ws_frame, close_build_with_no_status_sends_an_empty_close)
{
    uint8_t out[8];
    cr_assert_eq(slb_ws_close_build(out, sizeof(out), 1005, "ignored"), 2);
    cr_assert_eq(memcmp(out, "\x88\x00", 2), 0);
    assert_close_frame(out, 2, 1005, NULL);
    cr_assert_eq(slb_ws_close_build(out, 1, 1005, NULL), 0);
}

Test(ws_frame, close_build_cuts_a_long_reason_at_a_character_boundary)
{
    /* 62 two-byte characters: 124 bytes, one more than a close frame has room for. */
    char reason[2 * 62 + 1];
    for (size_t i = 0; i < 62; i++)
        memcpy(reason + 2 * i, "\xC3\xA9", 2);
    reason[sizeof(reason) - 1] = '\0';
    uint8_t out[SLB_WS_HDR_MAX + SLB_WS_CONTROL_MAX + 16];
    size_t n = slb_ws_close_build(out, sizeof(out), 1001, reason);
    cr_assert_eq(n, 2 + 2 + 122);
    reason[122] = '\0';
    assert_close_frame(out, n, 1001, reason);
    /* A small buffer cuts sooner, still whole characters: 4 + 5 leaves 2 characters. */
    memset(out, 0xEE, sizeof(out));
    n = slb_ws_close_build(out, 9, 1001, reason);
    cr_assert_eq(n, 8);
    cr_assert_eq(out[8], 0xEE, "wrote past cap");
    reason[4] = '\0';
    assert_close_frame(out, n, 1001, reason);
    /* ASCII fills to the last byte. */
    char ascii[200];
    memset(ascii, 'x', sizeof(ascii) - 1);
    ascii[sizeof(ascii) - 1] = '\0';
    n = slb_ws_close_build(out, sizeof(out), 1000, ascii);
    cr_assert_eq(n, 2 + SLB_WS_CONTROL_MAX);
    ascii[123] = '\0';
    assert_close_frame(out, n, 1000, ascii);
}

Test(ws_frame, close_build_leaves_out_a_reason_that_is_not_utf8)
{
    uint8_t out[32];
    size_t n = slb_ws_close_build(out, sizeof(out), 1002, "bad \xC0\xAF");
    cr_assert_eq(n, 4);
    assert_close_frame(out, n, 1002, "");
}

Test(ws_frame, close_build_needs_room_for_header_and_code)
{
    uint8_t out[4];
    memset(out, 0xEE, sizeof(out));
    cr_assert_eq(slb_ws_close_build(out, 3, 1000, "x"), 0);
    cr_assert_eq(slb_ws_close_build(out, 4, 1000, "x"), 4);
    assert_close_frame(out, 4, 1000, "");
}

Test(ws_frame, close_build_aborts_on_a_code_the_peer_must_refuse, .signal = SIGABRT)
{
    uint8_t out[16];
    slb_ws_close_build(out, sizeof(out), 1006, NULL);
}

static bool utf8(const char *s, size_t n)
{
    return slb_ws_utf8_valid(guarded(s, n), n);
}

#define UTF8_OK(lit)  cr_assert(utf8(lit, sizeof(lit) - 1), "refused: %s", #lit)
#define UTF8_BAD(lit) cr_assert_not(utf8(lit, sizeof(lit) - 1), "taken: %s", #lit)

Test(ws_frame, utf8_takes_every_well_formed_length)
{
    UTF8_OK("");
    UTF8_OK("INVITE sip:bob@example.com SIP/2.0\r\n");
    UTF8_OK("\x00\x7F");
    UTF8_OK("\xC2\x80");         /* U+0080 */
    UTF8_OK("\xDF\xBF");         /* U+07FF */
    UTF8_OK("\xE0\xA0\x80");     /* U+0800 */
    UTF8_OK("\xED\x9F\xBF");     /* U+D7FF, just below the surrogates */
    UTF8_OK("\xEE\x80\x80");     /* U+E000, just above them */
    UTF8_OK("\xEF\xBF\xBF");     /* U+FFFF */
    UTF8_OK("\xF0\x90\x80\x80"); /* U+10000 */
    UTF8_OK("\xF0\x9F\x98\x80"); /* U+1F600 */
    UTF8_OK("\xF4\x8F\xBF\xBF"); /* U+10FFFF */
    UTF8_OK("Gr\xC3\xBC\xC3\x9Fte \xE2\x82\xAC\xF0\x9F\x8E\x89 ok");
}

Test(ws_frame, utf8_refuses_overlong_forms)
{
    UTF8_BAD("\xC0\x80");
    UTF8_BAD("\xC0\xAF");
    UTF8_BAD("\xC1\xBF");
    UTF8_BAD("\xE0\x80\x80");
    UTF8_BAD("\xE0\x9F\xBF");
    UTF8_BAD("\xF0\x80\x80\x80");
    UTF8_BAD("\xF0\x8F\xBF\xBF");
}

Test(ws_frame, utf8_refuses_surrogates)
{
    UTF8_BAD("\xED\xA0\x80");             /* U+D800 */
    UTF8_BAD("\xED\xAD\xBF");             /* U+DB7F */
    UTF8_BAD("\xED\xB0\x80");             /* U+DC00 */
    UTF8_BAD("\xED\xBF\xBF");             /* U+DFFF */
    UTF8_BAD("\xED\xA0\xBD\xED\xB8\x80"); /* a CESU-8 pair */
}

Test(ws_frame, utf8_refuses_code_points_past_10ffff)
{
    UTF8_BAD("\xF4\x90\x80\x80"); /* U+110000 */
    UTF8_BAD("\xF5\x80\x80\x80");
    UTF8_BAD("\xF7\xBF\xBF\xBF");
    UTF8_BAD("\xF8\x88\x80\x80\x80");
    UTF8_BAD("\xFE");
    UTF8_BAD("\xFF");
}

Test(ws_frame, utf8_refuses_truncated_and_broken_sequences)
{
    UTF8_BAD("\xC3");
    UTF8_BAD("\xE2\x82");
    UTF8_BAD("\xF0\x9F\x98");
    UTF8_BAD("ok\xF0");
    UTF8_BAD("\xE2\x82z");
    UTF8_BAD("\xF0\x9F\x98z");
    UTF8_BAD("\xC3\xC3\xA9");
    UTF8_BAD("\x80");
    UTF8_BAD("a\xBFz");
    UTF8_BAD("\xE2\x82\xAC\x82");
}

Test(ws_frame, utf8_checks_every_position_around_the_ascii_words)
{
    /* A bad byte, then a good 4-byte character, at each position of an ASCII run, so both
     * the word-at-a-time path and the byte path meet them at every alignment. */
    char s[48];
    for (size_t at = 0; at < sizeof(s); at++) {
        memset(s, 'a', sizeof(s));
        s[at] = (char)0xFF;
        cr_assert_not(utf8(s, sizeof(s)), "bad byte at %zu", at);
        if (at + 4 <= sizeof(s)) {
            memset(s, 'a', sizeof(s));
            memcpy(s + at, "\xF0\x9F\x98\x80", 4);
            cr_assert(utf8(s, sizeof(s)), "good character at %zu", at);
            cr_assert_not(utf8(s, at + 3), "character cut at %zu", at);
        }
    }
}

static struct slb_ws_frame_hdr data_frame(uint8_t opcode, bool fin, uint64_t len)
{
    struct slb_ws_frame_hdr h = {.fin = fin, .opcode = opcode, .hdr_len = 2, .payload_len = len};
    return h;
}

Test(ws_frame, msg_single_frames_end_their_message)
{
    struct slb_ws_msg m = {0};
    struct slb_ws_frame_hdr h = data_frame(SLB_WS_TEXT, true, 10);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 1);
    cr_assert_not(m.in_message);
    cr_assert_eq(m.opcode, SLB_WS_TEXT);
    cr_assert_eq(m.len, 10);
    h = data_frame(SLB_WS_BINARY, true, 0);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 1);
    cr_assert_eq(m.opcode, SLB_WS_BINARY);
    cr_assert_eq(m.len, 0, "a new message starts from zero");
}

Test(ws_frame, msg_fragments_add_up)
{
    struct slb_ws_msg m = {0};
    struct slb_ws_frame_hdr h = data_frame(SLB_WS_BINARY, false, 40);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 0);
    h = data_frame(SLB_WS_CONT, false, 0);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 0);
    h = data_frame(SLB_WS_CONT, false, 35);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 0);
    cr_assert(m.in_message);
    cr_assert_eq(m.len, 75);
    h = data_frame(SLB_WS_CONT, true, 25);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 1, "exactly max_msg is fine");
    cr_assert_not(m.in_message);
    cr_assert_eq(m.opcode, SLB_WS_BINARY);
    cr_assert_eq(m.len, 100);
}

Test(ws_frame, msg_continuation_without_a_message_is_refused)
{
    struct slb_ws_msg m = {0};
    struct slb_ws_frame_hdr h = data_frame(SLB_WS_CONT, true, 1);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), -EPROTO);
    /* Nor after a message has ended. */
    h = data_frame(SLB_WS_TEXT, true, 1);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 1);
    h = data_frame(SLB_WS_CONT, false, 1);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), -EPROTO);
}

Test(ws_frame, msg_new_message_inside_another_is_refused)
{
    static const uint8_t starts[] = {SLB_WS_TEXT, SLB_WS_BINARY};
    for (size_t i = 0; i < 2; i++) {
        struct slb_ws_msg m = {0};
        struct slb_ws_frame_hdr h = data_frame(SLB_WS_TEXT, false, 5);
        cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 0);
        struct slb_ws_msg before = m;
        h = data_frame(starts[i], true, 5);
        cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), -EPROTO);
        cr_assert_eq(memcmp(&m, &before, sizeof(m)), 0, "m changed on error");
    }
}

Test(ws_frame, msg_over_max_is_refused_without_overflow)
{
    struct slb_ws_msg m = {0};
    struct slb_ws_frame_hdr h = data_frame(SLB_WS_TEXT, true, 101);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), -EMSGSIZE);
    cr_assert_not(m.in_message, "m changed on error");
    h = data_frame(SLB_WS_TEXT, false, 60);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 0);
    h = data_frame(SLB_WS_CONT, true, 41);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), -EMSGSIZE);
    cr_assert_eq(m.len, 60, "m changed on error");
    /* A length that would wrap the sum. */
    h = data_frame(SLB_WS_CONT, true, UINT64_MAX - 10);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, UINT64_MAX - 20), -EMSGSIZE);
    cr_assert_eq(m.len, 60);
}

Test(ws_frame, msg_control_frames_are_not_its_business)
{
    struct slb_ws_msg m = {0};
    struct slb_ws_frame_hdr h = data_frame(SLB_WS_TEXT, false, 5);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 0);
    /* A ping between fragments is the caller's to answer; handed here, it is refused and
     * the message goes on. */
    h = data_frame(SLB_WS_PING, true, 5);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), -EINVAL);
    h = data_frame(SLB_WS_CONT, true, 5);
    cr_assert_eq(slb_ws_msg_frame(&m, &h, 100), 1);
    cr_assert_eq(m.len, 10);
}
