/* tls_conn.c — one TLS session over memory buffers.
 *
 * The owner's worker thread makes every call; wolfSSL's I/O callbacks run inside them:
 *  - receive copies from the chunk the owner lent to slb_tls_feed (after any stashed
 *    bytes) and answers WANT_READ when both are empty;
 *  - send hands each ciphertext burst to the owner's out_fn, all or nothing, and answers
 *    WANT_WRITE when the owner's queue is full.
 *
 * Invariants:
 *  - conn->in is valid only during one slb_tls_feed call; when it returns, every byte of it is
 *    inside wolfSSL or in conn->stash (allocated only when the owner's plaintext buffer filled
 *    first, freed as soon as it is drained), or was dropped after close_notify/failure.
 *  - While output is blocked, wolfSSL is driven only to retry that output: reading could
 *    queue more output behind it, and wolfSSL's write retry has strict rules (below).
 *  - wolfSSL 5.5.4 SendData, after a WANT_WRITE, resends its buffered record on the next
 *    wolfSSL_write and then skips prevSent+plainSz bytes of that call's data. We call
 *    wolfSSL_write with at most one record, so that sum is the size of the last call that
 *    hit WANT_WRITE while sending: conn->wpend mirrors it, and the retry passes exactly
 *    that size (wolfSSL reads none of the bytes since all were already encrypted).
 *  - After a failure conn->dead holds the errno every later call returns.
 *  - A server session of a context with several certificates (or strict SNI) starts with no
 *    WOLFSSL (conn->pending set): its input goes to the stash until the ClientHello's
 *    server_name can be read (tls_hello.c), then the WOLFSSL is made from the matching
 *    certificate's WOLFSSL_CTX and reads the stash first, as if nothing had happened.
 */
#include "tls/tls.h"
#include "tls/tls-int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

enum {
    F_SERVER = 1u << 0,         /* server side */
    F_HS_DONE = 1u << 1,        /* handshake finished */
    F_OUT_BLOCKED = 1u << 2,    /* out refused bytes; wolfSSL holds them */
    F_OUT_FAILED = 1u << 3,     /* out failed hard */
    F_PEER_CLOSED = 1u << 4,    /* close_notify received */
    F_VERIFIED = 1u << 5,       /* peer certificate verified */
    F_NEW_SESSION = 1u << 6,    /* client: wolfSSL stored a resumable session */
    F_CLOSE_SENT = 1u << 7,     /* we sent (or queued) close_notify */
    F_NO_CLIENT_CERT = 1u << 8, /* server: ask this client for no certificate */
};

/* Gather area for slb_tls_write: one record's worth per worker thread, so a message given
 * in pieces costs one memcpy and one record, and no allocation. */
static _Thread_local uint8_t scratch[SLB_TLS_RECORD_PLAIN_MAX];

/* --- wolfSSL I/O callbacks --------------------------------------------------------------- */

int slb_tls_io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    (void)ssl;
    struct slb_tls_conn *c = ctx;
    size_t want = sz > 0 ? (size_t)sz : 0;
    size_t got = 0;
    if (c->stash_len > 0) {
        size_t n = c->stash_len < want ? c->stash_len : want;
        memcpy(buf, c->stash + c->stash_off, n);
        c->stash_off += (uint32_t)n;
        c->stash_len -= (uint32_t)n;
        got = n;
    }
    if (got < want && c->in_len > 0) {
        size_t n = c->in_len < want - got ? c->in_len : want - got;
        memcpy(buf + got, c->in, n);
        c->in += n;
        c->in_len -= n;
        got += n;
    }
    return got > 0 ? (int)got : WOLFSSL_CBIO_ERR_WANT_READ;
}

int slb_tls_io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    (void)ssl;
    struct slb_tls_conn *c = ctx;
    if (sz <= 0)
        return 0;
    int r = c->out(c->out_arg, buf, (size_t)sz);
    if (r == sz)
        return sz;
    if (r == -ENOBUFS || r == -EAGAIN) {
        c->flags |= F_OUT_BLOCKED;
        return WOLFSSL_CBIO_ERR_WANT_WRITE;
    }
    /* A hard error, or a partial count that breaks the all-or-nothing contract: the byte
     * stream is lost either way. */
    c->flags |= F_OUT_FAILED;
    return WOLFSSL_CBIO_ERR_CONN_CLOSE;
}

