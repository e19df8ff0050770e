/* SHA-1 (FIPS 180-4, 6.1), for the WebSocket opening handshake only: RFC 6455 4.2.2
 * derives Sec-WebSocket-Accept from the client's key with it. SHA-1 is broken for
 * collision resistance; the handshake needs none (the accept value only proves that the
 * server read the key), so nothing else may use this for security.
 *
 * Our own, because core/ may use libc only (tls/ alone includes wolfSSL). Pure: no
 * allocation, no state outside the caller's context. Any thread. */
#ifndef SLB_CORE_SHA1_H
#define SLB_CORE_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define SLB_SHA1_LEN 20u /* bytes of a digest */

/* A digest in progress. Owned by the caller (usually on its stack); holds no pointers. */
struct slb_sha1_ctx {
    uint32_t h[5];      /* the intermediate hash value */
    uint64_t len_bytes; /* message bytes taken so far */
    uint8_t block[64];  /* the partial block not yet compressed */
    size_t block_used;  /* bytes of it in use, < 64 */
};

void slb_sha1_init(struct slb_sha1_ctx *ctx);
/* Takes len more bytes of the message (data may be NULL when len is 0). */
void slb_sha1_update(struct slb_sha1_ctx *ctx, const void *data, size_t len);
/* Pads, writes the digest to out and leaves ctx spent (init it again to reuse it). */
void slb_sha1_final(struct slb_sha1_ctx *ctx, uint8_t out[SLB_SHA1_LEN]);

/* The digest of data[0, len) in one call. */
void slb_sha1(const void *data, size_t len, uint8_t out[SLB_SHA1_LEN]);

#endif
