/* tls_ctx.c — process-wide wolfSSL set-up, contexts, and the shared session-ticket key.
 *
 * Threads: slb_tls_init, slb_tls_set_ticket_key and the context constructors run at boot on
 * the main thread, before workers start. Afterwards contexts and the ticket key are
 * read-only, so every worker reads them without a lock (wolfSSL_new only bumps a context's
 * reference count under wolfSSL's own mutex, and each worker has its own contexts).
 *
 * Invariants: every context gets our I/O callbacks (wolfSSL never sees a socket), and every
 * server context seals tickets with the one process key, so a ticket issued by any worker
 * resumes on any other. Server contexts keep no session cache: resumption is by ticket only,
 * so no handshake writes to state shared between workers.
 */
#include "tls/tls.h"
#include "tls/tls-int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include <wolfssl/openssl/evp.h>
#include <wolfssl/openssl/pem.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/ecc.h>

#define TICKET_NAME_BYTES    16
#define TICKET_AES_KEY_BYTES 32
#define TICKET_NONCE_BYTES   12 /* GCM's natural nonce; the rest of wolfSSL's 16-byte IV is zero */
#define TICKET_TAG_BYTES     16

_Static_assert(TICKET_NAME_BYTES == WOLFSSL_TICKET_NAME_SZ, "ticket name size");
_Static_assert(TICKET_TAG_BYTES <= WOLFSSL_TICKET_MAC_SZ, "ticket tag size");
_Static_assert(TICKET_NAME_BYTES + TICKET_AES_KEY_BYTES == SLB_TLS_TICKET_KEY_BYTES,
               "ticket key layout");

/* Written at boot only (see the header comment). */
static struct {
    uint8_t name[TICKET_NAME_BYTES];
    uint8_t key[TICKET_AES_KEY_BYTES];
    bool ready;
} ticket_key;

static bool wolf_ready;

int slb_tls_init(void)
{
    if (wolf_ready)
        return 0;
    if (wolfSSL_Init() != WOLFSSL_SUCCESS)
        return -ENOMEM;
    uint8_t raw[SLB_TLS_TICKET_KEY_BYTES];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        int e = errno ? errno : EIO;
        wolfSSL_Cleanup();
        return -e;
    }
    slb_tls_set_ticket_key(raw, sizeof(raw));
    explicit_bzero(raw, sizeof(raw));
    wolf_ready = true;
    return 0;
}

int slb_tls_set_ticket_key(const void *key, size_t len)
{
    if (key == NULL || len != SLB_TLS_TICKET_KEY_BYTES)
        return -EINVAL;
    memcpy(ticket_key.name, key, TICKET_NAME_BYTES);
    memcpy(ticket_key.key, (const uint8_t *)key + TICKET_NAME_BYTES, TICKET_AES_KEY_BYTES);
    ticket_key.ready = true;
    return 0;
}

void slb_tls_thread_cleanup(void)
{
#ifdef FP_ECC
    wc_ecc_fp_free(); /* the per-thread fixed-point cache (--enable-fpecc), ~366 KB */
#endif
}

void slb_tls_cleanup(void)
{
    if (!wolf_ready)
        return;
    slb_tls_thread_cleanup();
    wolfSSL_Cleanup();
    explicit_bzero(&ticket_key, sizeof(ticket_key));
    wolf_ready = false;
}

const char *slb_tls_library_version(void)
{
    return wolfSSL_lib_version();
}

bool slb_tls_library_has_asm(void)
{
#if defined(WOLFSSL_AESNI) && defined(WOLFSSL_SP_X86_64_ASM)
    return true;
#else
    return false;
#endif
}

/* Seals session state with AES-256-GCM under the process key. AAD binds key name, IV and
 * length as wolfSSL's own callback does. Unknown key names and failed tags reject the ticket
 * (a full handshake follows) rather than fail the connection. */
