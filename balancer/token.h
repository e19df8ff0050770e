/* Tokens that let sipslb route with no per-transaction state: our Via branch names the
 * client connection a response must go back to, under a keyed MAC (RFC 3261 16.11 allows a
 * stateless proxy any branch scheme that is unique and stable for retransmissions). Pure. */
#ifndef SLB_BALANCER_TOKEN_H
#define SLB_BALANCER_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/sip-t.h"
#include "core/siphash.h"

/* "z9hG4bK" (RFC 3261 8.1.1.7) + "slb" + 16 hex (connection) + 8 hex (transaction) + 8 hex
 * (loop detection hash, RFC 3261 16.6 step 8) + 16 hex (MAC). */
#define SLB_BRANCH_PREFIX     "z9hG4bKslb"
#define SLB_BRANCH_PREFIX_LEN 10u
#define SLB_BRANCH_LEN        (SLB_BRANCH_PREFIX_LEN + 48u)

/* The transaction hash our branch carries: the same for a request, its retransmissions,
 * its CANCEL and the ACK for its non-2xx response, different for any other transaction
 * (RFC 3261 16.11). Hashes the client's top Via, Call-ID, From tag, CSeq number and
 * Request-URI, before our edits. */
uint32_t slb_tx_hash(const struct slb_siphash_key *key, const struct slb_sip_msg *msg);

/* The loop detection hash (RFC 3261 16.6 step 8) over what a loop leaves unchanged and a
 * spiral does not: Request-URI (retargeting), From and To tags, Call-ID, CSeq number and
 * the Route values (loose routing through us twice). */
uint32_t slb_loop_hash(const struct slb_siphash_key *key, const struct slb_sip_msg *msg);

/* The transaction hash's top bit in our branch says which side the named connection is
 * on: set when it is a backend's (the request went toward a client), clear when it is a
 * client's. A response must come from the other side (no client answers for another). */
#define SLB_BRANCH_TX_BACKEND_SIDE 0x80000000u

/* Writes the branch value (SLB_BRANCH_LEN bytes, no NUL) for connection conn_id,
 * transaction tx and loop hash into out. */
void slb_branch_make(char out[SLB_BRANCH_LEN], const struct slb_siphash_key *key,
                     uint64_t conn_id, uint32_t tx, uint32_t loop);

/* Reads a branch we made: false when it is not ours, malformed, or its MAC fails. loop may
 * be NULL. */
bool slb_branch_parse(struct slb_slice branch, const struct slb_siphash_key *key,
                      uint64_t *conn_id, uint32_t *tx, uint32_t *loop);

/* Our Via's send time, for the latency of backends' answers with no per-request state: a
 * Via parameter apart from the branch (retransmissions must keep their branch, RFC 3261
 * 16.11), ";slbt=" + 10 hex (microseconds, modulo 2^40) + 8 hex MAC over the branch and
 * the time, so no one else can skew the figures. */
#define SLB_SENT_PARAM     ";slbt="
#define SLB_SENT_PARAM_LEN 6u
#define SLB_SENT_VALUE_LEN 18u
#define SLB_SENT_MASK      ((UINT64_C(1) << 40) - 1)

void slb_sent_make(char out[SLB_SENT_VALUE_LEN], const struct slb_siphash_key *key,
                   struct slb_slice branch, uint64_t sent_us);

/* False when value is malformed or its MAC (with this branch) fails. *sent_us is modulo
 * 2^40. */
bool slb_sent_parse(struct slb_slice value, const struct slb_siphash_key *key,
                    struct slb_slice branch, uint64_t *sent_us);

/* The backend token our Record-Route carries (RFC 3261 16.6 step 4): the backend's name
 * hash and a MAC, 24 hex characters, so in-dialog requests return to that backend. */
#define SLB_BACKEND_TOKEN_LEN 24u

void slb_backend_token_make(char out[SLB_BACKEND_TOKEN_LEN], const struct slb_siphash_key *key,
                            uint32_t backend);

/* False when tok is malformed or its MAC fails (another instance's, or forged). */
bool slb_backend_token_parse(struct slb_slice tok, const struct slb_siphash_key *key,
                             uint32_t *backend);

/* The flow token (RFC 5626) our Record-Route and Path carry: the client connection id, the
 * boot id of the process that holds it, one hex digit of flags (SLB_FLOW_PLAIN: the client
 * is on a tcp:// listener) and a MAC, 41 hex characters, so a backend's request reaches that
 * very connection. The boot id lets a process that shares the key (--secret-file: another
 * instance, or this one after a restart) tell "a flow of ours that is gone" (430) from a
 * forgery (403), and never mistake another process's connection id for one of its own. */
#define SLB_FLOW_TOKEN_LEN 41u
#define SLB_FLOW_PLAIN     1u
#define SLB_FLOW_WS        2u /* the client is on a wss:// or ws:// listener (RFC 7118) */

void slb_flow_token_make(char out[SLB_FLOW_TOKEN_LEN], const struct slb_siphash_key *key,
                         uint64_t conn_id, uint32_t boot_id, unsigned flags);

/* False when tok is malformed or its MAC fails. boot_id and flags may be NULL. */
bool slb_flow_token_parse(struct slb_slice tok, const struct slb_siphash_key *key,
                          uint64_t *conn_id, uint32_t *boot_id, unsigned *flags);

#endif
