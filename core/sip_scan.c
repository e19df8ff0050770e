/* The zero-copy SIP scanner: one pass over the start line and the header lines of one
 * message, producing slices into the caller's buffer (RFC 3261 7, 20, 25).
 *
 * Invariants: never reads outside [buf, buf + len); never writes outside msg and the
 * caller's header array; never allocates; work is bounded by len and the limits. Message
 * bytes are never treated as C strings (NUL is legal in values and bodies, RFC 4475).
 * Runs on whichever thread calls it; holds no state between calls. */
#include "core/sip.h"

#include <errno.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* RFC 3261 25.1 token characters: alphanum and -.!%*_+`'~ */
static const uint8_t token_char[256] = {
    ['!'] = 1, ['%'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['_'] = 1,
    ['`'] = 1, ['~'] = 1, ['0'] = 1,  ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1,  ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1,
    ['E'] = 1, ['F'] = 1, ['G'] = 1,  ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1,  ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,
    ['U'] = 1, ['V'] = 1, ['W'] = 1,  ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1,
    ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1,  ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1,  ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static inline bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* LWS inside a value that may have been folded. */
static const uint8_t lws_char[256] = {[' '] = 1, ['\t'] = 1, ['\r'] = 1, ['\n'] = 1};

static inline bool is_lws(char c)
{
    return lws_char[(unsigned char)c];
}

static inline bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Compares a header or parameter name with a lowercase literal of letters and '-', n <= 16
 * (constant after inlining). Eight bytes at a time: OR-ing 0x20 folds a letter's case, and
 * the mask, derived from the literal (bit 6 is set in letters, clear in '-'), leaves the
 * '-' positions exact, so no other byte (CR is '-' minus 0x20) can pass for one. */
static inline bool name_is(const char *p, const char *lit, size_t n)
{
    uint64_t a0 = 0, a1 = 0, l0 = 0, l1 = 0;
    size_t k = n < 8 ? n : 8;
    memcpy(&a0, p, k);
    memcpy(&l0, lit, k);
    if (n > 8) {
        memcpy(&a1, p + 8, n - 8);
        memcpy(&l1, lit + 8, n - 8);
    }
    const uint64_t bit6 = 0x4040404040404040ull;
    return ((a0 | ((l0 & bit6) >> 1)) == l0) & ((a1 | ((l1 & bit6) >> 1)) == l1);
}

/* The first c in [p, end), or NULL. Inline SSE2 over 16-byte blocks: SIP lines and
 * parameters are short, and a libc memchr call costs more in call and set-up than in
 * scanning them. Bytes up to safe (>= end) may be loaded, never compared: a search that
 * ends within a longer buffer takes one masked block instead of a byte loop. Never loads
 * a byte at or past safe. */
static inline const char *find_byte_s(const char *p, const char *end, const char *safe, char c)
{
#if defined(__SSE2__)
    const __m128i v = _mm_set1_epi8(c);
    while (p < end && safe - p >= 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(b, v));
        if (end - p < 16)
            m &= (1u << (end - p)) - 1;
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#else
    (void)safe;
#endif
    for (; p < end; p++)
        if (*p == c)
            return p;
    return NULL;
}

static inline const char *find_byte(const char *p, const char *end, char c)
{
    return find_byte_s(p, end, end, c);
}

/* The first a or b in [p, end), or end; loads up to safe as find_byte_s. */
static inline const char *find_either_s(const char *p, const char *end, const char *safe, char a,
                                        char b)
{
#if defined(__SSE2__)
    const __m128i va = _mm_set1_epi8(a), vb = _mm_set1_epi8(b);
    while (p < end && safe - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m =
            (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(x, va), _mm_cmpeq_epi8(x, vb)));
        if (end - p < 16)
            m &= (1u << (end - p)) - 1;
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#else
    (void)safe;
#endif
    for (; p < end; p++)
        if (*p == a || *p == b)
            return p;
    return end;
}

/* Whether [p, end) holds a control byte (below 0x20, or DEL). */
static inline bool has_ctl(const char *p, const char *end)
{
#if defined(__SSE2__)
    const __m128i sp = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* max(x, 0x20) != x exactly when x < 0x20, unsigned. */
        __m128i low = _mm_xor_si128(_mm_cmpeq_epi8(_mm_max_epu8(x, sp), x), _mm_set1_epi8(-1));
        if (_mm_movemask_epi8(_mm_or_si128(low, _mm_cmpeq_epi8(x, del))))
            return true;
        p += 16;
    }
#endif
    for (; p < end; p++)
        if (is_ctl((unsigned char)*p))
            return true;
    return false;
}

/* Whether [p, end) holds a NUL or a CR not followed by LF: neither may appear in a header
 * value (RFC 3261 25.1 TEXT-UTF8 and LWS), and a next hop may read either as a line end
 * or a string end that we did not see. end[-1] must be LF (the header block's last byte),
 * so a CR before it always has its next byte inside the range. */
static inline bool has_nul_or_bare_cr(const char *p, const char *end)
{
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128(), cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    while (end - p >= 17) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i next = _mm_loadu_si128((const __m128i *)(const void *)(p + 1));
        __m128i bare = _mm_andnot_si128(_mm_cmpeq_epi8(next, lf), _mm_cmpeq_epi8(x, cr));
        if (_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(x, zero), bare)))
            return true;
        p += 16;
    }