static int ticket_cb(WOLFSSL *ssl, unsigned char key_name[WOLFSSL_TICKET_NAME_SZ],
                     unsigned char iv[WOLFSSL_TICKET_IV_SZ],
                     unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *ticket,
                     int in_len, int *out_len, void *user)
{
    (void)ssl;
    (void)user;
    if (!ticket_key.ready || in_len < 0)
        return WOLFSSL_TICKET_RET_REJECT;
    if (enc) {
        memcpy(key_name, ticket_key.name, TICKET_NAME_BYTES);
        memset(iv, 0, WOLFSSL_TICKET_IV_SZ);
        /* Random 96-bit nonces: safe for far more tickets than one key will ever seal. */
        if (getrandom(iv, TICKET_NONCE_BYTES, 0) != TICKET_NONCE_BYTES)
            return WOLFSSL_TICKET_RET_REJECT;
    } else if (memcmp(key_name, ticket_key.name, TICKET_NAME_BYTES) != 0) {
        return WOLFSSL_TICKET_RET_REJECT;
    }

    uint8_t aad[TICKET_NAME_BYTES + WOLFSSL_TICKET_IV_SZ + 2];
    memcpy(aad, ticket_key.name, TICKET_NAME_BYTES);
    memcpy(aad + TICKET_NAME_BYTES, iv, WOLFSSL_TICKET_IV_SZ);
    aad[sizeof(aad) - 2] = (uint8_t)((unsigned)in_len >> 8);
    aad[sizeof(aad) - 1] = (uint8_t)in_len;

    Aes aes;
    int rc = wc_AesInit(&aes, NULL, INVALID_DEVID);
    if (rc == 0)
        rc = wc_AesGcmSetKey(&aes, ticket_key.key, TICKET_AES_KEY_BYTES);
    if (rc == 0 && enc) {
        rc = wc_AesGcmEncrypt(&aes, ticket, ticket, (word32)in_len, iv, TICKET_NONCE_BYTES, mac,
                              TICKET_TAG_BYTES, aad, sizeof(aad));
        memset(mac + TICKET_TAG_BYTES, 0, WOLFSSL_TICKET_MAC_SZ - TICKET_TAG_BYTES);
    } else if (rc == 0) {
        rc = wc_AesGcmDecrypt(&aes, ticket, ticket, (word32)in_len, iv, TICKET_NONCE_BYTES, mac,
                              TICKET_TAG_BYTES, aad, sizeof(aad));
    }
    wc_AesFree(&aes);
    if (rc != 0)
        return WOLFSSL_TICKET_RET_REJECT;
    *out_len = in_len;
    return WOLFSSL_TICKET_RET_OK;
}

/* --- error lines ------------------------------------------------------------------------ */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* wolfSSL's reason for the last failure, if its error queue has one. */
static const char *wolf_reason(char *buf, size_t len)
{
    unsigned long e = wolfSSL_ERR_get_error();
    if (e == 0)
        return "unrecognised contents";
    wolfSSL_ERR_error_string_n(e, buf, len);
    return buf;
}

/* A file that cannot be opened gets the OS reason; wolfSSL would only say "failure". */
static bool check_readable(const char *side, const char *what, const char *path, char *err,
                           size_t errlen)
{
    if (access(path, R_OK) == 0)
        return true;
    set_err(err, errlen, "tls: %s: %s %s: %s", side, what, path, strerror(errno));
    return false;
}

/* --- shared context set-up --------------------------------------------------------------- */

static int wolf_version(enum slb_tls_version v)
{
    return v == SLB_TLS_VERSION_1_3 ? WOLFSSL_TLSV1_3 : WOLFSSL_TLSV1_2;
}

static bool valid_version(enum slb_tls_version v)
{
    return v == SLB_TLS_VERSION_DEFAULT || v == SLB_TLS_VERSION_1_2 || v == SLB_TLS_VERSION_1_3;
}

/* Picks the narrowest method for [min, max]: a TLS 1.3-only or 1.2-only method skips the
 * version negotiation code; otherwise SSLv23 (1.2 and 1.3) with a minimum. */
static WOLFSSL_CTX *new_wctx(bool server, enum slb_tls_version min, enum slb_tls_version max,
                             const char *side, char *err, size_t errlen)
{
    if (!valid_version(min) || !valid_version(max)) {
        set_err(err, errlen, "tls: %s: unknown TLS version (use 1.2 or 1.3)", side);
        return NULL;
    }
    if (min == SLB_TLS_VERSION_DEFAULT)
        min = SLB_TLS_VERSION_1_2;
    if (max == SLB_TLS_VERSION_DEFAULT)
        max = SLB_TLS_VERSION_1_3;
    if (min > max) {
        set_err(err, errlen, "tls: %s: minimum TLS version is above the maximum", side);
        return NULL;
    }
    WOLFSSL_METHOD *m;
    if (min == SLB_TLS_VERSION_1_3)
        m = server ? wolfTLSv1_3_server_method() : wolfTLSv1_3_client_method();
    else if (max == SLB_TLS_VERSION_1_2)
        m = server ? wolfTLSv1_2_server_method() : wolfTLSv1_2_client_method();
    else
        m = server ? wolfSSLv23_server_method() : wolfSSLv23_client_method();
    WOLFSSL_CTX *w = m ? wolfSSL_CTX_new(m) : NULL;
    if (w == NULL) {
        set_err(err, errlen, "tls: %s: out of memory creating the context", side);
        return NULL;
    }
    if (wolfSSL_CTX_SetMinVersion(w, wolf_version(min)) != WOLFSSL_SUCCESS) {
        set_err(err, errlen, "tls: %s: cannot set the minimum TLS version", side);
        wolfSSL_CTX_free(w);
        return NULL;
    }
    wolfSSL_CTX_SetIORecv(w, slb_tls_io_recv);
    wolfSSL_CTX_SetIOSend(w, slb_tls_io_send);
    return w;
}

