/* libFuzzer target over the whole SIP message layer: frames the input as a stream, scans
 * each message, and applies every proxy edit to the valid ones, checking that the edited
 * output scans again and that the iovecs cover exactly the reported length. Run with
 * ASan+UBSan; any over-read, crash or failed check is a finding. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sip.h"
#include "core/sip_edit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct slb_sip_msg msg, again;
static struct slb_sip_header hdrs[SLB_SIP_MAX_HEADERS_DEFAULT], hdrs2[SLB_SIP_MAX_HEADERS_DEFAULT + 8];
static struct slb_sip_edit ed;
static char out[SLB_SIP_MAX_MSG_BYTES_DEFAULT + 4096];

static void edit_and_rescan(const char *m, size_t len, const struct slb_sip_limits *lim)
{
    slb_sip_edit_init(&ed, m, len);
    static const char via[] = "SIP/2.0/TLS lb.example.com:5061;branch=z9hG4bKslbfuzz";
    static const char rr[] = "<sips:lb.example.com:5061;lr>";
    if (msg.is_request) {
        if (msg.via_count >= SLB_SIP_MAX_VIAS)
            return; /* the proxy answers 483: one more Via would not scan back */
        slb_sip_edit_via_received(&ed, &msg, "192.0.2.1", 9, 5061);
        if (slb_sip_edit_max_forwards(&ed, &msg) == -ELOOP)
            return;
        slb_sip_edit_insert_header(&ed, &msg, SLB_HDR_RECORD_ROUTE, "Record-Route", rr,
                                   sizeof(rr) - 1);
        slb_sip_edit_push_via(&ed, &msg, via, sizeof(via) - 1);
        if (msg.first[SLB_HDR_ROUTE] >= 0)
            slb_sip_edit_pop_list_value(&ed, &msg, (uint32_t)msg.first[SLB_HDR_ROUTE]);
    } else if (slb_sip_edit_pop_via(&ed, &msg) < 0) {
        abort(); /* a scanned message always has a Via */
    }
    int n = slb_sip_edit_flatten(&ed, out, sizeof(out));
    if (n < 0)
        abort();
    if ((size_t)n != slb_sip_edit_len(&ed))
        abort();
    /* The edit must keep the message well-formed: it scans again, to the same length. Only
     * the top Via is validated by a scan, so a response whose next Via was absent or
     * malformed legitimately fails on it once ours is gone. */
    struct slb_sip_limits big = *lim;
    /* Our edits may lengthen a message, add header lines and lengthen the client's Via line
     * (received/rport): the rescan allows for that much more. */
    big.max_msg_bytes += 4096;
    big.max_headers += 8;
    big.max_line_bytes += 512;
    int rc = slb_sip_scan(out, (size_t)n, &big, &again, hdrs2, SLB_SIP_MAX_HEADERS_DEFAULT + 8);
    struct slb_sip_via next;
    bool next_via_ok = msg.via_count > 1 && slb_sip_via_parse(msg.vias[1].value, &next) == 0;
    bool via_fault = again.err == SLB_SIP_E_NO_VIA || again.err == SLB_SIP_E_VIA;
    bool popped_into_bad_via = !msg.is_request && !next_via_ok && via_fault;
    if (rc != 0 && !popped_into_bad_via) {
        fprintf(stderr, "edited message rejected: %s\n", slb_sip_err_reason(again.err));
        fwrite(out, 1, (size_t)n, stderr);
        abort();
    }
    if (rc == 0 && again.msg_len != (uint32_t)n)
        abort();
    if (rc == 0 && !slb_slice_eq(again.call_id, msg.call_id))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    const char *buf = (const char *)data;
    size_t at = 0;
    for (int frames = 0; at < size && frames < 1000; frames++) {
        struct slb_sip_frame fr = {0};
        slb_sip_frame(buf + at, size - at, &lim, &msg, hdrs, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
        if (fr.kind == SLB_FRAME_NEED_MORE || fr.kind == SLB_FRAME_FATAL)
            break;
        if (fr.frame_len == 0 || fr.frame_len > size - at)
            abort(); /* a frame that does not advance or overruns would hang or over-read */
        if (fr.kind == SLB_FRAME_MESSAGE) {
            for (uint32_t i = 0; i < msg.header_count; i++) {
                size_t next = slb_sip_list_next(msg.headers[i].value);
                struct slb_slice u = slb_sip_first_uri(msg.headers[i].value);
                if (next > msg.headers[i].value.len ||
                    (u.ptr && (u.ptr < msg.headers[i].value.ptr ||
                               u.ptr + u.len > msg.headers[i].value.ptr + msg.headers[i].value.len)))
                    abort();
            }
            edit_and_rescan(buf + at, fr.frame_len, &lim);
            for (unsigned i = 1; i < msg.via_count; i++) {
                struct slb_sip_via v;
                slb_sip_via_parse(msg.vias[i].value, &v);
            }
        }
        at += fr.frame_len;
    }
    return 0;
}
