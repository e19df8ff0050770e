/* The PROXY protocol header (versions 1 and 2, HAProxy's doc/proxy-protocol.txt) that a
 * trusted layer-4 balancer in front of us sends before the TLS bytes, naming the client
 * it relays.
 *
 * Pure: bytes in, result out; no I/O, no allocation, no clock. The parser runs on the
 * connection's first bytes, straight out of a receive buffer that io/ owns and recycles,
 * and before anything is known about the peer; so it keeps nothing (the result is copied
 * into the caller's struct, no pointer into the buffer survives the call) and needs no
 * state between calls: the caller simply calls again on the grown buffer, and the header
 * is at most SLB_PROXY_HDR_MAX bytes, so re-reading it costs little and bounds what a
 * connection may hold before its header is complete. Any thread. */
#ifndef SLB_CORE_PROXY_PROTO_H
#define SLB_CORE_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header we take, of either version: 536 bytes is the smallest TCP segment
 * every host must accept (576 - 40), which the spec sizes both formats to fit; a v2
 * header whose declared length goes past it is refused. */
#define SLB_PROXY_HDR_MAX 536u
/* The longest v1 line, CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses). */
#define SLB_PROXY_HDR_V1_MAX 107u

/* What a PROXY header says. Owned by the caller (typically embedded in the connection's
 * record); filled only by a successful slb_proxy_hdr_parse, and holds no pointers. */
struct slb_proxy_hdr {
    bool local;                       /* v2 LOCAL or v1 UNKNOWN: keep the connection's own */
    struct sockaddr_storage src, dst; /* when !local: the client, and where it connected to */
    socklen_t src_len, dst_len;       /* sizeof(struct sockaddr_in) or sockaddr_in6 */
    uint16_t header_len;              /* bytes the header took (skip them before TLS) */
};

/* Parses the PROXY header at the start of buf[0, len). Accepts v2 with the LOCAL command
 * (any address block, skipped uninterpreted), or PROXY over TCP/IPv4 or TCP/IPv6 (TLVs
 * after the addresses must be well formed and are skipped); and v1 "PROXY TCP4 ...",
 * "PROXY TCP6 ..." or "PROXY UNKNOWN...", strictly as the spec writes it (single spaces,
 * no leading zeros in ports, addresses as inet_pton reads them for the family).
 *
 * Returns the header's length (> 0, also in h->header_len; bytes after it are not looked
 * at), 0 when buf is a valid beginning of a header that is not complete yet (call again
 * with more bytes), -EINVAL when buf cannot begin a header (decided on the first byte
 * that rules it out, so a client speaking TLS directly fails at once), or
 * -EPROTONOSUPPORT for a well-formed v2 PROXY header of a family or transport we do not
 * take (UNSPEC, UDP, UNIX). Never reads past buf[len - 1] nor past SLB_PROXY_HDR_MAX
 * bytes; with SLB_PROXY_HDR_MAX bytes present it never returns 0. *h is written only
 * when the return is > 0. */
int slb_proxy_hdr_parse(const void *buf, size_t len, struct slb_proxy_hdr *h);

#endif