int slb_tls_on_new_session(WOLFSSL *ssl, WOLFSSL_SESSION *sess)
{
    (void)sess;
    struct slb_tls_conn *c = wolfSSL_GetIOReadCtx(ssl);
    if (c != NULL)
        c->flags |= F_NEW_SESSION;
    return 0; /* wolfSSL keeps ownership: the owner takes its own copy when it wants one */
}

/* --- failure classification -------------------------------------------------------------- */

/* RFC 8446 6.2 / RFC 5246 7.2 alert descriptions, for alerts the peer sent us. */
static enum slb_tls_fail classify_alert(int desc)
{
    switch (desc) {
    case 0:  /* close_notify */
    case 90: /* user_canceled */
        return SLB_TLS_FAIL_PEER_CLOSED;
    case 40: /* handshake_failure: what peers send when nothing they support matches */
    case 71: /* insufficient_security */
        return SLB_TLS_FAIL_NO_SHARED_CIPHER;
    case 42:  /* bad_certificate */
    case 43:  /* unsupported_certificate */
    case 44:  /* certificate_revoked */
    case 45:  /* certificate_expired */
    case 46:  /* certificate_unknown */
    case 48:  /* unknown_ca */
    case 49:  /* access_denied */
    case 112: /* unrecognized_name: the server has no certificate for the name we sent */
    case 113: /* bad_certificate_status_response */
    case 116: /* certificate_required */
        return SLB_TLS_FAIL_BAD_CERT;
    case 10:  /* unexpected_message */
    case 20:  /* bad_record_mac */
    case 22:  /* record_overflow */
    case 47:  /* illegal_parameter */
    case 50:  /* decode_error */
    case 51:  /* decrypt_error */
    case 70:  /* protocol_version */
    case 86:  /* inappropriate_fallback */
    case 109: /* missing_extension */
    case 110: /* unsupported_extension */
        return SLB_TLS_FAIL_PROTOCOL;
    default:
        return SLB_TLS_FAIL_OTHER;
    }
}

/* Errors about the peer's certificate: missing, unparsable, untrusted, expired, wrong name
 * or usage, revoked. */
static bool is_cert_error(int e)
{
    switch (e) {
    case DOMAIN_NAME_MISMATCH:
    case IPADDR_MISMATCH:
    case NO_PEER_CERT:
    case NO_PEER_VERIFY:
    case VERIFY_CERT_ERROR:
    case VERIFY_SIGN_ERROR:
    case NOT_CA_ERROR:
    case MAX_CHAIN_ERROR:
    case KEYUSE_SIGNATURE_E:
    case KEYUSE_ENCIPHER_E:
    case EXTKEYUSE_AUTH_E:
    case OCSP_CERT_REVOKED:
    case CRL_CERT_REVOKED:
    case ASN_NO_SIGNER_E:
    case ASN_AFTER_DATE_E:
    case ASN_BEFORE_DATE_E:
    case ASN_SIG_CONFIRM_E:
    case ASN_SIG_OID_E:
    case ASN_SIG_KEY_E:
    case ASN_SIG_HASH_E:
    case ASN_SELF_SIGNED_E:
    case ASN_NAME_INVALID_E:
    case ASN_PATHLEN_INV_E:
    case ASN_PARSE_E:
    case ASN_CRIT_EXT_E:
    case ASN_ALT_NAME_E:
    case CRL_MISSING:         /* --crl given but no CRL from the certificate's issuer */
    case CRL_CERT_DATE_ERR:   /* that CRL has expired */
    case ASN_CRL_NO_SIGNER_E: /* that CRL verifies against no CA */
    case UNKNOWN_SNI_HOST_NAME_E:
        return true;
    default:
        return false;
    }
}

