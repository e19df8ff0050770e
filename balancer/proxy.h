/* The proxy rules of RFC 3261 section 16 as sipslb applies them: what to do with a request
 * from a client, a response from a backend, and how to answer on our own. Pure functions
 * over scanned messages; the worker does the I/O. */
#ifndef SLB_BALANCER_PROXY_H
#define SLB_BALANCER_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/sip-t.h"
#include "core/sip_edit-t.h"
#include "core/siphash.h"

#define SLB_PROXY_KEYS_MAX 8u /* keys in force: the newest signs, all verify */

/* What the proxy knows about itself. Each worker holds its own copy, built at start-up;
 * only its keys change afterwards (slb_proxy_self_set_keys, on the worker's thread).
 *
 * Keys: with --secret-file every instance has the same ones, so each accepts the others'
 * Record-Route and Path tokens (and their flow tokens verify: RFC 5626's 430, not 403,
 * when the flow is another process's). Branches are different: their MAC key is also
 * bound to this process's boot id, because the connection id a branch names means a
 * connection of this process only; another process's branch is simply not ours. */
struct slb_proxy_self {
    char via_sent_by[128]; /* "host:port" we write into our Via (--advertise) */
    size_t via_sent_by_len;
    struct slb_siphash_key mac_key;    /* the newest key: signs tokens, keys our hashes */
    struct slb_siphash_key branch_key; /* mac_key bound to boot_id: signs our branches */
    struct slb_siphash_key old_keys[SLB_PROXY_KEYS_MAX - 1]; /* verify only, newest first */
    struct slb_siphash_key old_branch_keys[SLB_PROXY_KEYS_MAX - 1];
    unsigned n_old;
    uint32_t boot_id; /* random per process: flow tokens carry it */
    char tcp_sent_by[128]; /* "host:port" of the tcp:// side ("" when none) */
    size_t tcp_sent_by_len;
    char ws_sent_by[128]; /* "host:port" of the wss:// (or ws://) side ("" when none) */
    size_t ws_sent_by_len;
    bool ws_plain; /* that side is ws://: sip: URIs */
};

/* Installs keys (n >= 1, newest first; at most SLB_PROXY_KEYS_MAX used) and the boot id. */
void slb_proxy_self_set_keys(struct slb_proxy_self *self, const struct slb_siphash_key *keys,
                             unsigned n, uint32_t boot_id);

/* Whether we may answer this message ourselves: a request other than ACK (RFC 3261 17.1.1.3
 * ACK gets no response) whose Via, From, To, Call-ID and CSeq were found. */
bool slb_proxy_can_reply(const struct slb_sip_msg *msg);

/* Writes a response to request msg (whose bytes start at base) into out, per RFC 3261
 * 8.2.6 and 16.7: status line; every Via line and the first From, Call-ID and CSeq
 * copied; To copied,
 * with ;tag=<to_tag> added when it has none; extra (whole header lines, may be NULL);
 * Server and Content-Length: 0. Returns the length, or -ENOSPC. */
int slb_proxy_reply(char *out, size_t cap, const struct slb_sip_msg *msg, const char *base,
                    int status, const char *reason, const char *extra, const char *to_tag);

/* The edits for forwarding a request (RFC 3261 16.6): received/rport on the sender's Via
 * (RFC 3581), Max-Forwards decremented or added, and our Via on top whose branch names the
 * connection conn_id it came from and, under the MAC, whether that connection is on the
 * backend side (a backend's request toward a client) or the client side; with sent_us (not
 * 0) its send time in our Via's slbt parameter (token.h); *tx (when not NULL) gets the
 * transaction hash the branch carries. Returns 0, -ELOOP when Max-Forwards is 0 (answer
 * 483, 16.3 step 2), or -ENOSPC. */
int slb_proxy_request_edits(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                            const struct slb_proxy_self *self, const char *ip, size_t ip_len,
                            uint16_t port, uint64_t conn_id, bool backend_side,
                            uint64_t sent_us, uint32_t *tx);

/* For a response whose top Via is ours: the send time of its request when our Via has a
 * valid slbt parameter (microseconds modulo 2^40). */
