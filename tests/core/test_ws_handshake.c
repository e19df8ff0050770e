/* The WebSocket opening handshake (core/ws_handshake) and what it is built on: SHA-1
 * (core/sha1) and base64 (core/base64) against their published vectors; requests from
 * browsers and their variations, the refusals and the status each gets, need-more on
 * every prefix; the origin allow-list; the bytes of our answers. Parser input sits
 * against a PROT_NONE page so an over-read faults. */
#include "core/ws_handshake.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/base64.h"
#include "core/sha1.h"
#include "tests/support/guard.h"

/* The input right before a PROT_NONE page (tests/support/guard): any over-read faults.
 * Valid until the next call. */
static const char *guarded(const void *src, size_t n)
{
    return (const char *)guard_place(src, n);
}

/* Parses buf[0, n) from the guarded copy; checks *h is untouched unless it succeeded, and
 * that a success's slices lie inside the request. */
static int parse(const void *buf, size_t n, struct slb_ws_handshake *h)
{
    struct slb_ws_handshake before;
    memset(h, 0xA5, sizeof(*h));
    memcpy(&before, h, sizeof(before));
    const char *g = guarded(buf, n);
    int rc = slb_ws_handshake_parse(g, n, h);
    if (rc <= 0) {
        cr_assert_eq(memcmp(&before, h, sizeof(before)), 0, "*h written though rc %d", rc);
        return rc;
    }
    cr_assert_eq(h->request_len, (size_t)rc);
    cr_assert_leq((size_t)rc, n);
    cr_assert(h->host >= g && h->host + h->host_len <= g + rc);
    cr_assert(h->path >= g && h->path + h->path_len <= g + rc);
    if (h->origin)
        cr_assert(h->origin >= g && h->origin + h->origin_len <= g + rc);
    cr_assert_eq(strlen(h->accept), 28);
    return rc;
}

static int parse_str(const char *s)
{
    struct slb_ws_handshake h;
    return parse(s, strlen(s), &h);
}

static bool slice_eq(const char *p, size_t n, const char *want)
{
    return p != NULL && n == strlen(want) && memcmp(p, want, n) == 0;
}

/* RFC 6455 1.3's example key and the accept value it gives. */
#define KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* What Chrome sends to wss://sip.example.com/ws from https://app.example.com, with
 * Sec-WebSocket-Protocol from new WebSocket(url, "sip"), the key being RFC 6455's. */
static const char chrome[] =
    "GET /ws HTTP/1.1\r\n"
    "Host: sip.example.com\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36\r\n"
    "Upgrade: websocket\r\n"
    "Origin: https://app.example.com\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Cookie: session=8f14e45fceea167a5a36dedd4bea2543\r\n"
    "Sec-WebSocket-Key: " KEY "\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "Sec-WebSocket-Protocol: sip\r\n"
    "\r\n";

/* A minimal valid request with head inserted after the request line and tail before the
 * empty line; either may replace a required field by leaving it out (see omit). */
static char req[SLB_WS_HANDSHAKE_MAX * 2];

enum {
    OMIT_HOST = 1,
    OMIT_UPGRADE = 2,
    OMIT_CONNECTION = 4,
    OMIT_KEY = 8,
    OMIT_VERSION = 16,
    OMIT_PROTOCOL = 32,
};

static const char *build(const char *request_line, unsigned omit, const char *extra)
{
    snprintf(req, sizeof(req), "%s\r\n%s%s%s%s%s%s%s\r\n", request_line,
             omit & OMIT_HOST ? "" : "Host: sip.example.com\r\n",
             omit & OMIT_UPGRADE ? "" : "Upgrade: websocket\r\n",
             omit & OMIT_CONNECTION ? "" : "Connection: Upgrade\r\n",
             omit & OMIT_KEY ? "" : "Sec-WebSocket-Key: " KEY "\r\n",
             omit & OMIT_VERSION ? "" : "Sec-WebSocket-Version: 13\r\n",
             omit & OMIT_PROTOCOL ? "" : "Sec-WebSocket-Protocol: sip\r\n", extra);
    return req;
}

static const char *with(unsigned omit, const char *extra)
{
    return build("GET / HTTP/1.1", omit, extra);
}

static void assert_status(const char *request, int want)
{
    int rc = parse_str(request);
    cr_assert_eq(rc, want, "got %d, want %d for:\n%s", rc, want, request);
}

static void assert_accepted(const char *request)
{
    assert_status(request, (int)strlen(request));
}

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void assert_sha1(const char *msg, const char *want_hex)
{
    uint8_t d[SLB_SHA1_LEN];
    char got[2 * SLB_SHA1_LEN + 1];
    slb_sha1(msg, strlen(msg), d);
    hex(d, sizeof(d), got);
    cr_assert_str_eq(got, want_hex, "SHA-1(\"%s\")", msg);
}