static enum slb_tls_fail classify(struct slb_tls_conn *c, int e)
{
    if (is_cert_error(e))
        return SLB_TLS_FAIL_BAD_CERT;
    switch (e) {
    case WOLFSSL_ERROR_ZERO_RETURN:
    case ZERO_RETURN:
    case SOCKET_PEER_CLOSED_E:
        return SLB_TLS_FAIL_PEER_CLOSED;
    case FATAL_ERROR: { /* the peer sent a fatal alert: its description says why */
        WOLFSSL_ALERT_HISTORY h;
        if (wolfSSL_get_alert_history(c->ssl, &h) == WOLFSSL_SUCCESS)
            return classify_alert(h.last_rx.code);
        return SLB_TLS_FAIL_OTHER;
    }
    case VERSION_ERROR:
    case UNSUPPORTED_PROTO_VERSION:
    case PARSE_ERROR:
    case UNKNOWN_RECORD_TYPE:
    case UNKNOWN_HANDSHAKE_TYPE:
    case DECRYPT_ERROR:
    case VERIFY_MAC_ERROR:
    case VERIFY_FINISHED_ERROR:
    case BUFFER_ERROR:
    case LENGTH_ERROR:
    case INCOMPLETE_DATA:
    case BAD_HELLO:
    case OUT_OF_ORDER_E:
    case SANITY_MSG_E:
    case DUPLICATE_MSG_E:
    case NO_CHANGE_CIPHER_E:
    case HANDSHAKE_SIZE_ERROR:
    case EXT_NOT_ALLOWED:
    case EXT_MISSING:
    case BAD_BINDER:
    case DECODE_E:
    case AES_GCM_AUTH_E:
    case DUPLICATE_TLS_EXT_E:
    case SECURE_RENEGOTIATION_E:
        return SLB_TLS_FAIL_PROTOCOL;
    case MATCH_SUITE_ERROR:
    case UNSUPPORTED_SUITE:
    case SANITY_CIPHER_E:
    case KEY_SHARE_ERROR:
    case ECC_CURVE_ERROR:
    case BAD_KEY_SHARE_DATA:
        return SLB_TLS_FAIL_NO_SHARED_CIPHER;
    default:
        return SLB_TLS_FAIL_OTHER;
    }
}

static int fail(struct slb_tls_conn *c, int e)
{
    c->err = e;
    if (c->flags & F_OUT_FAILED) {
        c->fail = SLB_TLS_FAIL_OTHER;
        c->dead = -EPIPE;
    } else {
        c->fail = (uint8_t)classify(c, e);
        c->dead = -EPROTO;
    }
    return c->dead;
}

/* --- driving wolfSSL --------------------------------------------------------------------- */

static void on_handshake_done(struct slb_tls_conn *c)
{
    c->flags |= F_HS_DONE;
    /* With REQUIRE a finished handshake means the chain (and host) verified. With OPTIONAL
     * the client may have sent no certificate: ask. */
    if (c->verify == SLB_TLS_VERIFY_REQUIRE) {
        c->flags |= F_VERIFIED;
    } else if (c->verify == SLB_TLS_VERIFY_OPTIONAL) {
        WOLFSSL_X509 *x = wolfSSL_get_peer_certificate(c->ssl);
        if (x != NULL) {
            c->flags |= F_VERIFIED;
            wolfSSL_X509_free(x);
        }
    }
}

static int step_handshake(struct slb_tls_conn *c, unsigned *ev)
{
    int r = wolfSSL_negotiate(c->ssl);
    if (r == WOLFSSL_SUCCESS) {
        on_handshake_done(c);
        *ev |= SLB_TLS_EV_HANDSHAKE_DONE;
        return 0;
    }
    int e = wolfSSL_get_error(c->ssl, r);
    if (e == WOLFSSL_ERROR_WANT_READ ||
        (e == WOLFSSL_ERROR_WANT_WRITE && !(c->flags & F_OUT_FAILED)))
        return 0;
    return fail(c, e);
}

/* Resend what out refused (see the header comment for the size passed to wolfSSL_write). */
static int retry_output(struct slb_tls_conn *c, unsigned *ev)
{
    c->flags &= ~F_OUT_BLOCKED;
    if (!(c->flags & F_HS_DONE)) {
        if (c->flags & F_CLOSE_SENT)
            return 0; /* closing mid-handshake: the queued alert is best effort */
        return step_handshake(c, ev);
    }
    int r = wolfSSL_write(c->ssl, scratch, (int)c->wpend);
    if (r == (int)c->wpend)
        return 0;
    int e = wolfSSL_get_error(c->ssl, r);
    if (e == WOLFSSL_ERROR_WANT_WRITE && !(c->flags & F_OUT_FAILED))
        return 0;
    return fail(c, e);
}

