/* Types of the slice editor: an outgoing message as edits over the original bytes. */
#ifndef SLB_CORE_SIP_EDIT_T_H
#define SLB_CORE_SIP_EDIT_T_H

#include <stdint.h>

#define SLB_SIP_EDIT_MAX_OPS      16u  /* splices per message */
#define SLB_SIP_EDIT_SCRATCH      1024u /* bytes of inserted text per message */
#define SLB_SIP_EDIT_MAX_IOV      (2u * SLB_SIP_EDIT_MAX_OPS + 1u)

/* One splice: at off in the original, drop del bytes, then emit ins_len scratch bytes. */
struct slb_sip_edit_op {
    uint32_t off;
    uint32_t del;
    uint16_t ins_off;
    uint16_t ins_len;
};

/* An outgoing message being built. Owned by the caller (typically on its stack or in a
 * per-worker scratch area); borrows the original message, which must outlive it and the
 * iovecs made from it. Inserted text lives in scratch, so the iovecs also point there. */
struct slb_sip_edit {
    const char *base;
    uint32_t len;
    uint16_t n_ops;
    uint16_t scratch_used;
    struct slb_sip_edit_op ops[SLB_SIP_EDIT_MAX_OPS]; /* sorted by off */
    char scratch[SLB_SIP_EDIT_SCRATCH];
};

#endif
