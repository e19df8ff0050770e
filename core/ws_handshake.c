/* The WebSocket opening handshake, server side (see core/ws_handshake.h). Sources: RFC 6455
 * 4.2.1 (what the request must hold), 4.2.2 (the answer) and 4.4 (versions); RFC 7230
 * 3.1.1, 3.2 and 7 (request line, header fields, lists); RFC 7118 4.1 (the "sip"
 * subprotocol).
 *
 * Invariants: never reads outside buf[0, min(len, SLB_WS_HANDSHAKE_MAX)); nothing is
 * looked at before the request's end (its first CRLFCRLF) is present, so a result depends
 * only on the request's bytes, every proper prefix of a request returns 0 and a caller
 * that calls again as bytes arrive gets what one call on everything gives. Work is linear
 * in the request's length. Pure; any thread. */
#include "core/ws_handshake.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/base64.h"
#include "core/sha1.h"
#include "core/slice-t.h"

enum {
    ST_BAD = -400, /* malformed, or not a WebSocket handshake */
    ST_NO_SIP = -SLB_WS_STATUS_NO_SIP,
    ST_VERSION = -426,   /* RFC 6455 4.4: the client must learn the version we take */
    ST_TOO_LARGE = -431, /* RFC 6585 5 */
};

/* RFC 6455 1.3: the GUID a server appends to the key before hashing it. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
#define WS_KEY_BYTES 16u /* RFC 6455 4.1: the key is a random 16-byte nonce */

/* Why a missing "sip" is answered 403 and not with a 101:
 * - RFC 7118 4.1 wants "sip" in the 101's Sec-WebSocket-Protocol, but RFC 6455 4.2.2 lets
 *   a server name only a subprotocol the client offered (a client fails the connection on
 *   any other, 4.1), so a client that did not offer "sip" cannot get a valid 101 from us;
 * - a 101 without the header (what 4.2.2 prescribes for "none of yours") would open a
 *   WebSocket whose messages are not SIP, and browsers that offered other subprotocols
 *   fail it anyway;
 * so the handshake must be refused with an HTTP error, which 4.2.2 says a server that does
 * not accept the connection sends, naming 403 as its example. Not 400: the request is a
 * well-formed handshake that simply asks for something this endpoint does not serve, and
 * a status of its own lets the caller count a web app pointed at the wrong endpoint apart
 * from a broken client. (Kamailio answers 400 here; either is RFC-conformant.) */

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

/* Whether a[0, n) equals b[0, n), ASCII case-insensitively (never by locale). */
static bool same_nocase(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    return true;
}

static bool slice_is(struct slb_slice s, const char *lit, bool nocase)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return false;
    return nocase ? same_nocase(s.ptr, lit, n) : memcmp(s.ptr, lit, n) == 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 7230 3.2.6: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 * "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. */