static const struct {
    const char *name;
    int id;
} group_names[] = {
    {"P-256", WOLFSSL_ECC_SECP256R1},     {"prime256v1", WOLFSSL_ECC_SECP256R1},
    {"secp256r1", WOLFSSL_ECC_SECP256R1}, {"P-384", WOLFSSL_ECC_SECP384R1},
    {"secp384r1", WOLFSSL_ECC_SECP384R1}, {"P-521", WOLFSSL_ECC_SECP521R1},
    {"secp521r1", WOLFSSL_ECC_SECP521R1}, {"X25519", WOLFSSL_ECC_X25519},
    {"X448", WOLFSSL_ECC_X448},
};

/* "P-256:X25519" in preference order. The first one is the client's TLS 1.3 key share. */
static bool set_groups(WOLFSSL_CTX *w, bool server, const char *list, const char *side, char *err,
                       size_t errlen)
{
    int ids[8];
    int n = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ":,");
        if (len > 0) {
            size_t i = 0;
            for (; i < sizeof(group_names) / sizeof(group_names[0]); i++) {
                if (strlen(group_names[i].name) == len &&
                    strncasecmp(group_names[i].name, p, len) == 0)
                    break;
            }
            if (i == sizeof(group_names) / sizeof(group_names[0]) || n == 8) {
                set_err(err, errlen, "tls: %s: groups \"%s\": unknown or too many groups", side,
                        list);
                return false;
            }
            ids[n++] = group_names[i].id;
        }
        p += len;
        if (*p)
            p++;
    }
    if (n == 0) {
        set_err(err, errlen, "tls: %s: groups \"%s\" is empty", side, list);
        return false;
    }
    if (wolfSSL_CTX_set_groups(w, ids, n) != WOLFSSL_SUCCESS) {
        set_err(err, errlen, "tls: %s: groups \"%s\" not supported by this wolfSSL", side, list);
        return false;
    }
    /* TLS 1.2 negotiates the ECDHE curve from the client's supported_groups extension. */
    for (int i = 0; !server && i < n; i++) {
        if (wolfSSL_CTX_UseSupportedCurve(w, (word16)ids[i]) != WOLFSSL_SUCCESS) {
            set_err(err, errlen, "tls: %s: groups \"%s\" not supported", side, list);
            return false;
        }
    }
    return true;
}

static bool set_ciphers(WOLFSSL_CTX *w, const char *list, const char *side, char *err,
                        size_t errlen)
{
    if (wolfSSL_CTX_set_cipher_list(w, list) == WOLFSSL_SUCCESS)
        return true;
    set_err(err, errlen, "tls: %s: ciphers \"%s\": no cipher suite this wolfSSL knows", side, list);
    return false;
}

/* Proof that key and the leaf certificate belong together: sign a test message with the key
 * and verify it with the certificate's public key. wolfSSL_CTX_check_private_key alone is not
 * enough: Debian's 5.5.4 build (crypto callbacks compiled in) passes a mismatched EC key, and
 * a server that cannot sign for its certificate would fail every handshake instead of boot. */