static int read_plain(struct slb_tls_conn *c, uint8_t *out, size_t cap, size_t *got, unsigned *ev)
{
    while (*got < cap && !(c->flags & F_OUT_BLOCKED)) {
        size_t room = cap - *got;
        int r = wolfSSL_read(c->ssl, out + *got, room > INT_MAX ? INT_MAX : (int)room);
        if (r > 0) {
            *got += (size_t)r;
            /* wolfSSL reads exactly the record it needs (no read-ahead over TLS), so with our
             * input spent and no plaintext left over the next read can only say WANT_READ:
             * skipping it saves a pass through the record layer and the error string
             * wolfSSL formats for every WANT_READ. */
            if (c->in_len == 0 && c->stash_len == 0 && !wolfSSL_has_pending(c->ssl))
                break;
            continue;
        }
        int e = wolfSSL_get_error(c->ssl, r);
        if (e == WOLFSSL_ERROR_WANT_READ)
            break;
        if (e == WOLFSSL_ERROR_WANT_WRITE && !(c->flags & F_OUT_FAILED))
            break;
        if (e == WOLFSSL_ERROR_ZERO_RETURN) { /* RFC 8446 6.1 close_notify */
            c->flags |= F_PEER_CLOSED;
            *ev |= SLB_TLS_EV_PEER_CLOSED;
            break;
        }
        return fail(c, e);
    }
    return 0;
}

static void stash_drop(struct slb_tls_conn *c)
{
    free(c->stash);
    c->stash = NULL;
    c->stash_off = c->stash_len = c->stash_cap = 0;
}

/* Keep the part of the lent chunk wolfSSL did not take, behind any older stashed bytes. */
static int stash_rest(struct slb_tls_conn *c)
{
    if (c->in_len == 0 || (c->flags & F_PEER_CLOSED)) {
        if (c->stash_len == 0 || (c->flags & F_PEER_CLOSED))
            stash_drop(c);
        return 0;
    }
    size_t need = (size_t)c->stash_len + c->in_len;
    size_t max = c->stash_max ? c->stash_max : SLB_TLS_STASH_MAX_BYTES;
    if (need > max) {
        c->fail = SLB_TLS_FAIL_OTHER;
        c->dead = -ENOBUFS;
        return c->dead;
    }
    if (c->stash_off > 0) {
        memmove(c->stash, c->stash + c->stash_off, c->stash_len);
        c->stash_off = 0;
    }
    if (need > c->stash_cap) {
        size_t cap = c->stash_cap ? 2 * (size_t)c->stash_cap : 4096;
        while (cap < need)
            cap *= 2;
        if (cap > max)
            cap = max;
        uint8_t *p = realloc(c->stash, cap);
        if (p == NULL) {
            c->fail = SLB_TLS_FAIL_OTHER;
            c->dead = -ENOMEM;
            return c->dead;
        }
        c->stash = p;
        c->stash_cap = (uint32_t)cap;
    }
    memcpy(c->stash + c->stash_len, c->in, c->in_len);
    c->stash_len += (uint32_t)c->in_len;
    c->in_len = 0;
    return 0;
}

static int finish_events(struct slb_tls_conn *c, unsigned ev, size_t got)
{
    if (got > 0)
        ev |= SLB_TLS_EV_DATA;
    if (c->flags & F_NEW_SESSION) {
        c->flags &= ~F_NEW_SESSION;
        ev |= SLB_TLS_EV_NEW_SESSION;
    }
    if (c->flags & F_OUT_BLOCKED) {
        ev |= SLB_TLS_EV_WANT_WRITE;
    } else if (!(c->flags & F_PEER_CLOSED) &&
               (c->stash_len > 0 || ((c->flags & F_HS_DONE) && wolfSSL_pending(c->ssl) > 0))) {
        ev |= SLB_TLS_EV_MORE;
    }
    return (int)ev;
}

/* --- public API -------------------------------------------------------------------------- */

