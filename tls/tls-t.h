/* TLS over memory buffers: types, enums and constants (prototypes are in tls/tls.h).
 *
 * Only tls/ includes wolfSSL headers: the wolfSSL objects appear here as incomplete
 * struct types so owners can embed a session without seeing wolfSSL. */
#ifndef SLB_TLS_TLS_T_H
#define SLB_TLS_TLS_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct WOLFSSL;         /* wolfSSL's per-connection object (typedef WOLFSSL in wolfSSL) */
struct WOLFSSL_SESSION; /* wolfSSL's resumable session */

/* Largest plaintext in one TLS record (RFC 8446 5.1): slb_tls_write packs this much per record. */
#define SLB_TLS_RECORD_PLAIN_MAX 16384u

/* Bound on ciphertext a session holds for its owner when the owner's plaintext buffer is full
 * (see slb_tls_feed). Past it the connection is failed with -ENOBUFS: a peer that keeps sending
 * while we cannot deliver is shed rather than buffered without limit. It must exceed what an
 * owner can be handed after it paused reading: io/ may still deliver what its receive buffer
 * ring already holds (256 x 16 KiB by default), so a paused (backpressured) client is slowed
 * down, not cut off. Allocated only while in use. */
#define SLB_TLS_STASH_MAX_BYTES (8u * 1024u * 1024u)

/* Session-ticket key material for slb_tls_set_ticket_keys: 16-byte key name + 32-byte
 * AES-256-GCM key, per key; at most SLB_TLS_TICKET_KEYS_MAX keys in force. */
#define SLB_TLS_TICKET_KEY_BYTES 48u
#define SLB_TLS_TICKET_KEYS_MAX  8u

/* Default lifetime of TLS 1.3 tickets and TLS 1.2 ticket hint. */
#define SLB_TLS_TICKET_LIFETIME_S_DEFAULT 3600u

enum slb_tls_verify {
    SLB_TLS_VERIFY_NONE = 0, /* do not request or check the peer's certificate */
    SLB_TLS_VERIFY_OPTIONAL, /* server: request a client cert, check it only if one is sent */
    SLB_TLS_VERIFY_REQUIRE,  /* the peer must present a certificate that verifies */
};

/* Values are the TLS wire versions so they print and compare naturally. */
enum slb_tls_version {
    SLB_TLS_VERSION_DEFAULT = 0,  /* min: TLS 1.2; max: TLS 1.3 */
    SLB_TLS_VERSION_1_2 = 0x0303, /* TLS 1.2 (RFC 5246) */
    SLB_TLS_VERSION_1_3 = 0x0304, /* TLS 1.3 (RFC 8446) */
};

/* Why a session failed. Owners count these per worker. */
enum slb_tls_fail {
    SLB_TLS_FAIL_NONE = 0, /* no failure */
    SLB_TLS_FAIL_PROTOCOL, /* version mismatch, malformed or unexpected records */
    SLB_TLS_FAIL_BAD_CERT, /* peer cert missing/untrusted/expired/wrong name, or ours refused */
    SLB_TLS_FAIL_NO_SHARED_CIPHER, /* no common cipher suite, group or signature algorithm */
    SLB_TLS_FAIL_PEER_CLOSED, /* peer sent close_notify/user_canceled before the handshake ended */
    SLB_TLS_FAIL_OTHER,       /* internal, memory, output-callback errors, anything else */
    SLB_TLS_FAIL_COUNT
};

/* Events returned (OR-ed) by slb_tls_feed, slb_tls_read and slb_tls_flush. */
enum slb_tls_event {
    SLB_TLS_EV_HANDSHAKE_DONE = 1u << 0, /* the handshake completed during this call */
    SLB_TLS_EV_DATA = 1u << 1,           /* *plain_len > 0 */
    SLB_TLS_EV_MORE = 1u << 2,        /* input remains undelivered: call slb_tls_read with room */
    SLB_TLS_EV_PEER_CLOSED = 1u << 3, /* close_notify received: no more plaintext will come */
    SLB_TLS_EV_WANT_WRITE =
        1u << 4, /* output blocked (out_fn said -ENOBUFS): slb_tls_flush later */
    SLB_TLS_EV_NEW_SESSION =
        1u << 5, /* client: a resumable session arrived (slb_tls_session_get) */
};

/* Certificates one server context may hold (chosen by SNI). */
#define SLB_TLS_MAX_CERTS 32u

/* Bounds on the ClientHello a server with several certificates reads before wolfSSL does
 * (to find its server_name): body bytes, and handshake records it may be split into. Real
 * ClientHellos are one record of under 2 KB (a few KB with post-quantum key shares). */
#define SLB_TLS_HELLO_MAX_BYTES   32768u
#define SLB_TLS_HELLO_MAX_RECORDS 64u

/* Cipher suites used when none are given: every TLS 1.3 suite, and for TLS 1.2 only ECDHE
 * with an AEAD (AES-GCM, ChaCha20-Poly1305): no CBC, no SHA-1 MAC, no RSA key transport. */
