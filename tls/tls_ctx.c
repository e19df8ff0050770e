/* tls_ctx.c — process-wide wolfSSL set-up, contexts, and the shared session-ticket key.
 *
 * Threads: slb_tls_init and the context constructors run at boot on the main thread, before
 * workers start; slb_tls_set_ticket_keys may run on any thread at any time (an atomic
 * publication, see ticket_keys). Afterwards contexts are
 * read-only, so every worker reads them without a lock (wolfSSL_new only bumps a context's
 * reference count under wolfSSL's own mutex, and each worker has its own contexts).
 *
 * Invariants: every context gets our I/O callbacks (wolfSSL never sees a socket), and every
 * server context seals tickets with the one process key, so a ticket issued by any worker
 * resumes on any other. Server contexts keep no session cache: resumption is by ticket only,
 * so no handshake writes to state shared between workers.
 *
 * Several certificates (SNI): a server slb_tls_ctx holds one WOLFSSL_CTX per certificate, all
 * set up alike (CAs, CRLs, versions, ciphers, groups, verification, tickets) but for the
 * certificate and key. A session of such a context reads the server_name of the ClientHello
 * itself (tls_hello.c) before it creates its WOLFSSL from the matching WOLFSSL_CTX
 * (tls_conn.c): wolfSSL 5.5.4 as we build it has no servername callback nor
 * wolfSSL_set_SSL_CTX (they need OPENSSL_ALL or a HAVE_STUNNEL-like flag), and choosing
 * before wolfSSL sees the ClientHello lets suites and signature schemes follow the chosen
 * certificate's key type.
 */
#include "tls/tls.h"
#include "tls/tls-int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include <wolfssl/openssl/evp.h>
#include <wolfssl/openssl/pem.h>
#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/hmac.h>

#define TICKET_NAME_BYTES    16
#define TICKET_AES_KEY_BYTES 32
#define TICKET_NONCE_BYTES   12 /* GCM's natural nonce; the rest of wolfSSL's 16-byte IV is zero */
#define TICKET_TAG_BYTES     16

_Static_assert(TICKET_NAME_BYTES == WOLFSSL_TICKET_NAME_SZ, "ticket name size");
_Static_assert(TICKET_TAG_BYTES <= WOLFSSL_TICKET_MAC_SZ, "ticket tag size");
_Static_assert(TICKET_NAME_BYTES + TICKET_AES_KEY_BYTES == SLB_TLS_TICKET_KEY_BYTES,
               "ticket key layout");

/* The ticket keys in force, newest first: the newest seals, every one opens. Immutable once
 * published; a reload publishes a new set with one atomic store, and a set once published
 * is never freed before slb_tls_cleanup (a worker may still be reading it), so a SIGHUP
 * costs one small set until exit. */
struct ticket_key {
    uint8_t name[TICKET_NAME_BYTES];
    uint8_t key[TICKET_AES_KEY_BYTES];
};
struct ticket_keys {
    unsigned n;
    struct ticket_key k[SLB_TLS_TICKET_KEYS_MAX];
    struct ticket_keys *retired; /* the set this one replaced (freed at cleanup) */
};
static _Atomic(struct ticket_keys *) ticket_keys;

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
    int rc = slb_tls_set_ticket_keys(raw, 1);
    explicit_bzero(raw, sizeof(raw));
    if (rc < 0) {
        wolfSSL_Cleanup();
        return rc;
    }
    wolf_ready = true;
    return 0;
}

int slb_tls_set_ticket_keys(const void *keys, unsigned n)
{
    if (keys == NULL || n == 0 || n > SLB_TLS_TICKET_KEYS_MAX)
        return -EINVAL;
    struct ticket_keys *set = calloc(1, sizeof(*set));
    if (!set)
        return -ENOMEM;
    set->n = n;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *raw = (const uint8_t *)keys + (size_t)i * SLB_TLS_TICKET_KEY_BYTES;
        memcpy(set->k[i].name, raw, TICKET_NAME_BYTES);
        memcpy(set->k[i].key, raw + TICKET_NAME_BYTES, TICKET_AES_KEY_BYTES);
    }
    set->retired = atomic_exchange_explicit(&ticket_keys, set, memory_order_acq_rel);
    return 0;
}

