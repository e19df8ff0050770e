/* Types and limits of the SIP message layer: framing, scanning and editing. */
#ifndef SLB_CORE_SIP_T_H
#define SLB_CORE_SIP_T_H

#include <stdbool.h>
#include <stdint.h>

#include "core/slice-t.h"

/* Defaults for the bounds; the proxy turns them into flags. */
#define SLB_SIP_MAX_MSG_BYTES_DEFAULT  65535u /* start line + headers + body */
#define SLB_SIP_MAX_LINE_BYTES_DEFAULT 8192u  /* one header line incl. folded lines */
#define SLB_SIP_MAX_HEADERS_DEFAULT    96u    /* header lines per message */
/* Via values kept per message: a request that started with Max-Forwards 70 (RFC 3261
 * 8.1.1.6) has at most 71 when it reaches us, and its response one more (ours). */
#define SLB_SIP_MAX_VIAS 72u

/* Bounds applied by the framer and the scanner. Owned by the caller; read only. */
struct slb_sip_limits {
    uint32_t max_msg_bytes;
    uint32_t max_line_bytes;
    uint32_t max_headers;
};

/* Why a message was rejected. Each maps to a SIP status (slb_sip_err_status) and says
 * whether the byte stream can go on after it (slb_sip_err_closes). */
enum slb_sip_err {
    SLB_SIP_E_NONE = 0,
    SLB_SIP_E_GARBAGE,                 /* no SIP start line where a message must begin: close */
    SLB_SIP_E_START_LINE,              /* malformed request or status line */
    SLB_SIP_E_VERSION,                 /* well-formed SIP version other than 2.0: 505 */
    SLB_SIP_E_CTL_BYTE,                /* NUL or control byte in the start line */
    SLB_SIP_E_CTL_NAME,                /* NUL or control byte where a header name must be: close */
    SLB_SIP_E_HEADER_SYNTAX,           /* header line without a name or a colon */
    SLB_SIP_E_LINE_TOO_LONG,           /* a start line or header line over max_line_bytes */
    SLB_SIP_E_TOO_MANY_HEADERS,        /* more header lines than max_headers */
    SLB_SIP_E_TOO_LARGE,               /* headers + body over max_msg_bytes */
    SLB_SIP_E_NO_CONTENT_LENGTH,       /* a stream message without Content-Length */
    SLB_SIP_E_CONTENT_LENGTH,          /* Content-Length not a plain non-negative number */
    SLB_SIP_E_CONTENT_LENGTH_CONFLICT, /* two Content-Length values that differ */
    SLB_SIP_E_NO_CALL_ID,
    SLB_SIP_E_DUP_CALL_ID, /* two Call-ID headers: routing would be ambiguous */
    SLB_SIP_E_NO_VIA,
    SLB_SIP_E_VIA, /* top Via unparsable, or more than SLB_SIP_MAX_VIAS values */
    SLB_SIP_E_NO_CSEQ,
    SLB_SIP_E_CSEQ, /* CSeq not "number method", or method differs from request */
    SLB_SIP_E_NO_FROM,
    SLB_SIP_E_NO_TO,
    SLB_SIP_E_MAX_FORWARDS, /* Max-Forwards not a number */
    SLB_SIP_E_CTL_VALUE,    /* NUL outside a quoted-pair, or a CR without LF, in a header */
    SLB_SIP_E_FROM_TO,      /* From or To with an unterminated quoted string */
    SLB_SIP_E__COUNT
};

/* Headers the proxy needs by name; everything else is SLB_HDR_OTHER and passes through. */
enum slb_sip_hdr_id {
    SLB_HDR_OTHER = 0,
    SLB_HDR_CALL_ID,        /* Call-ID, i */
    SLB_HDR_VIA,            /* Via, v */
    SLB_HDR_CSEQ,           /* CSeq */
    SLB_HDR_MAX_FORWARDS,   /* Max-Forwards */
    SLB_HDR_CONTENT_LENGTH, /* Content-Length, l */
    SLB_HDR_CONTENT_TYPE,   /* Content-Type, c */
    SLB_HDR_ROUTE,          /* Route */
    SLB_HDR_RECORD_ROUTE,   /* Record-Route */
    SLB_HDR_FROM,           /* From, f */
    SLB_HDR_TO,             /* To, t */
    SLB_HDR_CONTACT,        /* Contact, m */
    SLB_HDR_PATH,           /* Path */
    SLB_HDR_SUPPORTED,      /* Supported, k */
    SLB_HDR_REQUIRE,        /* Require */
    SLB_HDR_PROXY_REQUIRE,  /* Proxy-Require */
    SLB_HDR__COUNT
};

