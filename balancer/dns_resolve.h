/* Backends from DNS the way RFC 3263 finds a SIPS server: _sips._tcp.NAME SRV records, each
 * target's A and AAAA addresses, or NAME's own addresses when there is no SRV record.
 * Synchronous with a bounded timeout: for a control thread (never a worker). */
#ifndef SLB_BALANCER_DNS_RESOLVE_H
#define SLB_BALANCER_DNS_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "balancer/config.h" /* SLB_MAX_BACKENDS, SLB_MAX_WEIGHT */

#define SLB_DNS_MAX_SERVERS 8u /* servers one slb_dns_resolve call may name */

/* One address to connect to. */
struct slb_dns_target {
    char host[256]; /* SRV target (or NAME itself for A/AAAA): for SNI and certificate checks */
    struct sockaddr_storage addr; /* one resolved address with the port set */
    socklen_t addr_len;
    uint16_t port;
    uint16_t priority; /* SRV priority (0 for A/AAAA) */
    uint16_t weight;   /* SRV weight (0..65535) as published; A/AAAA: 1 */
};

/* What one lookup found; owned by the caller. Targets are sorted by priority, then weight
 * (heaviest first), host, port and address: the same records give the same order whatever
 * order the server sent them in. */
struct slb_dns_result {
    unsigned n; /* targets found */
    struct slb_dns_target t[SLB_MAX_BACKENDS];
    uint32_t ttl_s; /* the smallest TTL among the records used (UINT32_MAX for an IP literal) */
    bool from_srv;
    unsigned skipped; /* SRV targets left out because they have no A or AAAA record */
};

/* Resolves NAME for SIPS over TLS (RFC 3263 4.2; no NAPTR step: the transport is known).
 * - NAME an IPv4 or IPv6 literal ("[::1]" too): that address with default_port, no query.
 * - Else _sips._tcp.NAME SRV. With SRV records, each target's A and AAAA records give one
 *   target per address, with port, priority and weight from its SRV record; a target with
 *   no address is left out and counted in out->skipped (err names it). A "." target
 *   (RFC 2782: service decidedly not available) gives 0 targets when it is the only one.
 * - Without SRV records (NXDOMAIN or NODATA): NAME's A and AAAA records with default_port.
 * DNS only: /etc/hosts is not read, and NAME is taken as fully qualified (no search list).
 * servers: NULL or n_servers 0 for the system resolver (/etc/resolv.conf); else up to
 * SLB_DNS_MAX_SERVERS "ADDR:PORT" strings ("127.0.0.1:5353", "[::1]:5353"; port 53 when left
 * out), borrowed for the call. timeout_ms bounds the whole call (every query, every retry).
 * Returns the number of targets (0 only for the "." target), or a negative errno with err
 * set to one line saying why: -ETIMEDOUT (no answer in time), -EIO (server failure or
 * refusal, bad answer), -ECONNREFUSED (no server listening), -ENOENT (the name does not exist,
 * has no SRV, A or AAAA record, or no SRV target has an address), -E2BIG (more addresses than
 * SLB_MAX_BACKENDS), -EINVAL (bad name or server string), -ENOMEM. A failure to resolve one
 * SRV target (timeout, server failure) fails the whole call: partial answers are not
 * returned. On success err holds "" or a note about skipped targets. out is written in all
 * cases (n 0 on failure). Not to be called from two threads at once (c-ares 1.18's
 * ares_library_init is not thread-safe). */
int slb_dns_resolve(const char *name, uint16_t default_port, const char *const *servers,
                    unsigned n_servers, unsigned timeout_ms, struct slb_dns_result *out, char *err,
                    size_t errlen);

/* Maglev weights (1..SLB_MAX_WEIGHT) for r's targets, written to weight[0..r->n-1].
 * From SRV: RFC 2782 weights are per target host, so a target's weight is shared among its
 * addresses (a dual-stack target with an A and an AAAA record gets half per address), then
 * scaled so that the largest is SLB_MAX_WEIGHT, none below 1; a target of weight 0 gets 1
 * (RFC 2782 gives it a very small chance), and when all are 0 all get 1. Weights only compare
 * within a priority group (slb_dns_best_priority). From A/AAAA: 1 each. Pure. */
void slb_dns_maglev_weights(const struct slb_dns_result *r, uint32_t *weight);

/* The lowest SRV priority value among the targets i with up[i] true (up has r->n entries);
 * UINT32_MAX when none is up. New dialogs go to that priority group only (RFC 2782). Pure. */
uint32_t slb_dns_best_priority(const struct slb_dns_result *r, const bool *up);

#endif
