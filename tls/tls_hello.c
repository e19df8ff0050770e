/* tls_hello.c — the server_name of a TLS ClientHello, read before wolfSSL sees it.
 *
 * Pure: bytes in, a name out; no allocation, no wolfSSL. Input is hostile: every length is
 * checked against both the bytes at hand and the enclosing structure before it is used.
 * The ClientHello may be split over several handshake records (RFC 8446 5.1); the reader
 * walks record boundaries as it goes. Called again from the start when more bytes arrive,
 * so the caller bounds the work with the `need` hint and the size limits below.
 */
#include "tls/tls.h"

#include <errno.h>
#include <string.h>

enum {
    REC_HANDSHAKE = 22,      /* RFC 8446 5.1 ContentType handshake */
    HS_CLIENT_HELLO = 1,     /* RFC 8446 4 HandshakeType client_hello */
    EXT_SERVER_NAME = 0,     /* RFC 6066 3 */
    NAME_HOST = 0,           /* RFC 6066 3 NameType host_name */
    REC_PAYLOAD_MAX = 16384, /* RFC 8446 5.1: 2^14 */
};

/* A cursor over the handshake bytes carried by consecutive handshake records. */
struct reader {
    const uint8_t *start, *p, *end; /* the wire bytes; p: next unread */
    size_t frag;                    /* payload bytes left in the current record */
    size_t msg;                     /* body bytes left in the ClientHello (after its header) */
    unsigned records;               /* records entered so far */
    size_t need;                    /* when more is needed: wire length worth waiting for */
};

/* Takes n handshake bytes (copied to out unless it is NULL). 1: done; 0: more wire bytes
 * needed (r->need set); -EPROTO: not handshake records; -EMSGSIZE: too many records. */
static int take(struct reader *r, uint8_t *out, size_t n)
{
    while (n > 0) {
        if (r->frag == 0) {
            if (r->end - r->p < 5) {
                r->need = (size_t)(r->p - r->start) + 5;
                return 0;
            }
            size_t len = (size_t)r->p[3] << 8 | r->p[4];
            /* RFC 8446 5.1: no zero-length handshake fragments. */
            if (r->p[0] != REC_HANDSHAKE || r->p[1] != 3 || len == 0 || len > REC_PAYLOAD_MAX)
                return -EPROTO;
            if (++r->records > SLB_TLS_HELLO_MAX_RECORDS)
                return -EMSGSIZE;
            r->frag = len;
            r->p += 5;
        }
        size_t avail = (size_t)(r->end - r->p);
        if (avail == 0) {
            r->need = (size_t)(r->p - r->start) + r->frag;
            return 0;
        }
        size_t k = avail < r->frag ? avail : r->frag;
        if (k > n)
            k = n;
        if (out != NULL) {
            memcpy(out, r->p, k);
            out += k;
        }
        r->p += k;
        r->frag -= k;
        n -= k;
    }
    return 1;
}

/* n bytes of the ClientHello body: -EPROTO when the body has fewer left. */
static int body(struct reader *r, uint8_t *out, size_t n)
{
    if (n > r->msg)
        return -EPROTO;
    int rc = take(r, out, n);
    if (rc == 1)
        r->msg -= n;
    return rc;
}

/* A big-endian integer of n (1..3) body bytes. */
static int body_uint(struct reader *r, size_t n, size_t *v)
{
    uint8_t b[3];
    int rc = body(r, b, n);
    if (rc != 1)
        return rc;
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v = *v << 8 | b[i];
    return 1;
}

/* Skips a vector with an n-byte length prefix whose length lies in [min, max]. */
static int skip_vector(struct reader *r, size_t n, size_t min, size_t max)
{
    size_t len;
    int rc = body_uint(r, n, &len);
    if (rc != 1)
        return rc;
    if (len < min || len > max)
        return -EPROTO;
    return body(r, NULL, len);
}

/* The server_name extension's body (ext_len bytes): the first host_name, if usable. */
static int server_name(struct reader *r, size_t ext_len, char *name, size_t cap, size_t *len)
{
    size_t list;
    int rc = body_uint(r, 2, &list);
    if (rc != 1)
        return rc;
    if (ext_len < 2 || list != ext_len - 2 || list < 3)
        return -EPROTO;
    while (list > 0) {
        size_t type, n;
        if (list < 3)
            return -EPROTO;
        if ((rc = body_uint(r, 1, &type)) != 1 || (rc = body_uint(r, 2, &n)) != 1)
            return rc;
        list -= 3;
        if (n == 0 || n > list)
            return -EPROTO;
        list -= n;
        /* The first host_name counts (RFC 6066 3 allows one per type); an overlong one or
         * one holding a NUL is no name at all. */
        if (type == NAME_HOST && *len == 0 && n < cap) {
            if ((rc = body(r, (uint8_t *)name, n)) != 1)
                return rc;
            name[n] = '\0';
            *len = memchr(name, '\0', n) ? 0 : n;
        } else if ((rc = body(r, NULL, n)) != 1) {
            return rc;
        }
    }
    return 1;
}

int slb_tls_client_hello_sni(const void *data, size_t len, char *name, size_t cap, size_t *name_len,
                             size_t *need)
{
    struct reader r = {.start = data, .p = data, .end = (const uint8_t *)data + len};
    *name_len = 0;
    *need = 0;
    if (cap > 0)
        name[0] = '\0';
    uint8_t hs[4];
    int rc = take(&r, hs, sizeof(hs));
    if (rc != 1)
        goto out;
    r.msg = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
    if (hs[0] != HS_CLIENT_HELLO) {
        rc = -EPROTO;
        goto out;
    }
    if (r.msg > SLB_TLS_HELLO_MAX_BYTES) {
        rc = -EMSGSIZE;
        goto out;
    }
    /* RFC 8446 4.1.2: legacy_version, random, legacy_session_id<0..32>,
     * cipher_suites<2..2^16-2>, legacy_compression_methods<1..2^8-1>; extensions (absent
     * in some TLS 1.2 ClientHellos: RFC 5246 7.4.1.2). */
    if ((rc = body(&r, NULL, 2 + 32)) != 1 || (rc = skip_vector(&r, 1, 0, 32)) != 1 ||
        (rc = skip_vector(&r, 2, 2, 65534)) != 1 || (rc = skip_vector(&r, 1, 1, 255)) != 1)
        goto out;
    if (r.msg == 0)
        goto out; /* no extensions: no name */
    size_t exts;
    if ((rc = body_uint(&r, 2, &exts)) != 1)
        goto out;
    if (exts != r.msg) {
        rc = -EPROTO;
        goto out;
    }
    while (r.msg > 0) {
        size_t type, ext_len;
        if ((rc = body_uint(&r, 2, &type)) != 1 || (rc = body_uint(&r, 2, &ext_len)) != 1)
            goto out;
        if (ext_len > r.msg) {
            rc = -EPROTO;
            goto out;
        }
        if (type == EXT_SERVER_NAME) {
            /* The name is all we want: the rest is wolfSSL's to judge. */
            rc = server_name(&r, ext_len, name, cap, name_len);
            goto out;
        }
        if ((rc = body(&r, NULL, ext_len)) != 1)
            goto out;
    }
out:
    if (rc != 1)
        *name_len = 0;
    if (rc == 0)
        *need = r.need;
    return rc;
}
