/* The SIP message layer: framing a byte stream, scanning a message in place, and the
 * error classes both report. Pure functions: no I/O, no allocation, no clock. */
#ifndef SLB_CORE_SIP_H
#define SLB_CORE_SIP_H

#include <stddef.h>

#include "core/sip-t.h"

/* Limits with the compiled-in defaults. */
void slb_sip_limits_default(struct slb_sip_limits *lim);

/* Scans one message that starts at buf[0] (no leading CRLF) and whose headers are
 * complete within len bytes. Fills msg (every slice points into buf) and up to
 * max_headers entries of headers. Returns 0 on success, -EAGAIN when the empty line that
 * ends the headers is not within len bytes yet, -EBADMSG when msg->err says what is wrong
 * (fields found before the fault stay filled, so an error response can often be built).
 * msg->msg_len is header_len + Content-Length; the body may lie beyond len. */
int slb_sip_scan(const char *buf, size_t len, const struct slb_sip_limits *lim,
                 struct slb_sip_msg *msg, struct slb_sip_header *headers, size_t max_headers);

/* One framing step over a stream buffer (RFC 3261 18.3, RFC 5626 3.5.1): says what the
 * first bytes of buf are. For MESSAGE and BAD, msg holds the scan; for BAD and FATAL,
 * msg->err says why. fr->resume carries progress between calls on a growing buffer. */
void slb_sip_frame(const char *buf, size_t len, const struct slb_sip_limits *lim,
                   struct slb_sip_msg *msg, struct slb_sip_header *headers, size_t max_headers,
                   struct slb_sip_frame *fr);

/* Parses one Via value (as in msg->vias[i].value). Returns 0, or -EINVAL when the value
 * is not "SIP/2.0/transport sent-by *(;param)". */
int slb_sip_via_parse(struct slb_slice value, struct slb_sip_via *via);

/* Finds a ;name[=value] parameter in a parameter list that starts at a ';' (or is empty).
 * name is given in lowercase; the list's names match it in any case. Returns true and sets *value (len 0 when valueless). */
bool slb_sip_param_find(struct slb_slice params, const char *name, struct slb_slice *value);

/* In a header value holding a comma-separated list (Route, Record-Route, Path...), the
 * offset where the second element starts (after the comma and LWS), or value.len when
 * there is only one. Commas inside quotes or <> do not separate. */
size_t slb_sip_list_next(struct slb_slice value);

/* The URI inside the first name-addr of a value ("<sips:a;lr>, ..." gives "sips:a;lr"),
 * or the addr-spec up to the first comma. Returns an empty slice when there is none. */
struct slb_slice slb_sip_first_uri(struct slb_slice value);

/* The SIP status code a rejected message earns (400, 505, 513), a short reason phrase for
 * it (a static string), and whether the stream must be closed after answering. */
int slb_sip_err_status(enum slb_sip_err err);
const char *slb_sip_err_reason(enum slb_sip_err err);
bool slb_sip_err_closes(enum slb_sip_err err);

/* Method name to enum slb_sip_method (case-sensitive, RFC 3261 7.1); OTHER when unknown. */
enum slb_sip_method slb_sip_method_id(struct slb_slice name);

/* Slice helpers. */
bool slb_slice_eq(struct slb_slice a, struct slb_slice b);
bool slb_slice_eq_nocase(struct slb_slice a, const char *lit);

#endif
