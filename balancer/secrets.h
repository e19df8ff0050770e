/* --secret-file: the keys several sipslb instances (and one instance across restarts) share,
 * so each accepts the others' Via branches, Record-Route and Path tokens and TLS tickets.
 * One key per line, 64 hexadecimal digits (256 bits), newest first; '#' starts a comment.
 * The newest signs; every listed key verifies, so a key can be rotated in (listed first)
 * and out (dropped once nothing it signed is still held) without breaking a registration
 * or a dialog. The file holds secrets: refused when its group or others may read it. */
#ifndef SLB_BALANCER_SECRETS_H
#define SLB_BALANCER_SECRETS_H

#include <stddef.h>
#include <stdint.h>

#include "core/siphash.h"

#define SLB_SECRETS_MAX      8u /* keys in one file: as many as the TLS layer keeps */
#define SLB_SECRET_BYTES     32u
#define SLB_SECRETS_FILE_MAX 8192u

/* The keys of one file, newest first. Owned by the caller (plain data). */
struct slb_secrets {
    unsigned n;
    uint8_t key[SLB_SECRETS_MAX][SLB_SECRET_BYTES];
};

/* Parses the file's text (len bytes, need not end in a newline). Returns the number of keys
 * (>= 1), or -EINVAL with err naming the line and the fault: a line that is not 64 hex
 * digits, more than SLB_SECRETS_MAX keys, the same key twice, or no key at all. */
int slb_secrets_parse(const char *text, size_t len, struct slb_secrets *out, char *err,
                      size_t errlen);

/* Reads and parses path: -EPERM when the group or others have any access to it (one line
 * in err saying so and how to fix it), -errno when it cannot be read, else as
 * slb_secrets_parse. */
int slb_secrets_read(const char *path, struct slb_secrets *out, char *err, size_t errlen);

/* What one key becomes (HKDF-SHA256 with a label per use, so no two uses share bytes):
 * the MAC key of our tokens and a TLS ticket key (16-byte name, 32-byte AES key). */
int slb_secret_mac_key(const uint8_t secret[SLB_SECRET_BYTES], struct slb_siphash_key *out);
int slb_secret_ticket_key(const uint8_t secret[SLB_SECRET_BYTES], uint8_t out[48]);

#endif
