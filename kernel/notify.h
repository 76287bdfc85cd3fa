/* aosd under systemd (Type=notify): READY=1 once every child runs, WATCHDOG=1 from the loop,
 * STOPPING=1 and a STATUS= line as it stops. Without $NOTIFY_SOCKET each call does nothing. */
#ifndef AOS_KERNEL_NOTIFY_H
#define AOS_KERNEL_NOTIFY_H

#include <stdint.h>

/* Reads $NOTIFY_SOCKET and $WATCHDOG_USEC (sd_watchdog_enabled) once, at start. */
void ntf_init(void);
/* From the loop: READY=1 the first time all_running is true; WATCHDOG=1 every half of
 * the watchdog's interval (the loop wakes at least every 100 ms). */
void ntf_tick(uint64_t now_ms, int all_running);
/* STOPPING=1 with what is being stopped, as systemctl status shows it. */
void ntf_stopping(const char *what);

#endif
