/* Private to tls/: the context struct and the hooks tls_ctx.c installs from tls_conn.c.
 * Includes wolfSSL, so nothing outside tls/ may include this file. */
#ifndef SLB_TLS_TLS_INT_H
#define SLB_TLS_TLS_INT_H

/* options.h must come first: it carries the configure-time macros that give the other
 * wolfSSL headers (and struct layouts) their shape for the library we link. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "tls/tls-t.h"

/* One server certificate: its own wolfSSL context (set up like every other of the same
 * slb_tls_ctx but for certificate and key) and the DNS names SNI is matched against. */
struct slb_tls_cert {
    WOLFSSL_CTX *wctx;
    char **names;     /* subjectAltName dNSName values, lower case; "*.x.y" for wildcards */
    unsigned n_names;
};

/* Built at boot, then read-only: shared by the sessions of one worker. A server context
 * holds one wolfSSL context per certificate; with several (or strict_sni) a session reads
 * the ClientHello's server_name first and is created from the matching one. */
struct slb_tls_ctx {
    WOLFSSL_CTX *wctx;          /* the default: certs[0].wctx for a server */
    bool is_server;
    bool strict_sni;            /* server: refuse names no certificate has */
    enum slb_tls_verify verify; /* effective mode (a client's OPTIONAL is REQUIRE) */
    unsigned n_certs;           /* server: entries of certs (client: 0) */
    struct slb_tls_cert *certs;
};

/* wolfSSL I/O callbacks over the owner's buffers (tls_conn.c), installed on every context. */
int slb_tls_io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx);
int slb_tls_io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx);

/* Client contexts: wolfSSL stored a resumable session for this connection (tls_conn.c). */
int slb_tls_on_new_session(WOLFSSL *ssl, WOLFSSL_SESSION *sess);

/* Server contexts with several certificates (tls_ctx.c): the index of the certificate for
 * an SNI host name (len bytes, any case, one trailing dot allowed), or -1 when none has it.
 * Exact names win over "*.domain" wildcards (one label), then the order given. */
int slb_tls_pick_cert(const struct slb_tls_ctx *ctx, const char *sni, size_t len);

#endif