/* The WOLFSSL of conn, from one of ctx's wolfSSL contexts. */
static int new_ssl(struct slb_tls_conn *conn, WOLFSSL_CTX *w)
{
    WOLFSSL *ssl = wolfSSL_new(w);
    if (ssl == NULL)
        return -ENOMEM;
    conn->ssl = ssl;
    wolfSSL_SetIOReadCtx(ssl, conn);
    wolfSSL_SetIOWriteCtx(ssl, conn);
    if (conn->flags & F_NO_CLIENT_CERT)
        wolfSSL_set_verify(ssl, WOLFSSL_VERIFY_NONE, NULL);
    return 0;
}

void slb_tls_conn_no_client_cert(struct slb_tls_conn *conn)
{
    conn->flags |= F_NO_CLIENT_CERT;
    conn->verify = SLB_TLS_VERIFY_NONE;
    if (conn->ssl)
        wolfSSL_set_verify(conn->ssl, WOLFSSL_VERIFY_NONE, NULL);
}

int slb_tls_conn_init(struct slb_tls_conn *conn, struct slb_tls_ctx *ctx, const char *host,
                      slb_tls_out_fn out, void *arg)
{
    if (conn == NULL || ctx == NULL || out == NULL)
        return -EINVAL;
    memset(conn, 0, sizeof(*conn));
    conn->out = out;
    conn->out_arg = arg;
    conn->verify = (uint8_t)ctx->verify;
    if (ctx->is_server)
        conn->flags |= F_SERVER;
    if (ctx->is_server && (ctx->n_certs > 1 || ctx->strict_sni)) {
        conn->pending = ctx; /* the ClientHello decides which certificate */
        return 0;
    }
    if (new_ssl(conn, ctx->wctx) < 0)
        return -ENOMEM;
    WOLFSSL *ssl = conn->ssl;

    if (!ctx->is_server && host != NULL && *host != '\0') {
        unsigned char tmp[16];
        bool is_ip = inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
        int rc = WOLFSSL_SUCCESS;
        /* RFC 6066 3: SNI carries DNS names only, never address literals. */
        if (!is_ip)
            rc = wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, host, (word16)strlen(host));
        if (rc == WOLFSSL_SUCCESS && ctx->verify != SLB_TLS_VERIFY_NONE) {
            if (is_ip)
                rc = wolfSSL_X509_VERIFY_PARAM_set1_ip_asc(wolfSSL_get0_param(ssl), host);
            else
                rc = wolfSSL_check_domain_name(ssl, host);
        }
        if (rc != WOLFSSL_SUCCESS) {
            slb_tls_conn_deinit(conn);
            return -EINVAL;
        }
    }
    return 0;
}

void slb_tls_conn_deinit(struct slb_tls_conn *conn)
{
    if (conn == NULL)
        return;
    if (conn->ssl != NULL)
        wolfSSL_free(conn->ssl);
    free(conn->stash);
    memset(conn, 0, sizeof(*conn));
}

void slb_tls_conn_set_stash_max(struct slb_tls_conn *conn, uint32_t bytes)
{
    conn->stash_max = bytes;
}

int slb_tls_conn_set_session(struct slb_tls_conn *conn, struct slb_tls_session *sess)
{
    if (conn->ssl == NULL || (conn->flags & (F_SERVER | F_HS_DONE)) || sess == NULL)
        return -EINVAL;
    /* wolfSSL copies the session; an expired one is refused and a full handshake follows. */
    if (wolfSSL_set_session(conn->ssl, (WOLFSSL_SESSION *)sess) != WOLFSSL_SUCCESS)
        return -EINVAL;
    return 0;
}

int slb_tls_start(struct slb_tls_conn *conn)
{
    size_t got = 0;
    return slb_tls_feed(conn, NULL, 0, NULL, 0, &got);
}

/* A pending server session refuses the client before any WOLFSSL exists: one plaintext
 * fatal alert record (RFC 8446 6), best effort, then the session is failed. */
static int refuse_hello(struct slb_tls_conn *c, uint8_t alert, int err, enum slb_tls_fail why)
{
    const uint8_t rec[7] = {21, 3, 3, 0, 2, 2, alert}; /* alert, TLS 1.2 record, fatal */
    (void)c->out(c->out_arg, rec, sizeof(rec));
    c->err = err;
    c->fail = (uint8_t)why;
    c->dead = -EPROTO;
    return c->dead;
}

