/* systemd's notify protocol through libsystemd's sd_notify (see notify.h): the loop's own
 * liveness is the watchdog's, so a wedged aosd is restarted by systemd. */
#include "notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "aos/log.h"

static int on, ready;
static uint64_t wd_every_ms, wd_last_ms;

void ntf_init(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    on = s && *s;
    uint64_t usec = 0;
    /* 0 leaves $WATCHDOG_USEC for nobody else: aosd's children must not see it */
    if (on && sd_watchdog_enabled(0, &usec) > 0 && usec)
        wd_every_ms = usec / 2000 ? usec / 2000 : 1;
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    if (on)
        aos_info("systemd: notify socket %s%s", s, wd_every_ms ? ", watchdog on" : "");
}

void ntf_tick(uint64_t now_ms, int all_running)
{
    if (!on)
        return;
    if (!ready && all_running) {
        ready = 1;
        sd_notify(0, "READY=1\nSTATUS=every server running");
    }
    if (wd_every_ms && now_ms - wd_last_ms >= wd_every_ms) {
        wd_last_ms = now_ms;
        sd_notify(0, "WATCHDOG=1");
    }
}

void ntf_stopping(const char *what)
{
    if (!on)
        return;
    char m[256];
    snprintf(m, sizeof m, "STOPPING=1\nSTATUS=stopping %s", what);
    sd_notify(0, m);
}