static bool is_tchar(char ch)
{
    unsigned char c = (unsigned char)ch;
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 7230 3.2: field-vchar (VCHAR / obs-text), SP or HTAB. Every other control byte,
 * CR and LF included, is refused: a bare CR or LF is how header injection and request
 * smuggling slip past parsers that end lines differently. */
static bool is_field_char(char ch)
{
    unsigned char c = (unsigned char)ch;
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

/* RFC 3986 3.2.2 and 3.2.3: what uri-host [":" port] is made of (unreserved, pct-encoded,
 * sub-delims, ":" and the brackets of an IP literal). Checked by class only, not by
 * grammar: enough to keep spaces, "/", "@" and non-ASCII bytes out of what we pass on. */
static bool is_host_char(char ch)
{
    unsigned char c = (unsigned char)ch;
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("-._~%!$&'()*+,;=:[]", c) != NULL;
}

static struct slb_slice trim_ows(const char *p, size_t n)
{
    while (n > 0 && is_ows(p[0]))
        p++, n--;
    while (n > 0 && is_ows(p[n - 1]))
        n--;
    return (struct slb_slice){p, n};
}

/* The length of the request in buf[0, n): just past its first CRLFCRLF, or 0. */
static size_t find_end(const char *buf, size_t n)
{
    for (size_t i = 3; i < n; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i + 1;
    return 0;
}

/* Whether the comma-separated list v (RFC 7230 7: OWS around elements, empty elements
 * ignored) holds elem. */
static bool list_has(struct slb_slice v, const char *elem, bool nocase)
{
    size_t at = 0;
    while (at <= v.len) {
        const char *comma = memchr(v.ptr + at, ',', v.len - at);
        size_t end = comma ? (size_t)(comma - v.ptr) : v.len;
        if (slice_is(trim_ows(v.ptr + at, end - at), elem, nocase))
            return true;
        at = end + 1;
    }
    return false;
}

/* What the header fields said, before it is judged whole. A slice with ptr NULL was not
 * there. */
struct fields {
    struct slb_slice host, origin, key, version;
    bool upgrade_websocket;  /* Upgrade lists "websocket" */
    bool connection_upgrade; /* Connection lists "upgrade" */
    bool protocol_sip;       /* Sec-WebSocket-Protocol lists "sip" */
};

/* RFC 7230 3.1.1: method SP request-target SP HTTP-version, each part strictly so (single
 * spaces, the method case-sensitive). */
static int request_line(const char *p, size_t n, struct slb_slice *target)
{
    /* RFC 6455 4.2.1 item 1: only GET opens a WebSocket. */
    if (n < 4 || memcmp(p, "GET ", 4) != 0)
        return ST_BAD;
    size_t at = 4;
    while (at < n && p[at] > 0x20 && p[at] < 0x7F)
        at++;
    *target = (struct slb_slice){p + 4, at - 4};
    /* RFC 7230 2.6: "HTTP/" DIGIT "." DIGIT. 1.1 or a later 1.x (read as 1.1, 2.6); other
     * majors are refused: HTTP/2 and HTTP/3 carry WebSocket by an extended CONNECT (RFC
     * 8441, RFC 9220), never with this request line. */
    const char *v = p + at + 1;
    if (target->len == 0 || n - at != 9 || p[at] != ' ' || memcmp(v, "HTTP/1.", 7) != 0 ||
        v[7] < '1' || v[7] > '9')
        return ST_BAD;
    return 0;
}

static int single(struct slb_slice *slot, struct slb_slice v)
{
    if (slot->ptr != NULL)
        return ST_BAD; /* a second one: which to believe is not ours to guess */
    *slot = v;
    return 0;
}

/* One header field line (without its CRLF) into f. */
static int field_line(const char *p, size_t n, struct fields *f)
{
    /* RFC 7230 3.2.4: obs-fold (a line starting with SP or HTAB) may be refused with 400,
     * and whitespace between the name and the colon must be. Both fail here, as does a
     * line without a colon: each stops the name at a byte that is not a tchar. */
    size_t colon = 0;
    while (colon < n && is_tchar(p[colon]))
        colon++;
    if (colon == 0 || colon == n || p[colon] != ':')
        return ST_BAD;
    for (size_t i = colon + 1; i < n; i++)
        if (!is_field_char(p[i]))
            return ST_BAD;
    struct slb_slice name = {p, colon};
    struct slb_slice v = trim_ows(p + colon + 1, n - colon - 1);

    if (slice_is(name, "host", true)) {
        /* RFC 7230 5.4: a Host that is not a valid authority gets 400. Never empty here:
         * RFC 6455 4.2.1 item 2 wants the server's authority. */
        for (size_t i = 0; i < v.len; i++)
            if (!is_host_char(v.ptr[i]))
                return ST_BAD;
        return v.len == 0 ? ST_BAD : single(&f->host, v);
    }
    if (slice_is(name, "origin", true))
        return single(&f->origin, v); /* two could pass the allow-list with either */
    if (slice_is(name, "sec-websocket-key", true))
        return single(&f->key, v);
    if (slice_is(name, "sec-websocket-version", true))
        return single(&f->version, v);
    /* Lists may span several lines (RFC 7230 3.2.2), so these accumulate. */
    if (slice_is(name, "upgrade", true))
        f->upgrade_websocket |= list_has(v, "websocket", true);
    else if (slice_is(name, "connection", true))
        f->connection_upgrade |= list_has(v, "upgrade", true);
    /* Case-sensitive: the 101 names "sip", and a client fails the connection unless that
     * is exactly one of the values it offered (RFC 6455 4.1). */
    else if (slice_is(name, "sec-websocket-protocol", true))
        f->protocol_sip |= list_has(v, "sip", false);
    /* The bytes after the empty line are WebSocket frames; a request announcing a body
     * would make them ambiguous (and a backend's view of them differ from ours). */
    else if (slice_is(name, "transfer-encoding", true))
        return ST_BAD;
    else if (slice_is(name, "content-length", true) && !slice_is(v, "0", false))
        return ST_BAD;
    return 0;
}

/* RFC 6455 4.2.1 items 2-6 on the fields of a request whose lines were all well formed. */
static int judge(const struct fields *f)
{
    uint8_t nonce[WS_KEY_BYTES];
    if (f->host.ptr == NULL || !f->upgrade_websocket || !f->connection_upgrade ||
        f->key.ptr == NULL || f->version.ptr == NULL)
        return ST_BAD;
    /* Item 5: base64 of exactly 16 bytes, i.e. 24 characters ending in "==". */
    if (slb_base64_decode(f->key.ptr, f->key.len, nonce, sizeof(nonce)) != (int)WS_KEY_BYTES)
        return ST_BAD;
    if (!slice_is(f->version, "13", false))
        return ST_VERSION;
    if (!f->protocol_sip)
        return ST_NO_SIP;
    return 0;
}

/* RFC 6455 4.2.2 step 5.4: base64(SHA-1(key as sent + GUID)). */
static void accept_value(struct slb_slice key, char out[29])
{
    struct slb_sha1_ctx ctx;
    uint8_t digest[SLB_SHA1_LEN];
    slb_sha1_init(&ctx);
    slb_sha1_update(&ctx, key.ptr, key.len);
    slb_sha1_update(&ctx, ws_guid, sizeof(ws_guid) - 1);
    slb_sha1_final(&ctx, digest);
    size_t n = slb_base64_encode(digest, sizeof(digest), out);
    out[n] = '\0';
}

int slb_ws_handshake_parse(const char *buf, size_t len, struct slb_ws_handshake *h)
{
    size_t end = find_end(buf, len < SLB_WS_HANDSHAKE_MAX ? len : SLB_WS_HANDSHAKE_MAX);
    if (end == 0)
        return len >= SLB_WS_HANDSHAKE_MAX ? ST_TOO_LARGE : 0;

    /* Lines in buf[0, end - 2): each ends at the next CRLF, and none is empty but,
     * possibly, the first (an empty one after another line would have made an earlier
     * CRLFCRLF), which the request line's check refuses. There is always a first line,
     * as end >= 4. At most SLB_WS_HANDSHAKE_MAX / 2 lines. */
    struct fields f = {0};
    struct slb_slice target = {0};
    size_t at = 0;
    for (bool first = true; at < end - 2; first = false) {
        size_t eol = at;
        while (buf[eol] != '\r' || buf[eol + 1] != '\n')
            eol++;
        int rc =
            first ? request_line(buf + at, eol - at, &target) : field_line(buf + at, eol - at, &f);
        if (rc < 0)
            return rc;
        at = eol + 2;
    }
    int rc = judge(&f);
    if (rc < 0)
        return rc;

    memset(h, 0, sizeof(*h));
    h->host = f.host.ptr;
    h->host_len = f.host.len;
    h->origin = f.origin.ptr;
    h->origin_len = f.origin.len;
    h->path = target.ptr;
    h->path_len = target.len;
    accept_value(f.key, h->accept);
    h->request_len = end;
    return (int)end;
}

bool slb_ws_origin_allowed(const char *list, const char *origin, size_t origin_len)
{
    if (list == NULL || list[0] == '\0')
        return true;
    if (origin == NULL)
        return false;
    for (const char *p = list;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        struct slb_slice e = trim_ows(p, n);
        /* Whole-value equality: a prefix or suffix match would let
         * "https://app.example.com.evil.test" through. */
        if (e.len > 0 && e.len == origin_len && same_nocase(e.ptr, origin, e.len))
            return true;
        if (comma == NULL)
            return false;
        p = comma + 1;
    }
}

/* Appends to out[0, cap) and reports overflow once, at the end. */
struct writer {
    char *out;
    size_t cap, len;
    bool full;
};

static void put(struct writer *w, const char *s, size_t n)
{
    if (w->full || n > w->cap - w->len) {
        w->full = true;
        return;
    }
    memcpy(w->out + w->len, s, n);
    w->len += n;
}

static void put_str(struct writer *w, const char *s)
{
    put(w, s, strlen(s));
}

static int finish(const struct writer *w)
{
    return w->full ? -ENOSPC : (int)w->len;
}

int slb_ws_handshake_response(const struct slb_ws_handshake *h, char *out, size_t cap)
{
    struct writer w = {out, cap, 0, false};
    put_str(&w, "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: ");
    const char *nul = memchr(h->accept, '\0', sizeof(h->accept));
    put(&w, h->accept, nul ? (size_t)(nul - h->accept) : sizeof(h->accept));
    put_str(&w, "\r\nSec-WebSocket-Protocol: sip\r\n\r\n");
    return finish(&w);
}

/* RFC 7231 6.5 and 6.6, RFC 6585 (429, 431). Others get an empty reason phrase, which
 * RFC 7230 3.1.2 allows (clients must ignore the phrase). */
static const char *reason(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "";
    }
}

int slb_ws_handshake_error(int status, char *out, size_t cap)
{
    if (status < 400 || status > 599)
        return -EINVAL;
    struct writer w = {out, cap, 0, false};
    char code[5] = {'0' + status / 100, '0' + status / 10 % 10, '0' + status % 10, ' ', 0};
    put_str(&w, "HTTP/1.1 ");
    put_str(&w, code);
    put_str(&w, reason(status));
    put_str(&w, "\r\n");
    if (status == 426)
        put_str(&w, "Upgrade: websocket\r\n"
                    "Connection: Upgrade, close\r\n"
                    "Sec-WebSocket-Version: 13\r\n");
    else
        put_str(&w, "Connection: close\r\n");
    put_str(&w, "Content-Length: 0\r\n\r\n");
    return finish(&w);
}