#endif
    for (; p < end; p++)
        if (*p == 0 || (*p == '\r' && (p + 1 == end || p[1] != '\n')))
            return true;
    return false;
}

/* The slow check behind has_nul_or_bare_cr's hit: true unless every NUL is the escaped
 * byte of a quoted-pair inside a quoted string (RFC 3261 25.1: quoted-pair = "\\"
 * %x00-09 / %x0B-0C / %x0E-7F), the one place a header may carry it (RFC 4475 3.1.1.2). A
 * quoted string ends with its line unless the next line is a continuation. */
static bool nul_outside_quoted_pair(const char *p, const char *end)
{
    bool quoted = false;
    for (; p < end; p++) {
        char c = *p;
        if (c == '\r') {
            if (p + 1 == end || p[1] != '\n')
                return true;
            continue;
        }
        if (c == '\n') {
            if (p + 1 == end || (p[1] != ' ' && p[1] != '\t'))
                quoted = false; /* a new header line */
            continue;
        }
        if (c == 0)
            return true;
        if (c == '"') {
            quoted = !quoted;
        } else if (c == '\\' && quoted && p + 1 < end && p[1] != '\r' && p[1] != '\n') {
            p++; /* the escaped byte, NUL included (a CR or LF cannot be escaped) */
        }
    }
    return false;
}

static inline const char *find_nl(const char *p, const char *end)
{
    return find_byte(p, end, '\n');
}

static inline struct slb_slice trim(const char *p, const char *end)
{
    while (p < end && is_lws(*p))
        p++;
    while (end > p && is_lws(end[-1]))
        end--;
    return (struct slb_slice){p, (size_t)(end - p)};
}

void slb_sip_limits_default(struct slb_sip_limits *lim)
{
    lim->max_msg_bytes = SLB_SIP_MAX_MSG_BYTES_DEFAULT;
    lim->max_line_bytes = SLB_SIP_MAX_LINE_BYTES_DEFAULT;
    lim->max_headers = SLB_SIP_MAX_HEADERS_DEFAULT;
}

bool slb_slice_eq(struct slb_slice a, struct slb_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool slb_slice_eq_nocase(struct slb_slice a, const char *lit)
{
    size_t n = strlen(lit);
    if (a.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char x = a.ptr[i], y = lit[i];
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return false;
    }
    return true;
}

enum slb_sip_method slb_sip_method_id(struct slb_slice m)
{
    /* RFC 3261 7.1: method names are case-sensitive. */
#define M(lit, id)                                                                                 \
    if (m.len == sizeof(lit) - 1 && memcmp(m.ptr, lit, m.len) == 0)                                \
        return id;
    switch (m.len) {
    case 3:
        M("ACK", SLB_METHOD_ACK)
        M("BYE", SLB_METHOD_BYE)
        break;
    case 4:
        M("INFO", SLB_METHOD_INFO)
        break;
    case 5:
        M("REFER", SLB_METHOD_REFER)
        M("PRACK", SLB_METHOD_PRACK)
        break;
    case 6:
        M("INVITE", SLB_METHOD_INVITE)
        M("CANCEL", SLB_METHOD_CANCEL)
        M("NOTIFY", SLB_METHOD_NOTIFY)
        M("UPDATE", SLB_METHOD_UPDATE)
        break;
    case 7:
        M("OPTIONS", SLB_METHOD_OPTIONS)
        M("MESSAGE", SLB_METHOD_MESSAGE)
        M("PUBLISH", SLB_METHOD_PUBLISH)
        break;
    case 8:
        M("REGISTER", SLB_METHOD_REGISTER)
        break;
    case 9:
        M("SUBSCRIBE", SLB_METHOD_SUBSCRIBE)
        break;
    }
#undef M
    return SLB_METHOD_OTHER;
}

/* Header name (long or compact form, RFC 3261 7.3.3) to id. */
static enum slb_sip_hdr_id header_id(const char *p, size_t n)
{
    switch (n) {
    case 1:
        switch (p[0] | 0x20) {
        case 'i':
            return SLB_HDR_CALL_ID;
        case 'v':
            return SLB_HDR_VIA;
        case 'l':
            return SLB_HDR_CONTENT_LENGTH;
        case 'c':
            return SLB_HDR_CONTENT_TYPE;
        case 'f':
            return SLB_HDR_FROM;
        case 't':
            return SLB_HDR_TO;
        case 'm':
            return SLB_HDR_CONTACT;
        case 'k':
            return SLB_HDR_SUPPORTED;
        }
        break;
    case 2:
        if (name_is(p, "to", 2))
            return SLB_HDR_TO;
        break;
    case 3:
        if (name_is(p, "via", 3))
            return SLB_HDR_VIA;
        break;
    case 4:
        if (name_is(p, "cseq", 4))
            return SLB_HDR_CSEQ;
        if (name_is(p, "from", 4))
            return SLB_HDR_FROM;
        if (name_is(p, "path", 4))
            return SLB_HDR_PATH;
        break;
    case 5:
        if (name_is(p, "route", 5))
            return SLB_HDR_ROUTE;
        break;
    case 7:
        if (name_is(p, "call-id", 7))
            return SLB_HDR_CALL_ID;
        if (name_is(p, "contact", 7))
            return SLB_HDR_CONTACT;
        if (name_is(p, "require", 7))
            return SLB_HDR_REQUIRE;
        break;
    case 9:
        if (name_is(p, "supported", 9))
            return SLB_HDR_SUPPORTED;
        break;
    case 12:
        if (name_is(p, "max-forwards", 12))
            return SLB_HDR_MAX_FORWARDS;
        if (name_is(p, "record-route", 12))
            return SLB_HDR_RECORD_ROUTE;
        if (name_is(p, "content-type", 12))
            return SLB_HDR_CONTENT_TYPE;
        break;
    case 13:
        if (name_is(p, "proxy-require", 13))
            return SLB_HDR_PROXY_REQUIRE;
        break;
    case 14:
        if (name_is(p, "content-length", 14))
            return SLB_HDR_CONTENT_LENGTH;
        break;
    }
    return SLB_HDR_OTHER;
}

/* Parses 1*DIGIT filling the whole slice. Returns -1 when not a plain number or when it
 * exceeds max. */
static int64_t parse_digits(struct slb_slice s, int64_t max)
{
    if (s.len == 0 || s.len > 18)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned char)s.ptr[i] - '0';
        if (d > 9)
            return -1;
        v = v * 10 + d;
    }
    return v > max ? -1 : v;
}