/* Pending server session: stashes the input, and once the ClientHello's server_name can be
 * read, creates the WOLFSSL from the certificate it names. Returns 0 (c->ssl still NULL
 * while more bytes are needed) or a negative errno. */
static int take_hello(struct slb_tls_conn *c)
{
    if ((size_t)c->stash_len + c->in_len > SLB_TLS_HELLO_MAX_BYTES + 5u * SLB_TLS_HELLO_MAX_RECORDS)
        return refuse_hello(c, 50 /* decode_error */, BUFFER_ERROR, SLB_TLS_FAIL_PROTOCOL);
    int rc = stash_rest(c);
    if (rc < 0 || c->stash_len < c->hello_need || c->stash_len == 0)
        return rc;
    char name[256];
    size_t name_len, need;
    int r = slb_tls_client_hello_sni(c->stash + c->stash_off, c->stash_len, name, sizeof(name),
                                     &name_len, &need);
    if (r == 0) {
        c->hello_need = (uint32_t)need;
        return 0;
    }
    struct slb_tls_ctx *ctx = c->pending;
    int idx = r > 0 && name_len > 0 ? slb_tls_pick_cert(ctx, name, name_len) : -1;
    if (idx < 0 && ctx->strict_sni) {
        if (r < 0) /* not a ClientHello we can read: no name to accept */
            return refuse_hello(c, 50 /* decode_error */, BUFFER_ERROR, SLB_TLS_FAIL_PROTOCOL);
        /* RFC 6066 3: a name we have no certificate for. */
        return refuse_hello(c, 112 /* unrecognized_name */, UNKNOWN_SNI_HOST_NAME_E,
                            SLB_TLS_FAIL_BAD_CERT);
    }
    if (idx < 0)
        idx = 0; /* no name, an unknown one, or unreadable: wolfSSL judges it on the default */
    if ((rc = new_ssl(c, ctx->certs[idx].wctx)) < 0) {
        c->fail = SLB_TLS_FAIL_OTHER;
        c->dead = rc;
        return rc;
    }
    c->cert = (uint8_t)idx;
    c->pending = NULL;
    return 0;
}

int slb_tls_feed(struct slb_tls_conn *c, const void *cipher, size_t len, void *plain_out,
                 size_t cap, size_t *plain_len)
{
    *plain_len = 0;
    if (c->dead)
        return c->dead;
    c->in = cipher;
    c->in_len = cipher ? len : 0;
    if (c->ssl == NULL && c->pending != NULL) {
        int rc = take_hello(c);
        if (rc < 0 || c->ssl == NULL) {
            c->in = NULL;
            c->in_len = 0;
            if (rc < 0)
                stash_drop(c);
            return rc; /* 0: waiting for the rest of the ClientHello, nothing to report */
        }
    }
    if (c->ssl == NULL) {
        c->in = NULL;
        c->in_len = 0;
        return -EINVAL;
    }

    unsigned ev = 0;
    int rc = 0;
    if (c->flags & F_OUT_BLOCKED)
        rc = retry_output(c, &ev);
    if (rc == 0 && !(c->flags & (F_OUT_BLOCKED | F_PEER_CLOSED))) {
        if (!(c->flags & F_HS_DONE))
            rc = step_handshake(c, &ev);
        if (rc == 0 && (c->flags & F_HS_DONE) && !(c->flags & F_OUT_BLOCKED))
            rc = read_plain(c, plain_out, cap, plain_len, &ev);
    }
    if (rc == 0)
        rc = stash_rest(c);
    c->in = NULL;
    c->in_len = 0;
    if (rc < 0) {
        stash_drop(c);
        return rc;
    }
    return finish_events(c, ev, *plain_len);
}

/* Copies the next n bytes of the message into scratch, advancing (*i, *off). */
static const uint8_t *gather(const struct iovec *iov, int iovcnt, int *i, size_t *off, size_t n)
{
    /* Zero-length pieces would otherwise stall the cursor on a piece that has nothing. */
    while (*i < iovcnt && iov[*i].iov_len == *off) {
        (*i)++;
        *off = 0;
    }
    const uint8_t *base = iov[*i].iov_base;
    if (iov[*i].iov_len - *off >= n) { /* fits in one piece: no copy */
        const uint8_t *p = base + *off;
        *off += n;
        return p;
    }
    size_t done = 0;
    while (done < n) {
        size_t take = iov[*i].iov_len - *off;
        if (take > n - done)
            take = n - done;
        memcpy(scratch + done, (const uint8_t *)iov[*i].iov_base + *off, take);
        done += take;
        *off += take;
        if (*off == iov[*i].iov_len && *i + 1 < iovcnt) {
            (*i)++;
            *off = 0;
        }
    }
    return scratch;
}