bool slb_proxy_response_sent(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                             uint64_t *sent_us);

/* For a response: whether its top Via is ours with a valid MAC (RFC 3261 16.7 step 1:
 * otherwise it is not for us), the connection it names, the transaction hash (tx, may be
 * NULL) and which side that connection is on. */
bool slb_proxy_response_target(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                               uint64_t *conn_id, uint32_t *tx, bool *backend_side);

/* What the request's top Route says, when it is ours (RFC 3261 16.4: a Route naming this
 * proxy is removed before forwarding): the backend token (;slb=) and the flow token
 * (;flow=, RFC 5626), each with whether its MAC holds. */
struct slb_route_info {
    bool ours;        /* a valid slb= or flow= token: the value names us */
    bool has_backend; /* slb= with a valid MAC */
    uint32_t backend;
    bool has_flow; /* flow= present */
    bool flow_ok;  /* ... and its MAC holds (under any key in force) */
    bool flow_elsewhere; /* ... but it names another process's connection (flow gone: 430) */
    uint64_t flow; /* the client connection id it names */
    unsigned flow_flags; /* SLB_FLOW_PLAIN: that client is on a tcp:// listener */
    unsigned count;      /* leading Route values that are ours (double Record-Route: 2) */
};

void slb_proxy_route_info(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                          struct slb_route_info *ri);

/* A strict router before us (RFC 3261 16.4) put the URI we record-routed into the
 * Request-URI: true, with its tokens in ri, when the Request-URI is ours. */
bool slb_proxy_strict_routed(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                             struct slb_route_info *ri);

/* Compatibility: true with the backend token when the top Route is ours and names one. */
bool slb_proxy_our_route(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                         uint32_t *backend);

/* Whether the request already went through us unchanged (one of our Via values carries the
 * same loop hash, RFC 3261 16.6 step 8): a loop. A spiral (retargeted) is not. */
bool slb_proxy_is_loop(const struct slb_sip_msg *msg, const struct slb_proxy_self *self);

/* The checks of RFC 3261 16.3 a request must pass before we forward it: 416 for a scheme
 * other than sip, sips or tel; 480 with Warning 381 for sip: under sips_only (RFC 5630);
 * 420 with Unsupported for any Proxy-Require; 482 for a loop. Returns 0 or the status, with
 * the reason phrase and extra header lines (in extra) for the response. */
int slb_proxy_check_request(const struct slb_sip_msg *msg, const struct slb_proxy_self *self,
                            bool sips_only, const char **reason, char *extra, size_t extra_len);

/* Whether the method forms dialogs that must keep their backend: INVITE, SUBSCRIBE,
 * REFER, NOTIFY (RFC 3261 12, RFC 6665, RFC 3515). */
bool slb_proxy_dialog_forming(const struct slb_sip_msg *msg);

/* Inserts our Record-Route, <sips:ADVERTISE;lr;slb=BACKEND;flow=CLIENT>, above any existing
 * value (RFC 3261 16.6 step 4): in-dialog requests from the client side go back to that
 * backend, those from the backend side to that client connection (RFC 5626). For a client
 * on a tcp:// listener (flow_flags SLB_FLOW_PLAIN) it records twice (RFC 5658), a sips: URI
 * for the backend side and <sip:ADVERTISE_TCP;transport=tcp;lr;...> for the client side, in
 * the order the request travels: to_client says it goes toward the client. A client on a
 * WebSocket listener (SLB_FLOW_WS) is recorded twice the same way, its side's URI being
 * <sips:ADVERTISE_WS;transport=ws;lr;...> (RFC 7118 5.4 with RFC 5658). */
int slb_proxy_record_route(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                           const struct slb_proxy_self *self, uint32_t backend,
                           uint64_t client_conn, unsigned flow_flags, bool to_client);

/* Inserts our Path, <sips:ADVERTISE;lr;flow=CLIENT>, above any existing value (RFC 3327
 * 4.3), so a registrar routes requests for this registration back to this connection. */
int slb_proxy_path(struct slb_sip_edit *e, const struct slb_sip_msg *msg,
                   const struct slb_proxy_self *self, uint64_t client_conn, unsigned flow_flags);

#endif