#define SLB_TLS_CIPHERS_DEFAULT                                                                  \
    "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                 \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                 \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Server context options. Paths are read during slb_tls_server_ctx_new only.
 * Certificates: cert_files/key_files (n_certs pairs) when n_certs > 0, else the single
 * cert_file/key_file. The first is the default; the others are chosen by the SNI name the
 * client sends, matched against each certificate's DNS subjectAltNames. */
struct slb_tls_server_opts {
    const char *cert_file;             /* PEM, leaf first then intermediates; ECDSA or RSA */
    const char *key_file;              /* PEM private key matching cert_file */
    const char *const *cert_files;     /* n_certs certificate chains (overrides cert_file) */
    const char *const *key_files;      /* their keys, in the same order */
    unsigned n_certs;                  /* 0: use cert_file/key_file; at most SLB_TLS_MAX_CERTS */
    bool strict_sni;                   /* refuse (unrecognized_name) a missing or unknown SNI */
    const char *ca_file;               /* PEM CAs for client certificates; NULL = none */
    const char *crl_file;              /* PEM CRLs of those CAs; NULL = none (needs ca_file) */
    enum slb_tls_verify verify_client; /* OPTIONAL/REQUIRE need ca_file */
    enum slb_tls_version min_version;  /* DEFAULT = 1.2 */
    enum slb_tls_version max_version;  /* DEFAULT = 1.3 */
    const char *ciphers;               /* cipher list; NULL = SLB_TLS_CIPHERS_DEFAULT */
    const char *groups;         /* "X25519:P-256" (P-256, P-384, P-521, X25519, and X448
                                   when built in); NULL = library default */
    unsigned ticket_lifetime_s; /* 0 = SLB_TLS_TICKET_LIFETIME_S_DEFAULT */
    bool no_tickets;            /* issue no session tickets */
};

/* Client (backend-side) context options. */
struct slb_tls_client_opts {
    const char *ca_file;               /* PEM CAs that sign backend certs; needed with REQUIRE */
    enum slb_tls_verify verify_server; /* REQUIRE (OPTIONAL means the same) or NONE */
    const char *cert_file;             /* optional client certificate chain (mutual TLS) */
    const char *key_file;              /* its key; required with cert_file */
    enum slb_tls_version min_version;  /* DEFAULT = 1.2 */
    enum slb_tls_version max_version;  /* DEFAULT = 1.3 */
    const char *ciphers;               /* NULL = SLB_TLS_CIPHERS_DEFAULT */
    const char *groups;                /* NULL = default */
    bool no_tickets;                   /* do not ask for TLS 1.2 tickets */
};

/* A context: certificates, CAs, versions, ciphers. Opaque; created at boot, typically one per
 * worker, read-only while sessions use it, freed after its last session. */
struct slb_tls_ctx;

/* A resumable client session (wraps a WOLFSSL_SESSION). Owned by whoever got it from
 * slb_tls_session_get; freed with slb_tls_session_free. */
struct slb_tls_session;

/* Sink for ciphertext. Returns len when all of it was queued, or a negative errno:
 * -ENOBUFS (or -EAGAIN) means "queue full, nothing taken": the session reports WANT_WRITE and
 * retries from slb_tls_flush; any other error fails the session. All-or-nothing: never a
 * partial count. Called from the owner's thread, inside a slb_tls_* call. */
typedef int (*slb_tls_out_fn)(void *arg, const void *data, size_t len);

/* One TLS session over memory buffers. Embedded in, and owned by, a connection struct of
 * the io/balancer layer; used by one worker thread only. Fields are private to tls/. */
struct slb_tls_conn {
    struct WOLFSSL *ssl; /* from wolfSSL_new at init (or once the ClientHello chose, below) */
    struct slb_tls_ctx *pending; /* server with several certificates or strict SNI: the
                                    context, until the ClientHello's name picks one */
    slb_tls_out_fn out;  /* owner's ciphertext sink */
    void *out_arg;       /* its argument */
    const uint8_t *in;   /* input chunk borrowed for the duration of one call */
    size_t in_len;       /* bytes of it not yet taken by wolfSSL */
    uint8_t *stash;      /* overflow ciphertext (rare; malloc'd, freed when drained) */
    uint32_t stash_off;  /* first unread byte in stash */
    uint32_t stash_len;  /* unread bytes in stash */
    uint32_t stash_cap;  /* allocated bytes */
    uint32_t stash_max;  /* bound on stash_len (0: SLB_TLS_STASH_MAX_BYTES) */
    uint32_t wpend;      /* size wolfSSL expects on the write that retries after WANT_WRITE */
    uint32_t hello_need; /* pending: stashed bytes worth another look at the ClientHello */
    int err;             /* last wolfSSL error code, for logs */
    int dead;            /* 0, or the negative errno every call returns after a failure */
    uint16_t flags;      /* private state bits */
    uint8_t fail;        /* enum slb_tls_fail */
    uint8_t verify;      /* enum slb_tls_verify of the context */
    uint8_t cert;        /* server: index of the certificate SNI chose (0 = the default) */
};

#endif