/* Skips a quoted-string starting at p (at the opening quote). Returns the position after
 * the closing quote, or end when unterminated. RFC 3261 25.1 quoted-pair: '\' escapes. */
/* Past the quoted string that starts at p (its '"'): the byte after its closing quote, or
 * NULL when it never closes. */
static const char *quoted_end(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
            continue;
        }
        if (*p == '"')
            return p + 1;
    }
    return NULL;
}

static const char *skip_quoted(const char *p, const char *end)
{
    const char *q = quoted_end(p, end);
    return q ? q : end;
}

/* One ";name[=value]" parameter: p is at its ';'. Returns where the next one starts (its
 * ';') or end. A quoted value may hold ';'. A valueless parameter gets an empty value
 * placed right after its name, where "=value" would go. */
static const char *param_next(const char *p, const char *end, const char *safe,
                              struct slb_slice *name, struct slb_slice *value)
{
    const char *start = ++p, *semi;
    for (;;) {
        semi = find_either_s(p, end, safe, ';', '"');
        if (semi == end || *semi == ';')
            break;
        p = skip_quoted(semi, end);
    }
    const char *eq = find_byte_s(start, semi, safe, '=');
    *name = trim(start, eq ? eq : semi);
    *value = eq ? trim(eq + 1, semi) : (struct slb_slice){name->ptr + name->len, 0};
    return semi;
}

static bool param_find_s(struct slb_slice params, const char *name, size_t nlen, const char *safe,
                         struct slb_slice *value)
{
    const char *p = params.ptr, *end = params.ptr + params.len;
    if (p < end && *p != ';')
        p = find_either_s(p, end, safe, ';', ';');
    while (p < end) {
        struct slb_slice n, v;
        p = param_next(p, end, safe, &n, &v);
        if (n.len == nlen && name_is(n.ptr, name, nlen)) {
            *value = v;
            return true;
        }
    }
    return false;
}

bool slb_sip_param_find(struct slb_slice params, const char *name, struct slb_slice *value)
{
    return param_find_s(params, name, strlen(name), params.ptr + params.len, value);
}

/* One pass over a Via's parameters for the three the proxy uses. An empty parameter name
 * (";;") is no via-params (RFC 3261 25.1, RFC 4475 3.1.2.1): -EINVAL. */
static int via_params(struct slb_sip_via *via, const char *safe)
{
    const char *p = via->params.ptr, *end = p + via->params.len;
    while (p < end) {
        struct slb_slice n, v;
        p = param_next(p, end, safe, &n, &v);
        if (n.len == 0)
            return -EINVAL;
        if (n.len == 6 && name_is(n.ptr, "branch", 6) && !via->branch.ptr)
            via->branch = v;
        else if (n.len == 8 && name_is(n.ptr, "received", 8) && !via->received.ptr)
            via->received = v;
        else if (n.len == 5 && name_is(n.ptr, "rport", 5) && !via->has_rport) {
            via->rport = v;
            via->has_rport = true;
        }
    }
    return 0;
}