Test(sha1, fips_180_vectors)
{
    assert_sha1("abc", "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_sha1("", "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    assert_sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    assert_sha1("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                "klmnopqrlmnopqrsmnopqrstnopqrstu",
                "a49b2446a02c645bf419f995b67091253a04a259");
}

Test(sha1, one_million_a_by_incremental_updates)
{
    /* Chunks of 1000 then odd sizes, so updates start and end mid-block. */
    char chunk[1000];
    memset(chunk, 'a', sizeof(chunk));
    struct slb_sha1_ctx ctx;
    slb_sha1_init(&ctx);
    size_t total = 0;
    for (size_t step = 1; total < 1000000; step = step % 997 + 1) {
        size_t n = 1000000 - total < step ? 1000000 - total : step;
        slb_sha1_update(&ctx, chunk, n);
        total += n;
    }
    uint8_t d[SLB_SHA1_LEN];
    char got[2 * SLB_SHA1_LEN + 1];
    slb_sha1_final(&ctx, d);
    hex(d, sizeof(d), got);
    cr_assert_str_eq(got, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

Test(sha1, any_split_gives_the_one_shot_digest)
{
    /* Lengths around the padding boundaries (55, 56, 63, 64) and split at every point. */
    uint8_t msg[130];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 7 + 1);
    static const size_t lens[] = {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 130};
    for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
        uint8_t want[SLB_SHA1_LEN];
        slb_sha1(msg, lens[l], want);
        for (size_t cut = 0; cut <= lens[l]; cut++) {
            struct slb_sha1_ctx ctx;
            uint8_t got[SLB_SHA1_LEN];
            slb_sha1_init(&ctx);
            slb_sha1_update(&ctx, msg, cut);
            slb_sha1_update(&ctx, NULL, 0);
            slb_sha1_update(&ctx, msg + cut, lens[l] - cut);
            slb_sha1_final(&ctx, got);
            cr_assert_eq(memcmp(got, want, sizeof(want)), 0, "len %zu cut %zu", lens[l], cut);
        }
    }
}

Test(base64, rfc_4648_vectors_both_ways)
{
    static const char *const pairs[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        const char *raw = pairs[i][0], *enc = pairs[i][1];
        char out[16];
        size_t n = slb_base64_encode((const uint8_t *)raw, strlen(raw), out);
        cr_assert_eq(n, strlen(enc));
        cr_assert_eq(n, SLB_BASE64_ENCODED_LEN(strlen(raw)));
        cr_assert_eq(memcmp(out, enc, n), 0, "encoding \"%s\"", raw);
        uint8_t dec[16];
        cr_assert_eq(slb_base64_decode(enc, strlen(enc), dec, sizeof(dec)), (int)strlen(raw));
        cr_assert_eq(memcmp(dec, raw, strlen(raw)), 0, "decoding \"%s\"", enc);
    }
}

Test(base64, every_byte_value_round_trips_at_every_length)
{
    uint8_t raw[256], dec[256];
    char enc[SLB_BASE64_ENCODED_LEN(256)];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(255 - i);
    for (size_t len = 0; len <= sizeof(raw); len++) {
        size_t n = slb_base64_encode(raw + sizeof(raw) - len, len, enc);
        cr_assert_eq(n, SLB_BASE64_ENCODED_LEN(len));
        cr_assert_eq(slb_base64_decode(enc, n, dec, len), (int)len, "length %zu", len);
        cr_assert_eq(memcmp(dec, raw + sizeof(raw) - len, len), 0);
    }
}

/* Each a base64 text that strict decoding refuses, and why. */
struct bad_b64 {
    const char *text;
    size_t len;
    const char *why;
};
#define BAD_B64(s, why)                                                                            \
    {                                                                                              \
        s, sizeof(s) - 1, why                                                                      \
    }

Test(base64, decoding_is_strict)
{
    static const struct bad_b64 bad[] = {
        BAD_B64("Zg", "padding is required"),
        BAD_B64("Zg=", "length not a multiple of 4"),
        BAD_B64("Zm9", "length not a multiple of 4"),
        BAD_B64("Zm9vY", "length not a multiple of 4"),
        BAD_B64("Zm9v Yg==", "whitespace"),
        BAD_B64("Zm9vYg== ", "whitespace"),
        BAD_B64(" Zm9vYg=", "whitespace"),
        BAD_B64("Zm9v\r\nYg==", "a line break"),
        BAD_B64("Zm9v\tYg=", "whitespace"),
        BAD_B64("Zh==", "bits under the padding must be zero"),
        BAD_B64("Zm9=", "bits under the padding must be zero"),
        BAD_B64("Zg==Zg==", "padding only at the very end"),
        BAD_B64("=Zg=", "padding only at the very end"),
        BAD_B64("Z===", "three padding characters"),
        BAD_B64("====", "nothing but padding"),
        BAD_B64("Zm=v", "padding only at the very end"),
        BAD_B64("Zm9v!A==", "off the alphabet"),
        BAD_B64("Zm9v-_8=", "the URL-safe alphabet"),
        BAD_B64("Zm9v\0Yg=", "a NUL"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t out[16];
        cr_assert_eq(slb_base64_decode(bad[i].text, bad[i].len, out, sizeof(out)), -EINVAL,
                     "\"%s\": %s", bad[i].text, bad[i].why);
    }
}

Test(base64, decoding_needs_room_for_the_result)
{
    uint8_t out[6];
    cr_assert_eq(slb_base64_decode("Zm9vYmFy", 8, out, 5), -ENOSPC);
    cr_assert_eq(slb_base64_decode("Zm9vYmFy", 8, out, 6), 6);
    cr_assert_eq(slb_base64_decode("Zm9vYg==", 8, out, 3), -ENOSPC);
    cr_assert_eq(slb_base64_decode("Zm9vYg==", 8, out, 4), 4);
    cr_assert_eq(slb_base64_decode("", 0, NULL, 0), 0);
}

Test(ws_handshake, rfc_6455_example_key_gives_its_accept_value)
{
    struct slb_ws_handshake h;
    const char *r = with(0, "");
    cr_assert_eq(parse(r, strlen(r), &h), (int)strlen(r));
    cr_assert_str_eq(h.accept, ACCEPT);
    /* And another key, worked out independently (Python hashlib and base64). */
    r = build("GET / HTTP/1.1", OMIT_KEY, "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n");
    cr_assert_eq(parse(r, strlen(r), &h), (int)strlen(r));
    cr_assert_str_eq(h.accept, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

Test(ws_handshake, chrome_request_is_accepted_with_its_fields)
{
    struct slb_ws_handshake h;
    size_t n = strlen(chrome);
    cr_assert_eq(parse(chrome, n, &h), (int)n);
    cr_assert_eq(h.request_len, n);
    cr_assert(slice_eq(h.host, h.host_len, "sip.example.com"));
    cr_assert(slice_eq(h.origin, h.origin_len, "https://app.example.com"));
    cr_assert(slice_eq(h.path, h.path_len, "/ws"));
    cr_assert_str_eq(h.accept, ACCEPT);
}

Test(ws_handshake, every_proper_prefix_needs_more)
{
    struct slb_ws_handshake h;
    size_t n = strlen(chrome);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(parse(chrome, k, &h), 0, "prefix of %zu of %zu bytes", k, n);
    /* Even a prefix that already shows a fault: nothing is judged before the end. */
    const char *post = "POST / HTTP/1.1\r\nHost: a\r\n\r\n";
    for (size_t k = 0; k < strlen(post); k++)
        cr_assert_eq(parse(post, k, &h), 0);
    cr_assert_eq(parse(post, strlen(post), &h), -400);
}

Test(ws_handshake, bytes_after_the_request_are_not_counted)
{
    /* The client may send its first frame (a masked REGISTER) right behind the request. */
    char buf[4096];
    size_t n = strlen(chrome);
    memcpy(buf, chrome, n);
    memcpy(buf + n, "\x81\xFE\x01\x80\x12\x34\x56\x78REGISTER", 16);
    struct slb_ws_handshake h, whole;
    cr_assert_eq(parse(chrome, n, &whole), (int)n);
    cr_assert_eq(parse(buf, n + 16, &h), (int)n);
    cr_assert_eq(h.request_len, n);
    cr_assert_str_eq(h.accept, whole.accept);
    /* Another whole request behind it changes nothing either. */
    memcpy(buf + n, chrome, n);
    cr_assert_eq(parse(buf, 2 * n, &h), (int)n);
}

Test(ws_handshake, header_names_are_case_insensitive)
{
    assert_accepted("GET /sip HTTP/1.1\r\n"
                    "HOST: sip.example.com\r\n"
                    "uPGRADE: websocket\r\n"
                    "CONNECTION: Upgrade\r\n"
                    "sec-websocket-key: " KEY "\r\n"
                    "SEC-WEBSOCKET-VERSION: 13\r\n"
                    "Sec-Websocket-Protocol: sip\r\n"
                    "ORIGIN: https://app.example.com\r\n"
                    "\r\n");
}

Test(ws_handshake, upgrade_and_connection_are_case_insensitive_token_lists)
{
    /* Firefox sends "keep-alive, Upgrade". */
    const char *bare = build("GET / HTTP/1.1", OMIT_UPGRADE | OMIT_CONNECTION, "");
    static const char *const good[][2] = {
        {"Upgrade: websocket", "Connection: keep-alive, Upgrade"},
        {"Upgrade: WebSocket", "Connection: upgrade"},
        {"Upgrade: WEBSOCKET", "Connection: UPGRADE"},
        {"Upgrade: h2c, websocket", "Connection: keep-alive,Upgrade"},
        {"Upgrade:websocket", "Connection:\tUpgrade\t,\tkeep-alive"},
        {"Upgrade: , websocket ,", "Connection: ,,Upgrade,,"},
    };
    char r[1024];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(r, sizeof(r), "%.*s%s\r\n%s\r\n\r\n", (int)strlen(bare) - 2, bare, good[i][0],
                 good[i][1]);
        assert_accepted(r);
    }
    /* Across lines (RFC 7230 3.2.2). */
    snprintf(r, sizeof(r),
             "%.*sUpgrade: h2c\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\n\r\n",
             (int)strlen(bare) - 2, bare);
    assert_accepted(r);
    static const char *const bad[][2] = {
        {"Upgrade: h2c", "Connection: Upgrade"},
        {"Upgrade: websocket2", "Connection: Upgrade"},
        {"Upgrade: websocket/13", "Connection: Upgrade"},
        {"Upgrade: web socket", "Connection: Upgrade"},
        {"Upgrade: websocket", "Connection: keep-alive"},
        {"Upgrade: websocket", "Connection: upgraded"},
        {"Upgrade: websocket", "Connection: Upgrade-Insecure-Requests"},
        {"Upgrade: websocket", "Connection: close upgrade"},
        {"Upgrade:", "Connection: Upgrade"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(r, sizeof(r), "%.*s%s\r\n%s\r\n\r\n", (int)strlen(bare) - 2, bare, bad[i][0],
                 bad[i][1]);
        assert_status(r, -400);
    }
}

Test(ws_handshake, missing_required_fields_are_malformed)
{
    assert_status(with(OMIT_HOST, ""), -400);
    assert_status(with(OMIT_UPGRADE, ""), -400);
    assert_status(with(OMIT_CONNECTION, ""), -400);
    assert_status(with(OMIT_KEY, ""), -400);
    assert_status(with(OMIT_VERSION, ""), -400);
    assert_status(build("GET / HTTP/1.1", OMIT_HOST, "Host: \r\n"), -400);
    assert_status(build("GET / HTTP/1.1", OMIT_HOST, "Host:\t \r\n"), -400);
    /* RFC 7230 5.4: a Host that cannot be an authority is refused too. */
    assert_status(build("GET / HTTP/1.1", OMIT_HOST, "Host: sip example.com\r\n"), -400);
    assert_status(build("GET / HTTP/1.1", OMIT_HOST, "Host: user@sip.example.com\r\n"), -400);
    assert_status(build("GET / HTTP/1.1", OMIT_HOST, "Host: sip.example.com/ws\r\n"), -400);
    assert_status(build("GET / HTTP/1.1", OMIT_HOST, "Host: caf\xC3\xA9.example\r\n"), -400);
    assert_accepted(build("GET / HTTP/1.1", OMIT_HOST, "Host: [2001:db8::1]:8443\r\n"));
    assert_accepted(build("GET / HTTP/1.1", OMIT_HOST, "Host: xn--caf-dma.example\r\n"));
    assert_status("GET / HTTP/1.1\r\n\r\n", -400);
}

Test(ws_handshake, duplicated_singletons_are_malformed)
{
    assert_status(with(0, "Host: sip.example.com\r\n"), -400);
    assert_status(with(0, "host: other.example.com\r\n"), -400);
    assert_status(with(0, "Sec-WebSocket-Key: " KEY "\r\n"), -400);
    assert_status(with(0, "Sec-WebSocket-Version: 13\r\n"), -400);
    assert_status(with(0, "Origin: https://a.example\r\nOrigin: https://b.example\r\n"), -400);
    /* Lists may repeat. */
    assert_accepted(with(0, "Sec-WebSocket-Protocol: sip\r\nUpgrade: websocket\r\n"));
}

Test(ws_handshake, obs_fold_is_refused)
{
    assert_status(with(OMIT_PROTOCOL, "Sec-WebSocket-Protocol: chat,\r\n sip\r\n"), -400);
    assert_status(with(OMIT_PROTOCOL, "Sec-WebSocket-Protocol: sip\r\n\tfoo\r\n"), -400);
    assert_status(with(OMIT_HOST, "Host:\r\n sip.example.com\r\n"), -400);
    /* Folded right after the request line. */
    static char r[sizeof(req) + 64];
    snprintf(r, sizeof(r), "GET / HTTP/1.1\r\n X-Folded: yes\r\n%s", with(0, "") + 16);
    assert_status(r, -400);
}

Test(ws_handshake, field_lines_off_the_grammar_are_malformed)
{
    static const char *const bad[] = {
        "Host : sip.example.com\r\n", /* whitespace before the colon (RFC 7230 3.2.4) */
        "X-Thing\t: 1\r\n",
        "X-No-Colon\r\n",
        ": no name\r\n",
        "X(Bad): 1\r\n", /* not a token */
        "X-Ctl: a\001b\r\n",
        "X-Del: a\177b\r\n",
        "X-Lf: a\nb\r\n", /* a bare LF or CR inside a line */
        "X-Cr: a\rb\r\n",
        "X\nY: 1\r\n",
        "Transfer-Encoding: chunked\r\n", /* a body would hide among the frames */
        "Content-Length: 5\r\n",
        "Content-Length: 00\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_status(with(0, bad[i]), -400);
    /* NUL inside a value. */
    char r[1024];
    const char *base = with(0, "X-Nul: a_b\r\n");
    size_t n = strlen(base);
    memcpy(r, base, n);
    *(char *)memchr(r, '_', n) = '\0';
    struct slb_ws_handshake h;
    cr_assert_eq(parse(r, n, &h), -400);
    /* What is allowed: obs-text, empty values, OWS, Content-Length 0. */
    assert_accepted(with(0, "X-Utf8: caf\xC3\xA9\r\nX-Empty:\r\nX-Ows: \t v \t\r\n"
                            "Content-Length: 0\r\n"));
}

Test(ws_handshake, request_line_must_be_get_over_http_1_1_or_later)
{
    assert_status(build("POST / HTTP/1.1", 0, ""), -400);
    assert_status(build("get / HTTP/1.1", 0, ""), -400);
    assert_status(build("HEAD / HTTP/1.1", 0, ""), -400);
    assert_status(build("GETS / HTTP/1.1", 0, ""), -400);
    assert_status(build("GET / HTTP/1.0", 0, ""), -400);
    assert_status(build("GET / HTTP/0.9", 0, ""), -400);
    assert_status(build("GET / HTTP/2.0", 0, ""), -400);
    assert_status(build("GET / http/1.1", 0, ""), -400);
    assert_status(build("GET / HTTP/1.10", 0, ""), -400);
    assert_status(build("GET / HTTP/1.", 0, ""), -400);
    assert_status(build("GET / HTTP/1.1 ", 0, ""), -400);
    assert_status(build("GET  / HTTP/1.1", 0, ""), -400);
    assert_status(build("GET /  HTTP/1.1", 0, ""), -400);
    assert_status(build("GET HTTP/1.1", 0, ""), -400);
    assert_status(build("GET\t/ HTTP/1.1", 0, ""), -400);
    assert_status(build("GET /caf\xC3\xA9 HTTP/1.1", 0, ""), -400);
    assert_status(build(" GET / HTTP/1.1", 0, ""), -400);
    assert_status(build("GET /", 0, ""), -400);
    assert_status(build("", 0, ""), -400);
    /* A later minor version reads as 1.1 (RFC 7230 2.6). */
    assert_accepted(build("GET / HTTP/1.2", 0, ""));
    assert_accepted(build("GET / HTTP/1.9", 0, ""));
}

Test(ws_handshake, the_request_target_is_the_path_as_sent)
{
    struct slb_ws_handshake h;
    const char *r = build("GET /ws/sip?token=a%20b&x=1 HTTP/1.1", 0, "");
    cr_assert_eq(parse(r, strlen(r), &h), (int)strlen(r));
    cr_assert(slice_eq(h.path, h.path_len, "/ws/sip?token=a%20b&x=1"));
    cr_assert_null(h.origin);
    cr_assert(slice_eq(h.host, h.host_len, "sip.example.com"));
    /* RFC 6455 4.2.1 also lets the target be an absolute http(s) URI. */
    r = build("GET https://sip.example.com/ws HTTP/1.1", 0, "");
    cr_assert_eq(parse(r, strlen(r), &h), (int)strlen(r));
    cr_assert(slice_eq(h.path, h.path_len, "https://sip.example.com/ws"));
}

Test(ws_handshake, values_are_trimmed_of_surrounding_whitespace)
{
    struct slb_ws_handshake h;
    const char *r = "GET / HTTP/1.1\r\n"
                    "Host:   [2001:db8::1]:443 \t\r\n"
                    "Origin:\thttps://app.example.com \r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Key:  " KEY "\t\r\n"
                    "Sec-WebSocket-Version:13 \r\n"
                    "Sec-WebSocket-Protocol:sip\r\n"
                    "\r\n";
    cr_assert_eq(parse(r, strlen(r), &h), (int)strlen(r));
    cr_assert(slice_eq(h.host, h.host_len, "[2001:db8::1]:443"));
    cr_assert(slice_eq(h.origin, h.origin_len, "https://app.example.com"));
    cr_assert_str_eq(h.accept, ACCEPT);
}

Test(ws_handshake, version_other_than_13_asks_for_13)
{
    const char *v8 = build("GET / HTTP/1.1", OMIT_VERSION, "Sec-WebSocket-Version: 8\r\n");
    assert_status(v8, -426);
    static const char *const others[] = {"7", "12", "14", "013", "13, 8", "1 3", "", "abc"};
    char line[64];
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        snprintf(line, sizeof(line), "Sec-WebSocket-Version: %s\r\n", others[i]);
        assert_status(build("GET / HTTP/1.1", OMIT_VERSION, line), -426);
    }
}

Test(ws_handshake, key_must_be_base64_of_16_bytes)
{
    static const char *const bad[] = {
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* 20 bytes */
        "AAAAAAAAAAAAAAAAAAAA",         /* 15 bytes */
        "AAAAAAAAAAAAAAAAAAAAAAA=",     /* 17 bytes */
        "dGhlIHNhbXBsZSBub25jZQ",       /* 16 bytes, unpadded */
        "dGhlIHNhbXBsZSBub25jZR==",     /* non-zero bits under the padding */
        "dGhlIHNhbXBsZSBub25j ZQ==",    /* whitespace inside */
        "dGhlIHNhbXBsZSBub25jZQ-_",     /* URL-safe alphabet */
        "",
    };
    char line[80];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(line, sizeof(line), "Sec-WebSocket-Key: %s\r\n", bad[i]);
        assert_status(build("GET / HTTP/1.1", OMIT_KEY, line), -400);
    }
    assert_accepted(
        build("GET / HTTP/1.1", OMIT_KEY, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"));
}

Test(ws_handshake, without_sip_among_the_subprotocols_it_is_refused)
{
    cr_assert_eq(SLB_WS_STATUS_NO_SIP, 403);
    assert_status(with(OMIT_PROTOCOL, ""), -SLB_WS_STATUS_NO_SIP);
    static const char *const bad[] = {
        "chat, superchat", "SIP", "Sip", "sips", "sip2", "msrp", "\"sip\"", "sip;q=1", "s ip", "",
    };
    char line[80];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(line, sizeof(line), "Sec-WebSocket-Protocol: %s\r\n", bad[i]);
        assert_status(with(OMIT_PROTOCOL, line), -SLB_WS_STATUS_NO_SIP);
    }
    static const char *const good[] = {"chat, sip", "sip,chat", " , sip ,", "msrp,\tsip"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(line, sizeof(line), "Sec-WebSocket-Protocol: %s\r\n", good[i]);
        assert_accepted(with(OMIT_PROTOCOL, line));
    }
}

Test(ws_handshake, sip_in_a_second_protocol_line_is_enough)
{
    assert_accepted(with(OMIT_PROTOCOL, "Sec-WebSocket-Protocol: chat\r\n"
                                        "sec-websocket-protocol: msrp, sip\r\n"));
    assert_accepted(with(OMIT_PROTOCOL, "Sec-WebSocket-Protocol: sip\r\n"
                                        "Sec-WebSocket-Protocol: chat\r\n"));
}

Test(ws_handshake, the_worst_fault_decides_the_status)
{
    /* 400 over 426 over the missing subprotocol, whatever the order of the lines. */
    const char *v8 = "Sec-WebSocket-Version: 8\r\n";
    assert_status(build("GET / HTTP/1.1", OMIT_VERSION | OMIT_PROTOCOL, v8), -426);
    assert_status(build("GET / HTTP/1.1", OMIT_VERSION | OMIT_HOST, v8), -400);
    assert_status(build("GET / HTTP/1.1", OMIT_VERSION | OMIT_KEY, v8), -400);
    static char r[sizeof(req) + 64];
    snprintf(r, sizeof(r), "GET / HTTP/1.1\r\n%sHost : x\r\n%s", v8, with(OMIT_VERSION, "") + 16);
    assert_status(r, -400);
    assert_status(build("POST / HTTP/1.1", OMIT_PROTOCOL, ""), -400);
}

Test(ws_handshake, no_end_within_the_limit_is_too_large)
{
    static char big[SLB_WS_HANDSHAKE_MAX + 64];
    struct slb_ws_handshake h;
    /* A request whose headers go on and on. */
    const char *start = with(0, "");
    size_t n = strlen(start) - 2; /* without its empty line */
    memcpy(big, start, n);
    while (n < sizeof(big) - 2) {
        size_t line = sizeof(big) - 2 - n < 40 ? sizeof(big) - 2 - n : 40;
        memset(big + n, 'x', line);
        memcpy(big + n, "X-Pad: ", line < 7 ? line : 7);
        n += line;
        if (n < sizeof(big) - 2)
            big[n - 2] = '\r', big[n - 1] = '\n';
    }
    cr_assert_eq(parse(big, SLB_WS_HANDSHAKE_MAX - 1, &h), 0);
    cr_assert_eq(parse(big, SLB_WS_HANDSHAKE_MAX, &h), -431);
    cr_assert_eq(parse(big, SLB_WS_HANDSHAKE_MAX + 1, &h), -431);
    cr_assert_eq(parse(big, sizeof(big), &h), -431);
    /* Garbage without CRLF at all. */
    memset(big, 'G', sizeof(big));
    cr_assert_eq(parse(big, SLB_WS_HANDSHAKE_MAX - 1, &h), 0);
    cr_assert_eq(parse(big, SLB_WS_HANDSHAKE_MAX, &h), -431);
}

/* A valid request of exactly total bytes, padded with one long X-Pad field. */
static size_t padded_request(char *out, size_t total)
{
    const char *base = with(0, "");
    size_t n = strlen(base) - 2;
    memcpy(out, base, n);
    size_t pad = total - n - 2 - 9; /* "X-Pad: " + CRLF */
    memcpy(out + n, "X-Pad: ", 7);
    memset(out + n + 7, 'p', pad);
    memcpy(out + n + 7 + pad, "\r\n\r\n", 4);
    return total;
}

Test(ws_handshake, a_request_of_exactly_the_limit_is_taken)
{
    static char big[SLB_WS_HANDSHAKE_MAX + 64];
    struct slb_ws_handshake h;
    size_t n = padded_request(big, SLB_WS_HANDSHAKE_MAX);
    cr_assert_eq(parse(big, n, &h), (int)SLB_WS_HANDSHAKE_MAX);
    cr_assert_eq(parse(big, n - 1, &h), 0);
    memcpy(big + n, "\x81\x80", 2);
    cr_assert_eq(parse(big, n + 2, &h), (int)SLB_WS_HANDSHAKE_MAX);
    /* One byte more and its end is past the limit. */
    n = padded_request(big, SLB_WS_HANDSHAKE_MAX + 1);
    cr_assert_eq(parse(big, n - 1, &h), -431);
    cr_assert_eq(parse(big, n, &h), -431);
}

Test(ws_handshake, empty_lines_where_the_request_line_belongs_are_malformed)
{
    assert_status("\r\n\r\n", -400);
    assert_status("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    assert_status("\n\r\n\r\n", -400);
}

Test(ws_origin, empty_list_allows_everything)
{
    cr_assert(slb_ws_origin_allowed(NULL, "https://a.example", 17));
    cr_assert(slb_ws_origin_allowed("", "https://a.example", 17));
    cr_assert(slb_ws_origin_allowed(NULL, NULL, 0));
    cr_assert(slb_ws_origin_allowed("", NULL, 0));
}

Test(ws_origin, listed_origins_only)
{
    const char *list =
        "https://app.example.com, https://beta.example.com:8443 ,\thttp://localhost:3000";
#define ALLOWED(o) slb_ws_origin_allowed(list, o, strlen(o))
    cr_assert(ALLOWED("https://app.example.com"));
    cr_assert(ALLOWED("https://beta.example.com:8443"));
    cr_assert(ALLOWED("http://localhost:3000"));
    /* Scheme and host compare case-insensitively. */
    cr_assert(ALLOWED("HTTPS://App.Example.COM"));
    cr_assert(ALLOWED("Http://LOCALHOST:3000"));
    /* Everything else is refused: other scheme, port, host, or a prefix or extension. */
    cr_assert_not(ALLOWED("http://app.example.com"));
    cr_assert_not(ALLOWED("https://app.example.com:443"));
    cr_assert_not(ALLOWED("https://beta.example.com"));
    cr_assert_not(ALLOWED("https://app.example.com.evil.test"));
    cr_assert_not(ALLOWED("https://app.example.co"));
    cr_assert_not(ALLOWED("https://app.example.com/"));
    cr_assert_not(ALLOWED("evil.https://app.example.com"));
    cr_assert_not(ALLOWED("null"));
    cr_assert_not(ALLOWED(""));
    cr_assert_not(slb_ws_origin_allowed(list, NULL, 0));
#undef ALLOWED
    /* The length bounds the origin: it is a slice, not a C string. */
    cr_assert(slb_ws_origin_allowed(list, "https://app.example.com, junk", 23));
    /* A single entry, and a list that names nothing. */
    cr_assert(slb_ws_origin_allowed("https://a.example", "https://a.example", 17));
    cr_assert_not(slb_ws_origin_allowed(" , ,", "https://a.example", 17));
    cr_assert_not(slb_ws_origin_allowed(",", "", 0));
}

Test(ws_origin, parsed_origin_feeds_the_allow_list)
{
    struct slb_ws_handshake h;
    cr_assert_gt(parse(chrome, strlen(chrome), &h), 0);
    cr_assert(slb_ws_origin_allowed("https://app.example.com", h.origin, h.origin_len));
    cr_assert_not(slb_ws_origin_allowed("https://other.example", h.origin, h.origin_len));
    const char *r = with(0, "");
    cr_assert_gt(parse(r, strlen(r), &h), 0);
    cr_assert_null(h.origin);
    cr_assert_not(slb_ws_origin_allowed("https://app.example.com", h.origin, h.origin_len));
    cr_assert(slb_ws_origin_allowed(NULL, h.origin, h.origin_len));
}

Test(ws_handshake, response_is_the_101_with_accept_and_sip)
{
    struct slb_ws_handshake h;
    cr_assert_gt(parse(chrome, strlen(chrome), &h), 0);
    static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                               "Sec-WebSocket-Protocol: sip\r\n"
                               "\r\n";
    char out[256];
    memset(out, '#', sizeof(out));
    int n = slb_ws_handshake_response(&h, out, sizeof(out));
    cr_assert_eq(n, (int)sizeof(want) - 1);
    cr_assert_eq(memcmp(out, want, sizeof(want) - 1), 0);
    cr_assert_eq(out[n], '#', "nothing written past the response");
    cr_assert_eq(slb_ws_handshake_response(&h, out, sizeof(want) - 1), n);
    for (size_t cap = 0; cap < sizeof(want) - 1; cap++)
        cr_assert_eq(slb_ws_handshake_response(&h, out, cap), -ENOSPC, "cap %zu", cap);
}

static void assert_error(int status, const char *want)
{
    char out[512];
    int n = slb_ws_handshake_error(status, out, sizeof(out));
    cr_assert_eq(n, (int)strlen(want), "status %d: length %d", status, n);
    cr_assert_eq(memcmp(out, want, strlen(want)), 0, "status %d:\n%.*s", status, n, out);
    for (size_t cap = 0; cap < strlen(want); cap++)
        cr_assert_eq(slb_ws_handshake_error(status, out, cap), -ENOSPC);
}

Test(ws_handshake, error_responses)
{
    assert_error(400, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    assert_error(403, "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    assert_error(426, "HTTP/1.1 426 Upgrade Required\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade, close\r\n"
                      "Sec-WebSocket-Version: 13\r\n"
                      "Content-Length: 0\r\n\r\n");
    assert_error(431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                      "Connection: close\r\nContent-Length: 0\r\n\r\n");
    assert_error(503, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                      "Content-Length: 0\r\n\r\n");
    assert_error(418, "HTTP/1.1 418 \r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    char out[256];
    cr_assert_eq(slb_ws_handshake_error(101, out, sizeof(out)), -EINVAL);
    cr_assert_eq(slb_ws_handshake_error(200, out, sizeof(out)), -EINVAL);
    cr_assert_eq(slb_ws_handshake_error(399, out, sizeof(out)), -EINVAL);
    cr_assert_eq(slb_ws_handshake_error(600, out, sizeof(out)), -EINVAL);
    cr_assert_eq(slb_ws_handshake_error(-400, out, sizeof(out)), -EINVAL);
}

Test(ws_handshake, each_refusal_maps_to_an_answer)
{
    /* The parser's negative returns are statuses slb_ws_handshake_error takes. */
    static const int codes[] = {400, 426, 431, SLB_WS_STATUS_NO_SIP};
    char out[256];
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        cr_assert_gt(slb_ws_handshake_error(codes[i], out, sizeof(out)), 0);
}
