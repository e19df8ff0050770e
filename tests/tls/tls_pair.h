/* Test harness: a server session and a client session pumped into each other in memory. */
#ifndef SLB_TESTS_TLS_PAIR_H
#define SLB_TESTS_TLS_PAIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/tls.h"

#define WIRE_CAP  (1u << 20)
#define PLAIN_CAP (1u << 20)

/* Ciphertext one side sent and the other has not read yet. */
struct wire {
    uint8_t *buf;
    size_t len;
    size_t sends;    /* out_fn calls that were accepted */
    size_t last_len; /* size of the last accepted out_fn call */
    int refuse;      /* refuse this many out_fn calls with -ENOBUFS */
    int hard_error;  /* when non-zero, out_fn returns it */
};

/* One end: its session, what it wrote, what it decrypted. */
struct end {
    struct slb_tls_conn conn;
    struct wire out;
    uint8_t *plain;
    size_t plain_len;
    unsigned events; /* OR of every event seen */
    int rc;          /* first negative return, 0 if none */
    size_t read_cap; /* plaintext room offered per feed (default PLAIN_CAP) */
};

struct pair {
    struct slb_tls_ctx *sctx;
    struct slb_tls_ctx *cctx;
    struct end s;
    struct end c;
    size_t chunk; /* ciphertext bytes per feed call (0 = everything at once) */
};

/* Path of a generated test file (certs dir + name); static buffer rotated over 8 slots. */
const char *cert(const char *name);

/* Options most tests start from: ECDSA server cert, client verifying against ca.pem. */
struct slb_tls_server_opts server_opts(void);
struct slb_tls_client_opts client_opts(void);

struct slb_tls_ctx *server_ctx(const struct slb_tls_server_opts *o);
struct slb_tls_ctx *client_ctx(const struct slb_tls_client_opts *o);

/* Sessions from the given contexts (the pair does not own them); host for the client. */
void pair_init(struct pair *p, struct slb_tls_ctx *sctx, struct slb_tls_ctx *cctx,
               const char *host);
void pair_deinit(struct pair *p);

/* Start the client and move bytes both ways until nothing moves or a side fails.
 * Returns true when both handshakes completed. */
bool pair_handshake(struct pair *p);

/* Move bytes both ways until quiet. */
void pair_pump(struct pair *p);

/* Feed len bytes to e in p->chunk pieces, collecting plaintext/events/errors. */
void end_feed(struct pair *p, struct end *e, const void *data, size_t len);

#endif
