/* Private to tls/: the context struct and the hooks tls_ctx.c installs from tls_conn.c.
 * Includes wolfSSL, so nothing outside tls/ may include this file. */
#ifndef SLB_TLS_TLS_INT_H
#define SLB_TLS_TLS_INT_H

/* options.h must come first: it carries the configure-time macros that give the other
 * wolfSSL headers (and struct layouts) their shape for the library we link. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "tls/tls-t.h"

/* Built at boot, then read-only: shared by the sessions of one worker. */
struct slb_tls_ctx {
    WOLFSSL_CTX *wctx;
    bool is_server;
    enum slb_tls_verify verify; /* effective mode (a client's OPTIONAL is REQUIRE) */
};

/* wolfSSL I/O callbacks over the owner's buffers (tls_conn.c), installed on every context. */
int slb_tls_io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx);
int slb_tls_io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx);

/* Client contexts: wolfSSL stored a resumable session for this connection (tls_conn.c). */
int slb_tls_on_new_session(WOLFSSL *ssl, WOLFSSL_SESSION *sess);

#endif