static int via_parse_s(struct slb_slice value, struct slb_sip_via *via, const char *safe)
{
    const char *p = value.ptr, *end = value.ptr + value.len;
    memset(via, 0, sizeof(*via));
    /* sent-protocol = protocol-name SLASH protocol-version SLASH transport, where SLASH
     * allows LWS around the '/' (RFC 3261 25.1). */
    const char *proto0 = p;
    struct slb_slice part[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
    if (value.len > 8 && name_is(p, "sip/2.0/", 8)) {
        /* The usual spelling, without LWS around the slashes. */
        const char *t0 = p += 8;
        while (p < end && token_char[(unsigned char)*p])
            p++;
        part[0] = (struct slb_slice){proto0, 3};
        part[1] = (struct slb_slice){proto0 + 4, 3};
        part[2] = (struct slb_slice){t0, (size_t)(p - t0)};
        if (part[2].len == 0)
            return -EINVAL;
    }
    for (int i = part[2].len ? 3 : 0; i < 3; i++) {
        while (p < end && is_lws(*p))
            p++;
        const char *t0 = p;
        while (p < end && token_char[(unsigned char)*p])
            p++;
        part[i] = (struct slb_slice){t0, (size_t)(p - t0)};
        if (part[i].len == 0)
            return -EINVAL;
        while (p < end && is_lws(*p))
            p++;
        if (i < 2) {
            if (p >= end || *p != '/')
                return -EINVAL;
            p++;
        }
    }
    if (part[0].len != 3 || !name_is(part[0].ptr, "sip", 3) || part[1].len != 3 ||
        memcmp(part[1].ptr, "2.0", 3) != 0)
        return -EINVAL;
    via->protocol = (struct slb_slice){proto0, (size_t)(part[2].ptr + part[2].len - proto0)};
    via->transport = part[2];
    /* sent-by = host [ COLON port ] */
    while (p < end && is_lws(*p))
        p++;
    const char *h0 = p;
    if (p < end && *p == '[') {
        while (p < end && *p != ']')
            p++;
        if (p >= end)
            return -EINVAL;
        p++;
        via->host = (struct slb_slice){h0, (size_t)(p - h0)};
    } else {
        p = find_either_s(p, end, safe, ':', ';');
        via->host = trim(h0, p);
        /* host = hostname / IPv4address (RFC 3261 25.1): letters, digits, '-' and '.' ('_'
         * tolerated). Anything else ("host junk", quotes that would change where the
         * next Via value starts once we edit this one) is not a sent-by. */
        for (size_t i = 0; i < via->host.len; i++) {
            unsigned char ch = (unsigned char)via->host.ptr[i];
            if (!((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') && !(ch >= '0' && ch <= '9') &&
                ch != '-' && ch != '.' && ch != '_')
                return -EINVAL;
        }
    }
    if (via->host.len == 0)
        return -EINVAL;
    while (p < end && is_lws(*p))
        p++;
    if (p < end && *p == ':') {
        p++;
        while (p < end && is_lws(*p))
            p++;
        const char *d0 = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        int64_t port = parse_digits((struct slb_slice){d0, (size_t)(p - d0)}, 65535);
        if (port < 0)
            return -EINVAL;
        via->port = (uint32_t)port;
        while (p < end && is_lws(*p))
            p++;
    }
    if (p < end && *p != ';')
        return -EINVAL;
    via->params = (struct slb_slice){p, (size_t)(end - p)};
    return via_params(via, safe);
}

int slb_sip_via_parse(struct slb_slice value, struct slb_sip_via *via)
{
    return via_parse_s(value, via, value.ptr + value.len);
}

/* Splits a Via header value into via-parms at top-level commas; an empty one (",,", a
 * trailing comma) is not a via-parm (RFC 3261 25.1). */
static int add_vias(struct slb_sip_msg *msg, struct slb_slice v, uint16_t header, const char *safe)
{
    if (!find_byte_s(v.ptr, v.ptr + v.len, safe, ',')) {
        /* One value per line is the common case: no need to look for quotes. */
        if (msg->via_count == SLB_SIP_MAX_VIAS)
            return -1;
        msg->vias[msg->via_count++] = (struct slb_sip_via_ref){v, header};
        return 0;
    }
    const char *p = v.ptr, *end = v.ptr + v.len, *start = p;
    for (;;) {
        if (p == end || *p == ',') {
            struct slb_slice one = trim(start, p);
            if (one.len == 0 || msg->via_count == SLB_SIP_MAX_VIAS)
                return -1;
            msg->vias[msg->via_count++] = (struct slb_sip_via_ref){one, header};
            if (p == end)
                return 0;
            start = ++p;
        } else if (*p == '"') {
            p = skip_quoted(p, end);
        } else {
            p++;
        }
    }
}

/* The tag parameter of a From or To value: parameters follow the '>' of a name-addr, or
 * the first ';' of an addr-spec (RFC 3261 20.10: such a URI cannot hold ';' itself).
 * *bad is set for a display name whose quoted string never ends (RFC 4475 3.1.2.6). */
static struct slb_slice find_tag(struct slb_slice v, const char *safe, bool *bad)
{
    const char *p = v.ptr, *end = v.ptr + v.len, *params = NULL;
    const char *first = find_either_s(p, end, safe, '"', '<');
    if (first == end || *first == '<') {
        /* No quoted display name before the URI: '<' or else ';' decides. */
        if (first < end) {
            const char *gt = find_byte_s(first, end, safe, '>');
            params = gt ? gt + 1 : NULL;
        } else {
            params = find_byte_s(p, end, safe, ';');
        }
        if (!params)
            return (struct slb_slice){NULL, 0};
    }
    while (p < end && !params) {
        switch (*p) {
        case '"':
            p = quoted_end(p, end);
            if (!p) {
                *bad = true;
                return (struct slb_slice){NULL, 0};
            }
            break;
        case '<': {
            const char *gt = memchr(p, '>', (size_t)(end - p));
            if (!gt)
                return (struct slb_slice){NULL, 0};
            params = gt + 1;
            break;
        }
        case ';':
            params = p;
            break;
        default:
            p++;
        }
    }
    struct slb_slice tag = {NULL, 0};
    if (params &&
        param_find_s((struct slb_slice){params, (size_t)(end - params)}, "tag", 3, safe, &tag) &&
        tag.len == 0)
        tag.ptr = NULL; /* a valueless tag is no tag */
    return tag;
}

/* A fault that breaks framing: the scan stops here. */
static int fail(struct slb_sip_msg *msg, enum slb_sip_err err)
{
    msg->err = err;
    return -EBADMSG;
}

/* A fault in one field: noted (the first one wins) and the scan goes on, so the end of the
 * message is still found and the stream survives a 400. */
static void soft_fail(struct slb_sip_msg *msg, enum slb_sip_err err)
{
    if (msg->err == SLB_SIP_E_NONE)
        msg->err = err;
}

/* "SIP/2.0", the literal "SIP" in any case (RFC 3261 25.1). */
static inline bool is_sip20(struct slb_slice v)
{
    return v.len == 7 && (v.ptr[0] | 0x20) == 's' && (v.ptr[1] | 0x20) == 'i' &&
           (v.ptr[2] | 0x20) == 'p' && memcmp(v.ptr + 3, "/2.0", 4) == 0;
}

/* Request-URI = SIP-URI / SIPS-URI / absoluteURI (RFC 3261 25.1): a scheme (ALPHA, then
 * ALPHA / DIGIT / "+" / "-" / "."), a colon, and no '<' or '>' (RFC 4475 3.1.2.7); a SIP
 * or SIPS URI there carries no headers after its host (RFC 3261 19.1.1, RFC 4475
 * 3.1.2.11). */
static bool ruri_ok(struct slb_slice u)
{
    size_t i = 0;
    if (u.len == 0 || !((u.ptr[0] | 0x20) >= 'a' && (u.ptr[0] | 0x20) <= 'z'))
        return false;
    while (i < u.len && u.ptr[i] != ':') {
        char c = u.ptr[i++];
        bool alpha = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
        if (!alpha && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.')
            return false;
    }
    if (i == u.len || memchr(u.ptr, '<', u.len) || memchr(u.ptr, '>', u.len))
        return false;
    bool sip = (i == 3 && slb_slice_eq_nocase((struct slb_slice){u.ptr, 3}, "sip")) ||
               (i == 4 && slb_slice_eq_nocase((struct slb_slice){u.ptr, 4}, "sips"));
    if (!sip)
        return true;
    /* The user part may hold '?' (RFC 3261 25.1 user-unreserved); headers follow the host. */
    const char *at = memchr(u.ptr, '@', u.len);
    const char *host = at ? at + 1 : u.ptr + i;
    return !memchr(host, '?', (size_t)(u.ptr + u.len - host));
}

/* Request-Line = Method SP Request-URI SP SIP-Version; Status-Line = SIP-Version SP
 * Status-Code SP Reason-Phrase (RFC 3261 7.1, 7.2). [p, eol) excludes the line end. */
static enum slb_sip_err scan_start_line(struct slb_sip_msg *msg, const char *p, const char *eol)
{
    if (has_ctl(p, eol))
        return SLB_SIP_E_CTL_BYTE;
    const char *sp1 = find_byte(p, eol, ' ');
    if (!sp1 || sp1 == p)
        return SLB_SIP_E_START_LINE;
    struct slb_slice first = {p, (size_t)(sp1 - p)};
    bool response = first.len >= 4 && slb_slice_eq_nocase((struct slb_slice){p, 4}, "SIP/");
    const char *rest = sp1 + 1;
    if (response) {
        msg->is_request = false;
        msg->version = first;
        if (eol - rest < 3 || (eol - rest > 3 && rest[3] != ' '))
            return SLB_SIP_E_START_LINE;
        int64_t code = parse_digits((struct slb_slice){rest, 3}, 699);
        if (code < 100)
            return SLB_SIP_E_START_LINE;
        msg->status = (uint16_t)code;
        msg->reason = eol - rest > 3 ? (struct slb_slice){rest + 4, (size_t)(eol - rest - 4)}
                                     : (struct slb_slice){eol, 0};
    } else {
        msg->is_request = true;
        for (size_t i = 0; i < first.len; i++)
            if (!token_char[(unsigned char)first.ptr[i]])
                return SLB_SIP_E_START_LINE;
        msg->method = first;
        msg->method_id = (uint8_t)slb_sip_method_id(first);
        const char *sp2 = find_byte(rest, eol, ' ');
        if (!sp2 || sp2 == rest)
            return SLB_SIP_E_START_LINE;
        msg->ruri = (struct slb_slice){rest, (size_t)(sp2 - rest)};
        msg->version = (struct slb_slice){sp2 + 1, (size_t)(eol - sp2 - 1)};
        if (find_byte(msg->version.ptr, eol, ' ') || !ruri_ok(msg->ruri))
            return SLB_SIP_E_START_LINE;
    }
    if (!is_sip20(msg->version)) {
        /* A SIP/x.y we do not speak earns 505 (RFC 3261 8.2.2 via 21.5.6); anything
         * else in that place is not SIP. */
        struct slb_slice v = msg->version;
        bool sip_like = v.len >= 7 && slb_slice_eq_nocase((struct slb_slice){v.ptr, 4}, "SIP/");
        return sip_like ? SLB_SIP_E_VERSION : SLB_SIP_E_START_LINE;
    }
    return SLB_SIP_E_NONE;
}

/* CSeq = 1*DIGIT LWS Method (RFC 3261 20.16). */
static int scan_cseq(struct slb_sip_msg *msg, struct slb_slice v)
{
    const char *p = v.ptr, *end = v.ptr + v.len;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    /* RFC 3261 8.1.1.5: the number is less than 2**31. */
    int64_t n = parse_digits((struct slb_slice){v.ptr, (size_t)(p - v.ptr)}, INT32_MAX);
    if (n < 0 || p == end || !is_lws(*p))
        return -1;
    struct slb_slice m = trim(p, end);
    if (m.len == 0)
        return -1;
    for (size_t i = 0; i < m.len; i++)
        if (!token_char[(unsigned char)m.ptr[i]])
            return -1;
    msg->cseq = (uint32_t)n;
    msg->cseq_method = m;
    msg->cseq_method_id = (uint8_t)slb_sip_method_id(m);
    return 0;
}

/* Interprets the value of one header the proxy needs. Returns -EBADMSG only for faults
 * that break framing (Content-Length); others are noted with soft_fail. */
static int scan_value(struct slb_sip_msg *msg, const struct slb_sip_limits *lim,
                      enum slb_sip_hdr_id id, struct slb_slice v, uint16_t index, const char *safe)
{
    switch (id) {
    case SLB_HDR_CALL_ID:
        if (msg->call_id.ptr)
            soft_fail(msg, SLB_SIP_E_DUP_CALL_ID);
        else if (v.len == 0)
            soft_fail(msg, SLB_SIP_E_NO_CALL_ID);
        else
            msg->call_id = v;
        break;
    case SLB_HDR_VIA:
        if (add_vias(msg, v, index, safe) < 0)
            soft_fail(msg, SLB_SIP_E_VIA);
        break;
    case SLB_HDR_CONTENT_LENGTH: {
        int64_t cl = parse_digits(v, INT64_C(999999999999));
        if (cl < 0)
            return fail(msg, SLB_SIP_E_CONTENT_LENGTH);
        if (msg->content_length >= 0 && msg->content_length != cl)
            return fail(msg, SLB_SIP_E_CONTENT_LENGTH_CONFLICT);
        if (cl > (int64_t)lim->max_msg_bytes)
            return fail(msg, SLB_SIP_E_TOO_LARGE);
        msg->content_length = cl;
        break;
    }
    case SLB_HDR_CSEQ:
        if (msg->cseq_method.ptr || scan_cseq(msg, v) < 0)
            soft_fail(msg, SLB_SIP_E_CSEQ);
        break;
    case SLB_HDR_MAX_FORWARDS: {
        int64_t n = parse_digits(v, INT32_MAX);
        if (n < 0)
            soft_fail(msg, SLB_SIP_E_MAX_FORWARDS);
        else if (msg->max_forwards < 0)
            msg->max_forwards = (int32_t)n;
        break;
    }
    case SLB_HDR_FROM:
    case SLB_HDR_TO:
        if (msg->first[id] == (int16_t)index) {
            bool bad = false;
            struct slb_slice tag = find_tag(v, safe, &bad);
            if (bad)
                soft_fail(msg, SLB_SIP_E_FROM_TO);
            *(id == SLB_HDR_FROM ? &msg->from_tag : &msg->to_tag) = tag;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* The checks that need the whole header (RFC 3261 8.1.1, 8.2.2). */
static void check_required(struct slb_sip_msg *msg, const char *safe)
{
    if (msg->via_count == 0) {
        memset(&msg->top_via, 0, sizeof(msg->top_via));
        soft_fail(msg, SLB_SIP_E_NO_VIA);
    } else if (via_parse_s(msg->vias[0].value, &msg->top_via, safe) < 0)
        soft_fail(msg, SLB_SIP_E_VIA);
    if (!msg->call_id.ptr)
        soft_fail(msg, SLB_SIP_E_NO_CALL_ID);
    if (!msg->cseq_method.ptr)
        soft_fail(msg, SLB_SIP_E_NO_CSEQ);
    if (msg->first[SLB_HDR_FROM] < 0)
        soft_fail(msg, SLB_SIP_E_NO_FROM);
    if (msg->first[SLB_HDR_TO] < 0)
        soft_fail(msg, SLB_SIP_E_NO_TO);
    /* RFC 3261 8.1.1.5: the CSeq method matches the request method. */
    if (msg->is_request && msg->cseq_method.ptr && !slb_slice_eq(msg->method, msg->cseq_method))
        soft_fail(msg, SLB_SIP_E_CSEQ);
}

static void msg_reset(struct slb_sip_msg *msg, struct slb_sip_header *headers)
{
    /* Field by field rather than one memset: the struct is large and most of it (Via
     * slots, the parsed top Via) is written before it is read. */
    static const struct slb_slice none = {NULL, 0};
    msg->header_len = 0;
    msg->msg_len = 0;
    msg->is_request = false;
    msg->method_id = SLB_METHOD_OTHER;
    msg->status = 0;
    msg->method = msg->ruri = msg->version = msg->reason = none;
    msg->call_id = msg->cseq_method = msg->from_tag = msg->to_tag = none;
    msg->cseq = 0;
    msg->cseq_method_id = SLB_METHOD_OTHER;
    msg->max_forwards = -1;
    msg->content_length = -1;
    msg->via_count = 0;
    memset(msg->first, 0xff, sizeof(msg->first));
    msg->headers = headers;
    msg->header_count = 0;
    msg->body = none;
    msg->err = SLB_SIP_E_NONE;
}

int slb_sip_scan(const char *buf, size_t len, const struct slb_sip_limits *lim,
                 struct slb_sip_msg *msg, struct slb_sip_header *headers, size_t max_headers)
{
    msg_reset(msg, headers);
    const char *end = buf + len;
    size_t max_line = lim->max_line_bytes;
    size_t max_hdrs = max_headers < lim->max_headers ? max_headers : lim->max_headers;

    const char *eol = find_nl(buf, buf + (len < max_line ? len : max_line));
    if (!eol)
        return len >= max_line ? fail(msg, SLB_SIP_E_LINE_TOO_LONG) : -EAGAIN;
    const char *line_end = eol > buf && eol[-1] == '\r' ? eol - 1 : eol;
    /* A bad start line is noted but the headers are still read: an error response needs
     * them, and the message end must be found for the stream to go on. */
    enum slb_sip_err start_err = scan_start_line(msg, buf, line_end);

    const char *p = eol + 1;
    const char *first_header = p;
    for (;;) {
        if (p >= end)
            return -EAGAIN;
        /* The empty line ends the headers (RFC 3261 7.5); a bare LF is tolerated. */
        if (*p == '\r' || *p == '\n') {
            if (*p == '\r') {
                if (p + 1 >= end)
                    return -EAGAIN;
                if (p[1] != '\n')
                    return fail(msg, SLB_SIP_E_HEADER_SYNTAX);
                p++;
            }
            p++;
            break;
        }
        if ((size_t)(p - buf) >= lim->max_msg_bytes)
            return fail(msg, SLB_SIP_E_TOO_LARGE);
        const char *line = p;
        /* Find the line end first, following folded continuation lines (RFC 3261
         * 7.3.1), then the colon inside it. Both usually sit in the first 16 or 32
         * bytes, so one block pass looks for both. */
        const char *scan = line, *colon = NULL;
#if defined(__SSE2__)
        if (end - line >= 32) {
            __m128i b0 = _mm_loadu_si128((const __m128i *)(const void *)line);
            __m128i b1 = _mm_loadu_si128((const __m128i *)(const void *)(line + 16));
            const __m128i nl = _mm_set1_epi8('\n'), co = _mm_set1_epi8(':');
            uint32_t mnl = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b0, nl)) |
                           (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b1, nl)) << 16;
            uint32_t mco = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b0, co)) |
                           (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b1, co)) << 16;
            if (mco && (!mnl || __builtin_ctz(mco) < __builtin_ctz(mnl)))
                colon = line + __builtin_ctz(mco);
            if (!mnl)
                scan = line + 32;
        }
#endif
        for (;;) {
            size_t room = (size_t)(end - scan);
            size_t cap = max_line - (size_t)(scan - line);
            eol = find_nl(scan, scan + (room < cap ? room : cap));
            if (!eol)
                return room >= cap ? fail(msg, SLB_SIP_E_LINE_TOO_LONG) : -EAGAIN;
            if (eol + 1 >= end)
                return -EAGAIN; /* the next byte may continue this line */
            if (!is_ws(eol[1]))
                break;
            scan = eol + 1;
        }
        if (!colon)
            colon = find_byte_s(line, eol, end, ':');
        const char *n1 = colon ? colon : eol;
        while (n1 > line && is_ws(n1[-1]))
            n1--;
        size_t name_len = (size_t)(n1 - line);
        enum slb_sip_hdr_id id = header_id(line, name_len);
        /* A known name matched its literal, which checked every byte; others are checked
         * here (RFC 3261 25.1: a header name is a token). */
        if (id == SLB_HDR_OTHER || !colon) {
            for (const char *q = line; q < n1; q++) {
                if (!token_char[(unsigned char)*q]) {
                    bool ctl = is_ctl((unsigned char)*q) && !is_ws(*q);
                    return fail(msg, ctl ? SLB_SIP_E_CTL_NAME : SLB_SIP_E_HEADER_SYNTAX);
                }
            }
            if (!colon || name_len == 0)
                return fail(msg, SLB_SIP_E_HEADER_SYNTAX);
        }
        const char *v0 = colon + 1;
        const char *n0 = line;
        if (msg->header_count == max_hdrs)
            return fail(msg, SLB_SIP_E_TOO_MANY_HEADERS);
        uint16_t index = (uint16_t)msg->header_count++;
        struct slb_sip_header *h = &headers[index];
        h->name = (struct slb_slice){n0, (size_t)(n1 - n0)};
        h->value = trim(v0, eol);
        h->line_off = (uint32_t)(line - buf);
        h->line_len = (uint32_t)(eol + 1 - line);
        h->id = (uint8_t)id;
        if (id != SLB_HDR_OTHER) {
            if (msg->first[id] < 0)
                msg->first[id] = (int16_t)index;
            if (scan_value(msg, lim, id, h->value, index, end) < 0)
                return -EBADMSG;
        }
        p = eol + 1;
    }

    msg->header_len = (uint32_t)(p - buf);
    if (has_nul_or_bare_cr(first_header, p) && nul_outside_quoted_pair(first_header, p))
        soft_fail(msg, SLB_SIP_E_CTL_VALUE); /* framing holds: answer 400, go on */
    if (msg->content_length < 0) {
        /* RFC 3261 18.3: a stream needs it. Without a start line either, this was
         * never a SIP message: stray bytes between messages. */
        return fail(msg,
                    start_err != SLB_SIP_E_NONE ? SLB_SIP_E_GARBAGE : SLB_SIP_E_NO_CONTENT_LENGTH);
    }
    if (start_err != SLB_SIP_E_NONE)
        msg->err = start_err; /* it came first */
    uint64_t total = (uint64_t)msg->header_len + (uint64_t)msg->content_length;
    if (total > lim->max_msg_bytes)
        return fail(msg, SLB_SIP_E_TOO_LARGE);
    msg->msg_len = (uint32_t)total;
    msg->body = (struct slb_slice){p, (size_t)msg->content_length};
    check_required(msg, end);
    return msg->err == SLB_SIP_E_NONE ? 0 : -EBADMSG;
}

size_t slb_sip_list_next(struct slb_slice v)
{
    const char *p = v.ptr, *end = v.ptr + v.len;
    bool in_angle = false;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = skip_quoted(p, end);
            continue;
        }
        if (c == '<')
            in_angle = true;
        else if (c == '>')
            in_angle = false;
        else if (c == ',' && !in_angle) {
            p++;
            while (p < end && is_lws(*p))
                p++;
            return (size_t)(p - v.ptr);
        }
        p++;
    }
    return v.len;
}

struct slb_slice slb_sip_first_uri(struct slb_slice v)
{
    size_t first_len = slb_sip_list_next(v);
    const char *p = v.ptr, *end = v.ptr + first_len;
    const char *lt = find_either_s(p, end, end, '<', '"');
    while (lt < end && *lt == '"') {
        p = skip_quoted(lt, end);
        lt = find_either_s(p, end, end, '<', '"');
    }
    if (lt < end) {
        const char *gt = find_byte(lt, end, '>');
        return gt ? (struct slb_slice){lt + 1, (size_t)(gt - lt - 1)} : (struct slb_slice){NULL, 0};
    }
    /* addr-spec: up to the comma, trimmed. */
    return trim(v.ptr, find_either_s(v.ptr, end, end, ',', ','));
}