int slb_tls_hkdf_sha256(const void *secret, size_t secret_len, const char *info, void *out,
                        size_t out_len)
{
    if (!secret || !info || !out || out_len == 0 || out_len > 255 * 32)
        return -EINVAL;
    int rc = wc_HKDF(WC_SHA256, secret, (word32)secret_len, NULL, 0, (const byte *)info,
                     (word32)strlen(info), out, (word32)out_len);
    return rc == 0 ? 0 : -EIO;
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
    for (struct ticket_keys *k = atomic_exchange(&ticket_keys, NULL), *next; k; k = next) {
        next = k->retired;
        explicit_bzero(k, sizeof(*k));
        free(k);
    }
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

/* Seals session state with AES-256-GCM under the newest ticket key; opens it under whichever
 * key its name names, so tickets sealed before a rotation (or by another instance sharing
 * --secret-file) still resume. AAD binds key name, IV and length as wolfSSL's own callback
 * does. Unknown key names and failed tags reject the ticket (a full handshake follows)
 * rather than fail the connection. */
static int ticket_cb(WOLFSSL *ssl, unsigned char key_name[WOLFSSL_TICKET_NAME_SZ],
                     unsigned char iv[WOLFSSL_TICKET_IV_SZ],
                     unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *ticket,
                     int in_len, int *out_len, void *user)
{
    (void)ssl;
    (void)user;
    const struct ticket_keys *set = atomic_load_explicit(&ticket_keys, memory_order_acquire);
    if (!set || in_len < 0)
        return WOLFSSL_TICKET_RET_REJECT;
    const struct ticket_key *tk = NULL;
    if (enc) {
        tk = &set->k[0];
        memcpy(key_name, tk->name, TICKET_NAME_BYTES);
        memset(iv, 0, WOLFSSL_TICKET_IV_SZ);
        /* Random 96-bit nonces: safe for far more tickets than one key will ever seal. */
        if (getrandom(iv, TICKET_NONCE_BYTES, 0) != TICKET_NONCE_BYTES)
            return WOLFSSL_TICKET_RET_REJECT;
    } else {
        for (unsigned i = 0; i < set->n && !tk; i++)
            if (memcmp(key_name, set->k[i].name, TICKET_NAME_BYTES) == 0)
                tk = &set->k[i];
        if (!tk)
            return WOLFSSL_TICKET_RET_REJECT;
    }

    uint8_t aad[TICKET_NAME_BYTES + WOLFSSL_TICKET_IV_SZ + 2];
    memcpy(aad, tk->name, TICKET_NAME_BYTES);
    memcpy(aad + TICKET_NAME_BYTES, iv, WOLFSSL_TICKET_IV_SZ);
    aad[sizeof(aad) - 2] = (uint8_t)((unsigned)in_len >> 8);
    aad[sizeof(aad) - 1] = (uint8_t)in_len;

    Aes aes;
    int rc = wc_AesInit(&aes, NULL, INVALID_DEVID);
    if (rc == 0)
        rc = wc_AesGcmSetKey(&aes, tk->key, TICKET_AES_KEY_BYTES);
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

/* The name wolfSSL_CTX_set1_curves_list knows a group by. */
static const char *curve_list_name(int id)
{
    switch (id) {
    case WOLFSSL_ECC_SECP256R1:
        return "P-256";
    case WOLFSSL_ECC_SECP384R1:
        return "P-384";
    case WOLFSSL_ECC_SECP521R1:
        return "P-521";
    case WOLFSSL_ECC_X25519:
        return "X25519";
    default:
        return "X448";
    }
}

/* "P-256:X25519" in preference order. The first one is the client's TLS 1.3 key share.
 * wolfSSL_CTX_set1_curves_list both sets the TLS 1.3 groups and disables every other curve,
 * which is what limits the curve a TLS 1.2 server picks for ECDHE (set_groups alone does not).
 * wolfSSL sets groups only on contexts that may speak TLS 1.3 (tls13); a TLS 1.2-only client
 * still offers just these curves. */
static bool set_groups(WOLFSSL_CTX *w, bool server, bool tls13, const char *list, const char *side,
                       char *err, size_t errlen)
{
    int ids[8];
    int n = 0;
    char canon[8 * 8] = "";
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
                set_err(err, errlen,
                        "tls: %s: groups \"%s\": unknown or too many groups (known: P-256, "
                        "P-384, P-521, X25519, X448)",
                        side, list);
                return false;
            }
            ids[n++] = group_names[i].id;
            if (n > 1)
                strcat(canon, ":");
            strcat(canon, curve_list_name(group_names[i].id));
        }
        p += len;
        if (*p)
            p++;
    }
    if (n == 0) {
        set_err(err, errlen, "tls: %s: groups \"%s\" is empty", side, list);
        return false;
    }
    if (!tls13 && server) {
        set_err(err, errlen, "tls: %s: groups need a context that allows TLS 1.3", side);
        return false;
    }
    if (tls13 && (wolfSSL_CTX_set1_curves_list(w, canon) != WOLFSSL_SUCCESS ||
                  wolfSSL_CTX_set_groups(w, ids, n) != WOLFSSL_SUCCESS)) {
        set_err(err, errlen, "tls: %s: groups \"%s\": not all supported by this wolfSSL build",
                side, list);
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

/* --- certificate revocation lists ------------------------------------------------------ */

#define CRL_FILE_MAX_BYTES (64u << 20)

/* The whole of a small file, NUL-terminated; NULL with err set. The caller frees it. */
static char *read_whole(const char *what, const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_err(err, errlen, "tls: server: %s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 16384;
            char *b = cap <= CRL_FILE_MAX_BYTES ? realloc(buf, cap + 1) : NULL;
            if (b == NULL) {
                set_err(err, errlen, "tls: server: %s %s: larger than %u bytes, or out of memory",
                        what, path, CRL_FILE_MAX_BYTES);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        set_err(err, errlen, "tls: server: %s %s: read error", what, path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Every CRL of the file (PEM blocks, or one DER CRL) into w's certificate store, checked
 * against the CAs already loaded: a CRL that no --ca CA signed, or whose nextUpdate has passed,
 * is refused. Only the leaf is checked (the CRLs of the CAs that issue client certificates);
 * a client certificate whose issuer has no CRL in the file fails verification. */
static bool load_crl(WOLFSSL_CTX *w, const char *path, const char *data, size_t len, char *err,
                     size_t errlen)
{
    static const char begin[] = "-----BEGIN X509 CRL-----";
    static const char end[] = "-----END X509 CRL-----";
    char why[WOLFSSL_MAX_ERROR_SZ];
    if (wolfSSL_CTX_EnableCRL(w, 0) != WOLFSSL_SUCCESS) {
        set_err(err, errlen, "tls: server: CRL file %s: CRL checks not available", path);
        return false;
    }
    unsigned count = 0;
    const char *p = data, *stop = data + len;
    for (;;) {
        const char *b = memmem(p, (size_t)(stop - p), begin, sizeof(begin) - 1);
        const char *e = b ? memmem(b, (size_t)(stop - b), end, sizeof(end) - 1) : NULL;
        if (e == NULL)
            break;
        e += sizeof(end) - 1;
        count++;
        int rc = wolfSSL_CTX_LoadCRLBuffer(w, (const unsigned char *)b, (long)(e - b),
                                           WOLFSSL_FILETYPE_PEM);
        if (rc != WOLFSSL_SUCCESS) {
            wolfSSL_ERR_error_string_n((unsigned long)rc, why, sizeof(why));
            set_err(err, errlen,
                    "tls: server: CRL file %s: CRL %u refused: %s (not signed by a --ca CA, "
                    "expired, or malformed)",
                    path, count, why);
            return false;
        }
        p = e;
    }
    if (count == 0 &&
        (len == 0 || wolfSSL_CTX_LoadCRLBuffer(w, (const unsigned char *)data, (long)len,
                                               WOLFSSL_FILETYPE_ASN1) != WOLFSSL_SUCCESS)) {
        set_err(err, errlen,
                "tls: server: CRL file %s: no usable CRL (PEM \"X509 CRL\" blocks or DER, signed "
                "by a --ca CA, not expired)",
                path);
        return false;
    }
    return true;
}

/* --- several certificates: names, and the choice by SNI ----------------------------------- */

static void free_names(struct slb_tls_cert *c)
{
    for (unsigned i = 0; i < c->n_names; i++)
        free(c->names[i]);
    free(c->names);
    c->names = NULL;
    c->n_names = 0;
}

/* The dNSName subjectAltNames of the leaf certificate of path, lower-cased. */
static bool read_names(struct slb_tls_cert *c, const char *path, char *err, size_t errlen)
{
    WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(path, WOLFSSL_FILETYPE_PEM);
    if (x == NULL) {
        set_err(err, errlen, "tls: server: certificate file %s: cannot read its names", path);
        return false;
    }
    WOLFSSL_STACK *sk = wolfSSL_X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int n = sk ? wolfSSL_sk_GENERAL_NAME_num(sk) : 0;
    bool ok = true;
    if (n > 0 && (c->names = calloc((size_t)n, sizeof(*c->names))) == NULL)
        ok = false;
    for (int i = 0; ok && i < n; i++) {
        WOLFSSL_GENERAL_NAME *gn = wolfSSL_sk_GENERAL_NAME_value(sk, i);
        if (gn == NULL || gn->type != GEN_DNS || gn->d.dNSName == NULL)
            continue;
        const unsigned char *v = wolfSSL_ASN1_STRING_get0_data(gn->d.dNSName);
        int len = wolfSSL_ASN1_STRING_length(gn->d.dNSName);
        if (v == NULL || len <= 0 || len > 253 || memchr(v, '\0', (size_t)len))
            continue;
        char *name = malloc((size_t)len + 1);
        if (name == NULL) {
            ok = false;
            break;
        }
        for (int k = 0; k < len; k++)
            name[k] = (char)((v[k] >= 'A' && v[k] <= 'Z') ? v[k] + 32 : v[k]);
        name[len] = '\0';
        c->names[c->n_names++] = name;
    }
    if (sk != NULL)
        wolfSSL_GENERAL_NAMES_free(sk);
    wolfSSL_X509_free(x);
    if (!ok)
        set_err(err, errlen, "tls: out of memory");
    return ok;
}

/* host (lower case, no trailing dot) against one SAN: equal, or "*.rest" where host is one
 * label followed by ".rest" (RFC 6125 6.4.3: the wildcard covers exactly one label). */
static bool name_matches(const char *san, const char *host, size_t len)
{
    if (san[0] != '*')
        return strlen(san) == len && memcmp(san, host, len) == 0;
    if (san[1] != '.')
        return false;
    size_t rest = strlen(san + 1); /* ".example.com" */
    if (len <= rest || memcmp(host + len - rest, san + 1, rest) != 0)
        return false;
    return memchr(host, '.', len - rest) == NULL; /* a single, non-empty label */
}

int slb_tls_pick_cert(const struct slb_tls_ctx *ctx, const char *sni, size_t len)
{
    char host[254];
    if (len > 0 && sni[len - 1] == '.')
        len--;
    if (len == 0 || len >= sizeof(host))
        return -1;
    for (size_t i = 0; i < len; i++)
        host[i] = (char)((sni[i] >= 'A' && sni[i] <= 'Z') ? sni[i] + 32 : sni[i]);
    host[len] = '\0';
    for (int wild = 0; wild < 2; wild++) {
        for (unsigned c = 0; c < ctx->n_certs; c++) {
            for (unsigned k = 0; k < ctx->certs[c].n_names; k++) {
                const char *san = ctx->certs[c].names[k];
                if ((san[0] == '*') == (wild == 1) && name_matches(san, host, len))
                    return (int)c;
            }
        }
    }
    return -1;
}

/* --- public constructors ----------------------------------------------------------------- */

/* One certificate's WOLFSSL_CTX, with everything else the options say. */
static WOLFSSL_CTX *server_wctx(const struct slb_tls_server_opts *o, const char *cert,
                                const char *key, const char *crl, size_t crl_len, char *err,
                                size_t errlen)
{
    const char *side = "server";
    WOLFSSL_CTX *w = new_wctx(true, o->min_version, o->max_version, side, err, errlen);
    if (w == NULL)
        return NULL;
    if (!load_cert_key(w, cert, key, side, err, errlen))
        goto fail;
    if (o->ca_file && !load_ca(w, o->ca_file, side, err, errlen))
        goto fail;
    if (crl && !load_crl(w, o->crl_file, crl, crl_len, err, errlen))
        goto fail;
    if (!set_ciphers(w, o->ciphers ? o->ciphers : SLB_TLS_CIPHERS_DEFAULT, side, err, errlen))
        goto fail;
    if (o->groups &&
        !set_groups(w, true, o->max_version != SLB_TLS_VERSION_1_2, o->groups, side, err, errlen))
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
    return w;
fail:
    wolfSSL_CTX_free(w);
    return NULL;
}

static bool check_server_opts(const struct slb_tls_server_opts *o, char *err, size_t errlen)
{
    if (!wolf_ready) {
        set_err(err, errlen, "tls: slb_tls_init was not called");
        return false;
    }
    if (o == NULL || (o->n_certs == 0 && (o->cert_file == NULL || o->key_file == NULL)) ||
        (o->n_certs > 0 && (o->cert_files == NULL || o->key_files == NULL))) {
        set_err(err, errlen, "tls: server: a certificate file and a key file are required");
        return false;
    }
    if (o->n_certs > SLB_TLS_MAX_CERTS) {
        set_err(err, errlen, "tls: server: at most %u certificates", SLB_TLS_MAX_CERTS);
        return false;
    }
    for (unsigned i = 0; i < o->n_certs; i++) {
        if (o->cert_files[i] == NULL || o->key_files[i] == NULL) {
            set_err(err, errlen, "tls: server: certificate %u lacks its file or its key", i + 1);
            return false;
        }
    }
    if (o->verify_client > SLB_TLS_VERIFY_REQUIRE) {
        set_err(err, errlen, "tls: server: unknown client verification mode");
        return false;
    }
    if (o->verify_client != SLB_TLS_VERIFY_NONE && o->ca_file == NULL) {
        set_err(err, errlen, "tls: server: verifying client certificates needs a CA file");
        return false;
    }
    if (o->crl_file != NULL && (o->ca_file == NULL || o->verify_client == SLB_TLS_VERIFY_NONE)) {
        set_err(err, errlen, "tls: server: a CRL file needs a CA file and client verification");
        return false;
    }
    return true;
}

struct slb_tls_ctx *slb_tls_server_ctx_new(const struct slb_tls_server_opts *o, char *err,
                                           size_t errlen)
{
    if (!check_server_opts(o, err, errlen))
        return NULL;
    unsigned n = o->n_certs ? o->n_certs : 1;
    const char *const *certs = o->n_certs ? o->cert_files : &o->cert_file;
    const char *const *keys = o->n_certs ? o->key_files : &o->key_file;
    char *crl = NULL;
    size_t crl_len = 0;
    if (o->crl_file && !(crl = read_whole("CRL file", o->crl_file, &crl_len, err, errlen)))
        return NULL;
    struct slb_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL || (ctx->certs = calloc(n, sizeof(*ctx->certs))) == NULL) {
        set_err(err, errlen, "tls: out of memory");
        goto fail;
    }
    ctx->is_server = true;
    ctx->verify = o->verify_client;
    ctx->strict_sni = o->strict_sni;
    ctx->n_certs = n; /* certs[] fills in as the loop goes; free skips what is NULL */
    for (unsigned i = 0; i < n; i++) {
        struct slb_tls_cert *c = &ctx->certs[i];
        c->wctx = server_wctx(o, certs[i], keys[i], crl, crl_len, err, errlen);
        if (c->wctx == NULL || !read_names(c, certs[i], err, errlen))
            goto fail;
        if (i > 0 && c->n_names == 0) {
            set_err(err, errlen,
                    "tls: server: certificate file %s has no DNS subjectAltName, so SNI can "
                    "never select it (only the first certificate may lack one)",
                    certs[i]);
            goto fail;
        }
    }
    ctx->wctx = ctx->certs[0].wctx;
    free(crl);
    return ctx;
fail:
    free(crl);
    slb_tls_ctx_free(ctx);
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
    if (!set_ciphers(w, o->ciphers ? o->ciphers : SLB_TLS_CIPHERS_DEFAULT, side, err, errlen))
        goto fail;
    if (o->groups &&
        !set_groups(w, false, o->max_version != SLB_TLS_VERSION_1_2, o->groups, side, err, errlen))
        goto fail;
    wolfSSL_CTX_set_verify(
        w, verify == SLB_TLS_VERIFY_NONE ? WOLFSSL_VERIFY_NONE : WOLFSSL_VERIFY_PEER, NULL);
    if (!o->no_tickets && wolfSSL_CTX_UseSessionTicket(w) != WOLFSSL_SUCCESS) {
        set_err(err, errlen, "tls: client: cannot enable session tickets");
        goto fail;
    }
    /* Tells the owner when a ticket arrived (TLS 1.3 sends it after the handshake). */
    wolfSSL_CTX_sess_set_new_cb(w, slb_tls_on_new_session);
    struct slb_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        set_err(err, errlen, "tls: out of memory");
        goto fail;
    }
    ctx->wctx = w;
    ctx->verify = verify;
    return ctx;
fail:
    wolfSSL_CTX_free(w);
    return NULL;
}

void slb_tls_ctx_free(struct slb_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    if (!ctx->is_server) {
        wolfSSL_CTX_free(ctx->wctx);
    } else if (ctx->certs != NULL) {
        /* Sessions still holding one (they should not) keep it alive: wolfSSL refcounts. */
        for (unsigned i = 0; i < ctx->n_certs; i++) {
            if (ctx->certs[i].wctx != NULL)
                wolfSSL_CTX_free(ctx->certs[i].wctx);
            free_names(&ctx->certs[i]);
        }
        free(ctx->certs);
    }
    free(ctx);
}