static bool key_signs_for_cert(const char *cert, const char *key)
{
    static const unsigned char msg[] = "sipslb certificate/key check";
    bool ok = false;
    WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(cert, WOLFSSL_FILETYPE_PEM);
    WOLFSSL_EVP_PKEY *pub = x ? wolfSSL_X509_get_pubkey(x) : NULL;
    WOLFSSL_EVP_PKEY *priv = NULL;
    FILE *f = fopen(key, "r");
    if (f != NULL) {
        priv = wolfSSL_PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    WOLFSSL_EVP_MD_CTX *sign = wolfSSL_EVP_MD_CTX_new();
    WOLFSSL_EVP_MD_CTX *verify = wolfSSL_EVP_MD_CTX_new();
    unsigned char sig[1024]; /* RSA-8192 at most */
    size_t siglen = sizeof(sig);
    if (pub && priv && sign && verify &&
        wolfSSL_EVP_DigestSignInit(sign, NULL, wolfSSL_EVP_sha256(), NULL, priv) == 1 &&
        wolfSSL_EVP_DigestSignUpdate(sign, msg, sizeof(msg)) == 1 &&
        wolfSSL_EVP_DigestSignFinal(sign, sig, &siglen) == 1 &&
        wolfSSL_EVP_DigestVerifyInit(verify, NULL, wolfSSL_EVP_sha256(), NULL, pub) == 1 &&
        wolfSSL_EVP_DigestVerifyUpdate(verify, msg, sizeof(msg)) == 1)
        ok = wolfSSL_EVP_DigestVerifyFinal(verify, sig, siglen) == 1;
    wolfSSL_EVP_MD_CTX_free(sign);
    wolfSSL_EVP_MD_CTX_free(verify);
    wolfSSL_EVP_PKEY_free(priv);
    wolfSSL_EVP_PKEY_free(pub);
    wolfSSL_X509_free(x);
    return ok;
}

/* Certificate chain + key, and proof that they belong together. */
static bool load_cert_key(WOLFSSL_CTX *w, const char *cert, const char *key, const char *side,
                          char *err, size_t errlen)
{
    char why[120];
    if (!check_readable(side, "certificate file", cert, err, errlen) ||
        !check_readable(side, "key file", key, err, errlen))
        return false;
    wolfSSL_ERR_clear_error();
    if (wolfSSL_CTX_use_certificate_chain_file(w, cert) != WOLFSSL_SUCCESS) {
        set_err(err, errlen, "tls: %s: certificate file %s: no usable PEM certificate (%s)", side,
                cert, wolf_reason(why, sizeof(why)));
        return false;
    }
    wolfSSL_ERR_clear_error();
    if (wolfSSL_CTX_use_PrivateKey_file(w, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
        set_err(err, errlen,
                "tls: %s: key file %s: not a usable PEM private key, or it does not match "
                "certificate file %s (%s)",
                side, key, cert, wolf_reason(why, sizeof(why)));
        return false;
    }
    if (wolfSSL_CTX_check_private_key(w) != WOLFSSL_SUCCESS || !key_signs_for_cert(cert, key)) {
        set_err(err, errlen, "tls: %s: key file %s does not match certificate file %s", side, key,
                cert);
        return false;
    }
    return true;
}

static bool load_ca(WOLFSSL_CTX *w, const char *ca, const char *side, char *err, size_t errlen)
{
    char why[120];
    if (!check_readable(side, "CA file", ca, err, errlen))
        return false;
    wolfSSL_ERR_clear_error();
    if (wolfSSL_CTX_load_verify_locations(w, ca, NULL) != WOLFSSL_SUCCESS) {
        set_err(err, errlen, "tls: %s: CA file %s: no usable PEM certificate (%s)", side, ca,
                wolf_reason(why, sizeof(why)));
        return false;
    }
    return true;
}

static struct slb_tls_ctx *wrap(WOLFSSL_CTX *w, bool server, enum slb_tls_verify verify, char *err,
                                size_t errlen)
{
    struct slb_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        wolfSSL_CTX_free(w);
        set_err(err, errlen, "tls: out of memory");
        return NULL;
    }
    ctx->wctx = w;
    ctx->is_server = server;
    ctx->verify = verify;
    return ctx;
}

/* --- public constructors ----------------------------------------------------------------- */

struct slb_tls_ctx *slb_tls_server_ctx_new(const struct slb_tls_server_opts *o, char *err,
                                           size_t errlen)
{
    const char *side = "server";
    if (!wolf_ready) {
        set_err(err, errlen, "tls: slb_tls_init was not called");
        return NULL;
    }
    if (o == NULL || o->cert_file == NULL || o->key_file == NULL) {
        set_err(err, errlen, "tls: server: a certificate file and a key file are required");
        return NULL;
    }
    if (o->verify_client > SLB_TLS_VERIFY_REQUIRE) {
        set_err(err, errlen, "tls: server: unknown client verification mode");
        return NULL;
    }
    if (o->verify_client != SLB_TLS_VERIFY_NONE && o->ca_file == NULL) {
        set_err(err, errlen, "tls: server: verifying client certificates needs a CA file");
        return NULL;
    }
    WOLFSSL_CTX *w = new_wctx(true, o->min_version, o->max_version, side, err, errlen);
    if (w == NULL)
        return NULL;
    if (!load_cert_key(w, o->cert_file, o->key_file, side, err, errlen))
        goto fail;
    if (o->ca_file && !load_ca(w, o->ca_file, side, err, errlen))
        goto fail;
    if (o->ciphers && !set_ciphers(w, o->ciphers, side, err, errlen))
        goto fail;
    if (o->groups && !set_groups(w, true, o->groups, side, err, errlen))
        goto fail;

    int mode = WOLFSSL_VERIFY_NONE;
    if (o->verify_client == SLB_TLS_VERIFY_OPTIONAL)
        mode = WOLFSSL_VERIFY_PEER;
    else if (o->verify_client == SLB_TLS_VERIFY_REQUIRE)
        mode = WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    wolfSSL_CTX_set_verify(w, mode, NULL);

    /* Stateless resumption only: the session cache is process-wide and locked. */
    wolfSSL_CTX_set_session_cache_mode(w, WOLFSSL_SESS_CACHE_OFF);
    if (o->no_tickets) {
        wolfSSL_CTX_NoTicketTLSv12(w);
        wolfSSL_CTX_no_ticket_TLSv13(w);
    } else {
        unsigned life =
            o->ticket_lifetime_s ? o->ticket_lifetime_s : SLB_TLS_TICKET_LIFETIME_S_DEFAULT;
        if (life > 604800) /* RFC 8446 4.6.1: at most seven days */
            life = 604800;
        if (wolfSSL_CTX_set_TicketEncCb(w, ticket_cb) != WOLFSSL_SUCCESS ||
            wolfSSL_CTX_set_TicketHint(w, (int)life) != WOLFSSL_SUCCESS) {
            set_err(err, errlen, "tls: server: cannot enable session tickets");
            goto fail;
        }
        wolfSSL_CTX_set_timeout(w, life);
    }
    return wrap(w, true, o->verify_client, err, errlen);
fail:
    wolfSSL_CTX_free(w);
    return NULL;
}

struct slb_tls_ctx *slb_tls_client_ctx_new(const struct slb_tls_client_opts *o, char *err,
                                           size_t errlen)
{
    const char *side = "client";
    if (!wolf_ready) {
        set_err(err, errlen, "tls: slb_tls_init was not called");
        return NULL;
    }
    if (o == NULL || o->verify_server > SLB_TLS_VERIFY_REQUIRE) {
        set_err(err, errlen, "tls: client: missing options or unknown verification mode");
        return NULL;
    }
    enum slb_tls_verify verify =
        o->verify_server == SLB_TLS_VERIFY_NONE ? SLB_TLS_VERIFY_NONE : SLB_TLS_VERIFY_REQUIRE;
    if (verify == SLB_TLS_VERIFY_REQUIRE && o->ca_file == NULL) {
        set_err(err, errlen, "tls: client: verifying backend certificates needs a CA file");
        return NULL;
    }
    if ((o->cert_file == NULL) != (o->key_file == NULL)) {
        set_err(err, errlen, "tls: client: a client certificate needs both a cert and a key file");
        return NULL;
    }
    WOLFSSL_CTX *w = new_wctx(false, o->min_version, o->max_version, side, err, errlen);
    if (w == NULL)
        return NULL;
    if (o->cert_file && !load_cert_key(w, o->cert_file, o->key_file, side, err, errlen))
        goto fail;
    if (o->ca_file && !load_ca(w, o->ca_file, side, err, errlen))
        goto fail;
    if (o->ciphers && !set_ciphers(w, o->ciphers, side, err, errlen))
        goto fail;
    if (o->groups && !set_groups(w, false, o->groups, side, err, errlen))
        goto fail;
    wolfSSL_CTX_set_verify(
        w, verify == SLB_TLS_VERIFY_NONE ? WOLFSSL_VERIFY_NONE : WOLFSSL_VERIFY_PEER, NULL);
    if (!o->no_tickets && wolfSSL_CTX_UseSessionTicket(w) != WOLFSSL_SUCCESS) {
        set_err(err, errlen, "tls: client: cannot enable session tickets");
        goto fail;
    }
    /* Tells the owner when a ticket arrived (TLS 1.3 sends it after the handshake). */
    wolfSSL_CTX_sess_set_new_cb(w, slb_tls_on_new_session);
    return wrap(w, false, verify, err, errlen);
fail:
    wolfSSL_CTX_free(w);
    return NULL;
}

void slb_tls_ctx_free(struct slb_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    wolfSSL_CTX_free(ctx->wctx);
    free(ctx);
}