enum slb_sip_method {
    SLB_METHOD_OTHER = 0,
    SLB_METHOD_INVITE,
    SLB_METHOD_ACK,
    SLB_METHOD_BYE,
    SLB_METHOD_CANCEL,
    SLB_METHOD_OPTIONS,
    SLB_METHOD_REGISTER,
    SLB_METHOD_SUBSCRIBE,
    SLB_METHOD_NOTIFY,
    SLB_METHOD_REFER,
    SLB_METHOD_UPDATE,
    SLB_METHOD_PRACK,
    SLB_METHOD_INFO,
    SLB_METHOD_MESSAGE,
    SLB_METHOD_PUBLISH,
    SLB_METHOD__COUNT
};

/* One header line as found. Slices point into the scanned buffer. */
struct slb_sip_header {
    struct slb_slice name;  /* as written (long or compact form) */
    struct slb_slice value; /* LWS trimmed at both ends; folded lines stay inside */
    uint32_t line_off;      /* offset of the line from the start of the message */
    uint32_t line_len;      /* the whole line with its continuations and final line end */
    uint8_t id;             /* enum slb_sip_hdr_id */
};

/* One Via value (a via-parm). Comma-separated values of one line are separate entries. */
struct slb_sip_via_ref {
    struct slb_slice value; /* trimmed via-parm */
    uint16_t header;        /* index of its header line in the header array */
};

/* The fields of one parsed Via value (slb_sip_via_parse). Absent slices have ptr NULL. */
struct slb_sip_via {
    struct slb_slice protocol;  /* "SIP/2.0/TLS" as written (may hold LWS) */
    struct slb_slice transport; /* "TLS", "TCP", "UDP", ... */
    struct slb_slice host;      /* host, IPv4, or [IPv6] with brackets */
    uint32_t port;              /* 0 when absent */
    struct slb_slice branch;    /* value of ;branch */
    struct slb_slice received;  /* value of ;received */
    struct slb_slice rport;     /* value of ;rport (len 0 when valueless) */
    struct slb_slice params;    /* from the first ';' to the end of the value */
    bool has_rport;
};

/* What the scanner found in one message. Filled by slb_sip_scan / slb_sip_frame; every
 * slice borrows from the scanned buffer. The header array is the caller's. */
struct slb_sip_msg {
    uint32_t header_len; /* start line + headers + the empty line */
    uint32_t msg_len;    /* header_len + Content-Length: the bytes this message covers */
    bool is_request;
    uint8_t method_id;        /* enum slb_sip_method, requests only */
    uint16_t status;          /* responses only */
    struct slb_slice method;  /* requests */
    struct slb_slice ruri;    /* requests */
    struct slb_slice version; /* "SIP/2.0" */
    struct slb_slice reason;  /* responses */
    struct slb_slice call_id;
    uint32_t cseq;
    uint8_t cseq_method_id;
    struct slb_slice cseq_method;
    int32_t max_forwards;   /* -1 when absent */
    int64_t content_length; /* -1 when absent */
    struct slb_slice from_tag, to_tag;
    struct slb_sip_via top_via; /* parsed first Via value */
    uint16_t via_count;
    struct slb_sip_via_ref vias[SLB_SIP_MAX_VIAS];
    int16_t first[SLB_HDR__COUNT]; /* index of the first header of each id, -1 when absent */
    struct slb_sip_header *headers;
    uint32_t header_count;
    struct slb_slice body;
    enum slb_sip_err err;
};

/* What starts at the front of a stream buffer (slb_sip_frame). */
enum slb_sip_frame_kind {
    SLB_FRAME_NEED_MORE = 0, /* nothing complete yet */
    SLB_FRAME_MESSAGE,       /* one whole, valid message of frame_len bytes */
    SLB_FRAME_PING,          /* RFC 5626 3.5.1 double-CRLF keepalive: answer one CRLF */
    SLB_FRAME_SKIP,          /* CRLFs between messages (RFC 3261 7.5) or a pong: drop */
    SLB_FRAME_BAD,           /* one whole message of frame_len bytes that is invalid */
    SLB_FRAME_FATAL,         /* the stream cannot be framed any more: close it */
};

/* Result of one framing step. */
struct slb_sip_frame {
    enum slb_sip_frame_kind kind;
    uint32_t frame_len; /* bytes to consume for MESSAGE, PING, SKIP, BAD */
    /* Progress kept between calls on the same, growing buffer, so a message dribbled in
     * byte by byte costs linear time: bytes known to hold no header end, and the whole
     * length of a message whose headers are in but whose body is not. The caller zeroes
     * the struct when it starts a new buffer or consumes a frame. */
    uint32_t resume;
    uint32_t need;
};

#endif