int slb_tls_write(struct slb_tls_conn *c, const struct iovec *iov, int iovcnt)
{
    if (c->dead)
        return c->dead;
    if ((c->ssl == NULL && c->pending == NULL) || iovcnt < 0 || (iovcnt > 0 && iov == NULL))
        return -EINVAL;
    if (!(c->flags & F_HS_DONE))
        return -ENOTCONN;
    if (c->flags & F_CLOSE_SENT)
        return -EPIPE;
    if (c->flags & F_OUT_BLOCKED) {
        unsigned ev = 0;
        int rc = retry_output(c, &ev);
        if (rc < 0)
            return rc;
        if (c->flags & F_OUT_BLOCKED)
            return -EAGAIN;
    }
    size_t total = 0;
    for (int k = 0; k < iovcnt; k++) {
        total += iov[k].iov_len;
        if (total > INT_MAX || total < iov[k].iov_len)
            return -EMSGSIZE;
    }

    size_t done = 0, off = 0;
    int i = 0;
    while (done < total) {
        size_t n = total - done;
        if (n > SLB_TLS_RECORD_PLAIN_MAX)
            n = SLB_TLS_RECORD_PLAIN_MAX;
        const uint8_t *p = gather(iov, iovcnt, &i, &off, n);
        int r = wolfSSL_write(c->ssl, p, (int)n);
        if (r != (int)n) {
            int e = wolfSSL_get_error(c->ssl, r);
            if (e != WOLFSSL_ERROR_WANT_WRITE || (c->flags & F_OUT_FAILED))
                return fail(c, e);
            /* The record is built and queued inside wolfSSL: the bytes are taken. */
            c->wpend = (uint32_t)n;
        }
        done += n;
        if (c->flags & F_OUT_BLOCKED)
            break;
    }
    return (int)done;
}

int slb_tls_flush(struct slb_tls_conn *c)
{
    if (c->dead)
        return c->dead;
    if (c->ssl == NULL)
        return c->pending != NULL ? 0 : -EINVAL; /* nothing sent yet, nothing to retry */
    unsigned ev = 0;
    if (c->flags & F_OUT_BLOCKED) {
        int rc = retry_output(c, &ev);
        if (rc < 0) {
            stash_drop(c);
            return rc;
        }
    }
    return finish_events(c, ev, 0);
}

int slb_tls_close(struct slb_tls_conn *c)
{
    if (c->dead)
        return c->dead;
    if (c->ssl == NULL && c->pending != NULL) {
        c->flags |= F_CLOSE_SENT; /* before our first byte: just the TCP close */
        return 0;
    }
    if (c->ssl == NULL)
        return -EINVAL;
    if (c->flags & F_CLOSE_SENT)
        return (c->flags & F_OUT_BLOCKED) ? -EAGAIN : 0;
    c->flags |= F_CLOSE_SENT;
    int r = wolfSSL_shutdown(c->ssl);
    if (r == WOLFSSL_SUCCESS || r == WOLFSSL_SHUTDOWN_NOT_DONE)
        return (c->flags & F_OUT_BLOCKED) ? -EAGAIN : 0;
    int e = wolfSSL_get_error(c->ssl, r);
    if (e == WOLFSSL_ERROR_WANT_WRITE && !(c->flags & F_OUT_FAILED))
        return -EAGAIN;
    return fail(c, e);
}

/* --- state ------------------------------------------------------------------------------- */

bool slb_tls_handshake_done(const struct slb_tls_conn *c)
{
    return c->flags & F_HS_DONE;
}

bool slb_tls_peer_closed(const struct slb_tls_conn *c)
{
    return c->flags & F_PEER_CLOSED;
}

bool slb_tls_want_write(const struct slb_tls_conn *c)
{
    return c->flags & F_OUT_BLOCKED;
}

