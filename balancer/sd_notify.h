/* systemd's service notification protocol (sd_notify(3)), spoken directly: one datagram
 * to $NOTIFY_SOCKET per state (READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS=...).
 * Without NOTIFY_SOCKET (not started by systemd with Type=notify) everything is a no-op.
 * No libsystemd: the protocol is one sendto. Main thread. */
#ifndef SLB_BALANCER_SD_NOTIFY_H
#define SLB_BALANCER_SD_NOTIFY_H

#include <stdint.h>

/* Sends state (e.g. "READY=1\nSTATUS=relaying"). Returns 0 (also when there is no
 * NOTIFY_SOCKET) or a negative errno. */
int slb_sd_notify(const char *state);

/* The watchdog interval systemd asked for (WATCHDOG_USEC, for this process when
 * WATCHDOG_PID is set), in microseconds; 0 when there is no watchdog. */
uint64_t slb_sd_watchdog_usec(void);

#endif
