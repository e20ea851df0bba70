/* notify.c - systemd's readiness protocol (sd_notify(3)) in a few lines of
 * our own rather than libsystemd: one datagram of newline-separated
 * assignments per state change, sent to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). Outside
 * systemd the variable is unset and every call does nothing.
 *
 * Called by the main thread only (start, the SIGHUP reload, the stop), so
 * nothing here is shared. A failure to notify is logged and otherwise
 * ignored: systemd then times the start out itself, which is its call to
 * make, not ours.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proxy/proxy.h"

/* systemd takes datagrams of up to PIPE_BUF (4096) octets; ours are a few
 * short lines. */
#define NOTIFY_MAX 512

static void notify_send(const char *msg, size_t len)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t alen;
	size_t plen;
	ssize_t sent;
	int fd;

	if (!path || !*path)
		return;
	plen = strlen(path);
	/* vsock:CID:PORT (systemd 254, for virtual machines) is not for us */
	if ((path[0] != '/' && path[0] != '@') || plen < 2 || plen >= sizeof(sun.sun_path)) {
		log_warn("notify", "NOTIFY_SOCKET=%s is neither a socket path nor an @name", path);
		return;
	}
	memcpy(sun.sun_path, path, plen);
	/* An abstract name is the bytes after a NUL, and its length is exact:
	 * no terminator may be counted, or it names another socket. */
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_warn("notify", "cannot notify systemd: socket: %s", strerror(errno));
		return;
	}
	do
		sent = sendto(fd, msg, len, MSG_NOSIGNAL, (struct sockaddr *)&sun, alen);
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		log_warn("notify", "cannot notify systemd at %s: %s", path, strerror(errno));
	close(fd);
}

/* state (one or more "KEY=value" lines) and a STATUS= line for
 * `systemctl status`. */
static void notify_state(const char *state, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void notify_state(const char *state, const char *fmt, ...)
{
	char status[NOTIFY_MAX / 2], msg[NOTIFY_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(status, sizeof(status), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	/* a newline in the status would start an assignment of its own */
	for (char *p = status; *p; p++)
		if (*p == '\n')
			*p = ' ';
	n = snprintf(msg, sizeof(msg), "%s\nSTATUS=%s", state, status);
	if (n > 0 && (size_t)n < sizeof(msg))
		notify_send(msg, (size_t)n);
}

void notify_ready(const struct config *cfg, const char *what)
{
	size_t naddr = 0;

	for (size_t i = 0; i < cfg->nlisteners; i++)
		naddr += cfg->listeners[i].nlisten;
	notify_state("READY=1", "%s: %zu listener%s on %zu address%s, %zu pool%s", what,
		     cfg->nlisteners, cfg->nlisteners == 1 ? "" : "s", naddr,
		     naddr == 1 ? "" : "es", cfg->npools, cfg->npools == 1 ? "" : "s");
}

void notify_reloading(void)
{
	struct timespec ts;
	char state[64];

	/* systemd 253's Type=notify-reload wants the time of the request, to
	 * tell this reload from an earlier one; older ones ignore it. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL +
			 (unsigned long long)ts.tv_nsec / 1000ULL);
	notify_state(state, "reloading the configuration");
}

void notify_stopping(uint32_t timeout_ms)
{
	notify_state("STOPPING=1", "stopping: relaying sessions have %u ms to finish", timeout_ms);
}