bool slb_tls_peer_verified(const struct slb_tls_conn *c)
{
    return c->flags & F_VERIFIED;
}

unsigned slb_tls_cert_index(const struct slb_tls_conn *c)
{
    return c->cert;
}

bool slb_tls_resumed(const struct slb_tls_conn *c)
{
    return c->ssl != NULL && (c->flags & F_HS_DONE) && wolfSSL_session_reused(c->ssl) == 1;
}

enum slb_tls_version slb_tls_version(const struct slb_tls_conn *c)
{
    if (c->ssl == NULL || !(c->flags & F_HS_DONE))
        return SLB_TLS_VERSION_DEFAULT;
    switch (wolfSSL_GetVersion(c->ssl)) {
    case WOLFSSL_TLSV1_3:
        return SLB_TLS_VERSION_1_3;
    case WOLFSSL_TLSV1_2:
        return SLB_TLS_VERSION_1_2;
    default:
        return SLB_TLS_VERSION_DEFAULT;
    }
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

const char *slb_tls_version_name(const struct slb_tls_conn *c)
{
    return c->ssl && (c->flags & F_HS_DONE) ? or_empty(wolfSSL_get_version(c->ssl)) : "";
}

const char *slb_tls_cipher_name(const struct slb_tls_conn *c)
{
    return c->ssl && (c->flags & F_HS_DONE) ? or_empty(wolfSSL_get_cipher_name(c->ssl)) : "";
}

const char *slb_tls_group_name(const struct slb_tls_conn *c)
{
    return c->ssl && (c->flags & F_HS_DONE) ? or_empty(wolfSSL_get_curve_name(c->ssl)) : "";
}

enum slb_tls_fail slb_tls_fail_reason(const struct slb_tls_conn *c)
{
    return (enum slb_tls_fail)c->fail;
}

const char *slb_tls_fail_name(enum slb_tls_fail reason)
{
    static const char *const names[SLB_TLS_FAIL_COUNT] = {
        [SLB_TLS_FAIL_NONE] = "none",
        [SLB_TLS_FAIL_PROTOCOL] = "protocol",
        [SLB_TLS_FAIL_BAD_CERT] = "bad-cert",
        [SLB_TLS_FAIL_NO_SHARED_CIPHER] = "no-shared-cipher",
        [SLB_TLS_FAIL_PEER_CLOSED] = "peer-closed",
        [SLB_TLS_FAIL_OTHER] = "other",
    };
    return (unsigned)reason < SLB_TLS_FAIL_COUNT ? names[reason] : "other";
}

const char *slb_tls_error_string(const struct slb_tls_conn *c, char *buf, size_t len)
{
    if (len == 0)
        return buf;
    if (c->dead == 0) {
        snprintf(buf, len, "no error");
    } else if (c->dead != -EPROTO) {
        snprintf(buf, len, "%s (%s)", strerror(-c->dead), slb_tls_fail_name(c->fail));
    } else {
        char w[WOLFSSL_MAX_ERROR_SZ];
        wolfSSL_ERR_error_string_n((unsigned long)c->err, w, sizeof(w));
        snprintf(buf, len, "%s: wolfSSL error %d: %s", slb_tls_fail_name(c->fail), c->err, w);
    }
    return buf;
}

/* --- client sessions --------------------------------------------------------------------- */

struct slb_tls_session *slb_tls_session_get(struct slb_tls_conn *c)
{
    if (c->ssl == NULL || (c->flags & F_SERVER) || !(c->flags & F_HS_DONE))
        return NULL;
    WOLFSSL_SESSION *s = wolfSSL_get1_session(c->ssl);
    if (s == NULL)
        return NULL;
    /* get1 returns wolfSSL's live object, which it keeps updating as tickets arrive; the
     * owner gets a private copy it can keep after this connection is gone. */
    WOLFSSL_SESSION *copy = wolfSSL_SESSION_dup(s);
    wolfSSL_SESSION_free(s);
    return (struct slb_tls_session *)copy;
}

void slb_tls_session_free(struct slb_tls_session *sess)
{
    if (sess != NULL)
        wolfSSL_SESSION_free((WOLFSSL_SESSION *)sess);
}
